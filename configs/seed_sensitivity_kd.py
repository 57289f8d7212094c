"""First-order-sensitivity pruning to 50%, 8-bit weights and distillation at T=10.

  python train.py --config=configs/seed_sensitivity_kd.py
  python train.py --config=configs/seed_sensitivity_kd.py:smoke   # seconds

JapaneseVowels speaker classification with a GRU-64 student that starts from
the trained float baseline (`gru_baseline`, into <workdir>/init) and learns
from the same float baseline as its teacher (trained into <workdir>/teacher):
soft labels at temperature T = 10 (alpha = 0.3: 70% of the loss from the
teacher). While it distills, its recurrent-layer kernels are pruned to 50%
by first-order (Taylor) sensitivity |w * dL/dw| (Molchanov et al. 2017; an
exponential moving average over batches, gradual schedule) and every kernel
is fake-quantized to 8 bits per channel.

Args (`:key=value,...`): smoke; sparsity (default 0.5).
"""

from compression import pruning
from compression import quantization
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """Taylor pruning + int8 QAT of a GRU-64 distilled from the float GRU-64."""
  a = common.parse_arg(arg, smoke=False, sparsity=0.5)

  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'seed_sensitivity_kd'
  c.arg = arg or ''
  c.init_config = 'gru_baseline.py' + (':smoke' if a.smoke else '')
  c.teacher.config = 'gru_baseline.py' + (':smoke' if a.smoke else '')

  c.distill.alpha = 0.3
  c.distill.temperature = 10.0
  c.distill.scratch = False
  c.compression.methods = 'prune,quantize'
  c.compression.prune = pruning.config(
      score='taylor', taylor_decay=0.99, granularity='unstructured',
      allocation='uniform', schedule='gradual', sparsity=a.sparsity,
      begin_step=20, end_step=250, frequency=10, regex=r'rnn/.*_kernel')
  c.compression.quantize = quantization.config(bits=8, regex='.*kernel')
  c.optimizer.learning_rate = 3e-3
  c.train.steps = 400
  if a.smoke:
    common.make_smoke(c)
    c.compression.prune.begin_step = 1
    c.compression.prune.end_step = 3
    c.compression.prune.frequency = 1
  return c
