"""Gradual magnitude pruning of the GRU-64 speaker classifier.

  python train.py --config=configs/gru_prune.py               # 80% sparse
  python train.py --config=configs/gru_prune.py:sparsity=0.9
  python train.py --config=configs/gru_prune.py:smoke         # seconds

Fine-tunes the trained float baseline (`gru_baseline`, trained first into
<workdir>/init unless `--config.init_from` names a run) for 400 steps while
the Zhu & Gupta schedule raises the sparsity of every recurrent kernel from 0
to the target over steps 0..250, masks updated every 10 steps; the last 150
steps recover at the final sparsity. The head is kept dense (see
`compression.pruning.config`).

Args (`:key=value,...`): smoke; sparsity (default 0.8); scratch (prune while
training from a random init instead of fine-tuning the baseline); hidden
(default 64).
"""

from compression import pruning
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """Baseline recipe plus a gradual magnitude-pruning section."""
  a = common.parse_arg(arg, smoke=False, sparsity=0.8, scratch=False,
                       hidden=64)
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_prune'
  c.arg = arg or ''
  c.compression.methods = 'prune'
  c.compression.prune = pruning.config(
      score='magnitude', granularity='unstructured', allocation='uniform',
      schedule='gradual', sparsity=a.sparsity, begin_step=0, end_step=250,
      frequency=10)
  if a.scratch:
    c.compression.prune.begin_step = 50
    c.compression.prune.end_step = 300
  else:
    c.init_config = 'gru_baseline.py:smoke' if a.smoke else 'gru_baseline'
    c.optimizer.learning_rate = 3e-3
  if not a.smoke:
    c.model.hidden = a.hidden
  else:
    c.compression.prune.begin_step = 0
    c.compression.prune.end_step = 3
    c.compression.prune.frequency = 1
  return c
