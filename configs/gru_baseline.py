"""GRU speaker classifier on JapaneseVowels (the reference for every method).

  python train.py --config=configs/gru_baseline.py
  python train.py --config=configs/gru_baseline.py:smoke   # seconds, for tests

Args (`:key=value,...`): smoke (tiny run), cell (rnn | lstm | gru).
"""

from configs import common


def get_config(arg=None):
  """One GRU layer, last-state pooling, Adam with cosine decay."""
  a = common.parse_arg(arg, smoke=False, cell='gru')
  c = common.base_config()
  c.name = 'gru_baseline' if a.cell == 'gru' else f'{a.cell}_baseline'
  c.arg = arg or ''
  c.data.name = 'japanese_vowels'
  c.data.kwargs.normalize = True  # Per-channel standardization (train stats).
  c.data.batch_size = 32
  c.model.cell = a.cell
  c.model.hidden = 64
  c.model.pooling = 'last'
  c.optimizer.learning_rate = 1e-2
  c.train.steps = 400
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  if a.smoke:
    common.make_smoke(c)
  return c
