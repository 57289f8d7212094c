"""Gradual pruning of the GRU-64 classifier by first-order sensitivity.

  python train.py --config=configs/gru_taylor.py
  python train.py --config=configs/gru_taylor.py:smoke

Like `gru_prune.py`, but a weight's score is |w * dL/dw| (Molchanov et al.
2017), an exponential moving average over the training batches (decay 0.99),
instead of |w|.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); sparsity
(default 0.8).
"""

from configs import common
from configs import gru_prune


def get_config(arg=None):
  """`gru_prune` with score 'taylor'."""
  a = common.parse_arg(arg, cell='gru', smoke=False, sparsity=0.8)
  c = gru_prune.get_config(f'sparsity={a.sparsity}'
                           + (',smoke' if a.smoke else ''))
  c.name = 'gru_taylor'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.compression.prune.score = 'taylor'
  c.compression.prune.taylor_decay = 0.99  # 0.9 gave 0.970 at 80%, 0.99 0.981.
  return c
