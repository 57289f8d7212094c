"""A one-layer Elman RNN (hidden 20) with threshold pruning and 3-bit weights.

  python train.py --config=configs/seed_rnn_prune_quant.py
  python train.py --config=configs/seed_rnn_prune_quant.py:smoke   # seconds

JapaneseVowels speaker classification. The float tanh RNN-20 is trained first
(`:stage=float`, into <workdir>/init). This run then fine-tunes it with

* threshold pruning: at step 0 one global magnitude threshold over both
  recurrent-layer kernels removes every weight with |w| below it (the
  threshold is set by `sparsity`, the fraction of those weights it removes;
  `allocation='global'`, so each kernel loses what falls below the common
  threshold);
* 3-bit weights: every kernel (the head's too) is fake-quantized to the
  symmetric 3-bit grid {-3..3} * scale, one scale per column, with
  straight-through gradients.

The artifact stores the kept positions, the 3-bit codes of the kept weights
only, and the scales.

Args (`:key=value,...`): smoke; stage ('compress' | 'float'); sparsity
(default 0.5); bits (default 3).
"""

from compression import pruning
from compression import quantization
from compression.errors import InputError
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """The compression run (or the float RNN with `:stage=float`)."""
  a = common.parse_arg(arg, smoke=False, stage='compress', sparsity=0.5,
                       bits=3)
  c = gru_baseline.get_config('cell=rnn' + (',smoke' if a.smoke else ''))
  c.arg = arg or ''
  c.model.hidden = 8 if a.smoke else 20
  if a.stage == 'float':
    c.name = 'seed_rnn_float'
    if not a.smoke:
      c.train.steps = 600
    return c
  if a.stage != 'compress':
    raise InputError(f'config arg stage: {a.stage!r}; valid: compress, float')
  c.name = 'seed_rnn_prune_quant'
  c.init_config = 'seed_rnn_prune_quant.py:stage=float' + (
      ',smoke' if a.smoke else '')
  c.compression.methods = 'prune,quantize'
  c.compression.prune = pruning.config(
      score='magnitude', granularity='unstructured', allocation='global',
      schedule='oneshot', sparsity=a.sparsity, begin_step=0,
      regex=r'rnn/.*_kernel')
  c.compression.quantize = quantization.config(bits=a.bits, regex='.*kernel')
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 0
  if not a.smoke:
    c.train.steps = 400
  return c
