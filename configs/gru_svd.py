"""Low-rank (truncated SVD) GRU-64 speaker classifier, fine-tuned.

  python train.py --config=configs/gru_svd.py                # quarter rank
  python train.py --config=configs/gru_svd.py:rank=8
  python train.py --config=configs/gru_svd.py:energy=0.9
  python train.py --config=configs/gru_svd.py:layers=2,shared,scratch
  python train.py --config=configs/gru_svd.py:smoke          # seconds

Starts from the trained float baseline (`gru_baseline`, trained first into
<workdir>/init unless `--config.init_from` names a run), replaces every
matrix that reads a hidden state (the recurrent kernels, and the input kernels
of layers >= 1) by SVD factors U V, and fine-tunes the factors for 200 steps
(the usual recipe for SVD compression: a short fine-tune recovers what the
truncation lost). The model multiplies through the factors, (h U) V.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); rank
(fixed rank, 0 = unused); energy (smallest rank keeping this share of sum s^2,
0 = unused); fraction (share of full rank, used when rank and energy are 0;
default 0.25); shared (one U for layer l's recurrent and layer l+1's input
kernel, Prabhavalkar et al. 2016); layers (default 1; more needs scratch, the
baseline has one layer); scratch (factor a random init and train 400 steps
instead of fine-tuning). Under smoke (hidden 8) a fixed rank is capped at 2.
"""

from compression import lowrank
from compression.errors import InputError
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """Baseline recipe plus a low-rank section, fine-tuning the baseline."""
  a = common.parse_arg(arg, cell='gru', smoke=False, rank=0, energy=0.0,
                       fraction=0.25, shared=False, layers=1, scratch=False)
  if a.layers != 1 and not a.scratch:
    raise InputError(f'config arg layers: {a.layers} needs scratch (the '
                     'gru_baseline model it fine-tunes has 1 layer)')
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_svd'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.model.layers = a.layers
  c.compression.methods = 'lowrank'
  c.compression.lowrank = lowrank.config(
      rank=min(a.rank, 2) if a.smoke else a.rank, energy=a.energy,
      rank_fraction=0.0 if (a.rank or a.energy) else a.fraction,
      shared=a.shared)
  if not a.scratch:
    common.finetune(c, a.smoke, 3e-3, warmup_steps=10)
  if a.smoke:
    common.make_smoke(c)
  return c


def sweep(arg=None):
  """The grid of REPRODUCTION.md's Prabhavalkar et al. (2016) item.

  Per seed: the float baseline (stage 0), then SVD of its recurrent kernel
  at ranks 1, 2, 4, 8, 16 and 32 (full rank is 64), each fine-tuned.

  Args:
    arg: `smoke` (a tiny grid of smoke runs), `seeds=N` (default 3;
      1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  return common.finetune_grid(arg, 'rank', (1, 2, 4, 8, 16, 32), (1, 2),
                              'rank', 'low rank (SVD)')
