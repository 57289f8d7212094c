"""Magnitude-threshold pruning of the GRU-64 classifier, then fine-tuning.

  python train.py --config=configs/gru_threshold.py              # 0.3 max|w|
  python train.py --config=configs/gru_threshold.py:factor=0.5
  python train.py --config=configs/gru_threshold.py:smoke

Every recurrent-layer kernel of the trained float baseline (`gru_baseline`,
trained first into <workdir>/init unless `--config.init_from` names a run)
loses the weights with |w| < factor * max|w| (`compression.threshold`); the
kept weights are fine-tuned for 200 steps. `results.json` reports the
sparsity reached as `threshold_sparsity`.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); factor
(default 0.3); threshold (absolute theta; 0 = use factor).
"""

from compression import threshold
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """The baseline, threshold-pruned and fine-tuned."""
  a = common.parse_arg(arg, cell='gru', smoke=False, factor=0.3,
                       threshold=0.0)
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_threshold'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.init_config = 'gru_baseline.py:smoke' if a.smoke else 'gru_baseline'
  c.compression.methods = 'threshold'
  c.compression.threshold = threshold.config(factor=a.factor,
                                             threshold=a.threshold)
  if not a.smoke:
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 0
    c.train.steps = 200
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
  return c
