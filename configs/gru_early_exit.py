"""GRU speaker classifier that stops reading once it is confident (early exit).

  python train.py --config=configs/gru_early_exit.py            # float GRU-64
  python train.py --config=configs/gru_early_exit.py:bits=4     # 4-bit QAT
  python train.py --config=configs/gru_early_exit.py:sparsity=0.8
  python train.py --config=configs/gru_early_exit.py:distill    # GRU-16 student
  python train.py --config=configs/gru_early_exit.py:smoke      # seconds

The float recipe trains gru_baseline's model from scratch with the head on
every step and the per-step loss of `compression/early_exit.py` (weights
growing linearly with the step, added to the last state's loss), then
chooses the confidence threshold on the training split: the smallest whose
early-exit training accuracy keeps `target` (default 0.999) of the
full-read training accuracy and whose mean confidence at the exit step
reaches `target`. results.json gets `mean_steps_fraction`,
`early_exit_accuracy`, the accuracy-against-steps curves and the plot
`early_exit.png`; the artifact's header carries the threshold, so
`python eval.py --artifact=<workdir>/model.rnnc` reports the same fields.

The compressed variants fine-tune the float `gru_baseline` model (trained
first into <workdir>/init), as gru_qat.py and gru_prune.py do, for 400
steps with early exit on, so the per-step head learns while the weights
are compressed: `bits=B` quantization-aware training of every kernel,
`sparsity=S` gradual magnitude pruning. (Fine-tuning the float early-exit
model instead lost more: 4-bit 0.962-0.973 full-read test accuracy against
0.981.) `distill` trains a GRU-16 student from scratch on the soft labels
of the float early-exit model (the teacher, trained first into
<workdir>/teacher).

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru); bits (0 = float);
sparsity (0 = none); distill; target (the threshold's training-accuracy
target, 0 = use the fixed --config.early_exit.threshold); power (per-step
loss weight exponent, default 1).
"""

from compression import early_exit
from compression import pruning
from compression import quantization
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """gru_baseline with early exit (or its compressed fine-tuning)."""
  a = common.parse_arg(arg, smoke=False, cell='gru', bits=0, sparsity=0.0,
                       distill=False, target=0.999, power=1.0)
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_early_exit'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.early_exit = early_exit.config(enabled=True, target=a.target,
                                   power=a.power)
  float_recipe = ('gru_early_exit.py:'
                  + ','.join([f'cell={a.cell}'] + (['smoke'] if a.smoke
                                                  else [])))
  methods = []
  if a.bits or a.sparsity:
    c.init_config = 'gru_baseline.py:smoke' if a.smoke else 'gru_baseline'
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 0
  if a.sparsity:
    methods.append('prune')
    c.compression.prune = pruning.config(
        sparsity=a.sparsity, schedule='gradual', begin_step=0,
        end_step=c.train.steps // 2, frequency=10)
  if a.bits:
    methods.append('quantize')
    c.compression.quantize = quantization.config(bits=a.bits)
  c.compression.methods = ','.join(methods)
  if a.distill:
    c.model.hidden = 16
    c.teacher.config = float_recipe
    c.distill.alpha = 0.3
    c.distill.temperature = 4.0
    c.distill.scratch = False
    c.train.steps = 800
  if a.smoke:
    common.make_smoke(c)
    if a.distill:
      c.model.hidden = 4
  return c
