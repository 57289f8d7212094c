"""Structured pruning: removes whole hidden units of the GRU-64 classifier.

  python train.py --config=configs/gru_structured.py           # 64 -> 32
  python train.py --config=configs/gru_structured.py:units=0.75
  python train.py --config=configs/gru_structured.py:smoke

Fine-tunes the float baseline while a group lasso (Wen et al. 2018) pushes
the group of every hidden unit (its columns in all three gates of the input
and recurrent kernels, its bias entries, its row of the recurrent kernel and
of the head) towards zero, and the gradual schedule removes the units of
smallest group L2 norm, reaching `units` of them at step 250.
`compression.pruning.shrink` then builds a GRU with `hidden` = the kept units
and the same outputs (`benchmarks/structured_speed.py` times both). The
kernels are also fake-quantized to `bits` (8: int8 codes per output channel)
while they fine-tune, so the artifact is the small model in integers, which
`eval.py --runtime=int|c` run (`bits=0` keeps float32 weights).

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); units
(fraction of hidden units removed, default 0.5); group_lasso (coefficient,
default 1e-3); bits (kernel codes, 2..8, or 0 for float32; default 8).
"""

from compression import pruning
from compression import quantization
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """Baseline recipe plus unit pruning with a group-lasso penalty."""
  a = common.parse_arg(arg, cell='gru', smoke=False, units=0.5,
                       group_lasso=1e-3, bits=8)
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_structured'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.init_config = 'gru_baseline.py:smoke' if a.smoke else 'gru_baseline'
  c.optimizer.learning_rate = 3e-3
  c.compression.methods = 'prune'
  c.compression.prune = pruning.config(
      score='magnitude', granularity='unit', reduce='l2',
      allocation='uniform', schedule='gradual', sparsity=a.units,
      begin_step=0, end_step=3 if a.smoke else 250,
      frequency=1 if a.smoke else 10, group_lasso=a.group_lasso)
  if a.bits:
    c.compression.methods = 'prune,quantize'
    c.compression.quantize = quantization.config(bits=a.bits)
  return c


def sweep(arg=None):
  """The grid of REPRODUCTION.md's Wen et al. (2018) ISS item.

  Per seed: the float baseline (stage 0), then unit pruning with group lasso
  removing 25, 50, 75 and 87.5% of the 64 hidden units.

  Args:
    arg: `smoke` (a tiny grid of smoke runs), `seeds=N` (default 3;
      1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  return common.finetune_grid(arg, 'units', (0.25, 0.5, 0.75, 0.875),
                              (0.5,), 'units', 'unit pruning (ISS)')
