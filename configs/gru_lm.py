"""Character-level GRU language model on the American Standard Version Bible.

  python train.py --config=configs/gru_lm.py[:smoke]

Metric: held-out bits per character (a unigram model scores about 4.4).
"""

from configs import common


def get_config(arg=None):
  """A GRU over 128-character windows, logits at every step."""
  a = common.parse_arg(arg, smoke=False)
  c = common.base_config()
  c.name = 'gru_lm'
  c.arg = arg or ''
  c.data.name = 'asv_bible'
  c.data.kwargs.seq_len = 128  # Characters per training window.
  c.data.kwargs.test_fraction = 0.05  # The last 5% of the text is held out.
  c.data.kwargs.max_test_sequences = 256  # Evenly spaced held-out windows.
  c.data.kwargs.max_train_chars = 0  # 0 = the whole training text.
  c.data.batch_size = 64
  c.data.eval_batch_size = 256
  c.model.cell = 'gru'
  c.model.hidden = 256
  c.model.embed_dim = 32
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 50
  c.train.steps = 1500
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  if a.smoke:
    common.make_smoke(c)
    c.data.kwargs.seq_len = 16
    c.data.kwargs.max_test_sequences = 16
    c.data.kwargs.max_train_chars = 20000
    c.data.eval_batch_size = 16
    c.data.batch_size = 8
  return c
