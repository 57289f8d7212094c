"""L1-driven pruning of the GRU-64 classifier: shrink, then cut.

  python train.py --config=configs/gru_l1.py
  python train.py --config=configs/gru_l1.py:smoke

Fine-tunes the float baseline with an L1 penalty `l1 * sum |w|` on the
recurrent kernels, which drives most weights towards zero; at step 200 one
magnitude step removes the smallest `sparsity` of each kernel, and the last
200 steps recover with the penalty still on.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); sparsity
(default 0.8); l1 (coefficient, default 1e-4).
"""

from configs import common
from configs import gru_prune


def get_config(arg=None):
  """`gru_prune` with score 'l1' and a one-shot cut at step 200."""
  a = common.parse_arg(arg, cell='gru', smoke=False, sparsity=0.8, l1=1e-4)
  c = gru_prune.get_config(f'sparsity={a.sparsity}'
                           + (',smoke' if a.smoke else ''))
  c.name = 'gru_l1'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.compression.prune.score = 'l1'
  c.compression.prune.l1 = a.l1
  c.compression.prune.schedule = 'oneshot'
  c.compression.prune.begin_step = 2 if a.smoke else 200
  return c
