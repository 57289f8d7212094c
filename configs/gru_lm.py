"""Character-level GRU language model on the American Standard Version Bible.

  python train.py --config=configs/gru_lm.py[:smoke]
  python train.py --config=configs/gru_lm.py:small       # GRU-128, ~1 min
  python train.py --config=configs/lstm_lm.py            # the LSTM twin

Metric: held-out bits per character (a unigram model scores about 4.4).
The recipe in README.md is the full one (GRU-256, 1.87 bits/char).

Args (`:key=value,...`): smoke; cell (gru | lstm | rnn, default gru);
hidden (0 = the cell's width below); small (the reproduction scale of
REPRODUCTION.md part II: 64-character windows, batches of 32, 1500 steps).
Default widths give the cells about the same recurrent parameters: GRU-256
and LSTM-220 (3 x 256 x 288 = 221k vs 4 x 220 x 252 = 222k weights), or
under `small` GRU-128 and LSTM-110 (61k vs 62k).
"""

from configs import common

# Hidden width per cell: (full, small), about equal recurrent weights.
WIDTHS = {'gru': (256, 128), 'lstm': (220, 110), 'rnn': (454, 232)}


def get_config(arg=None):
  """A recurrent LM over character windows, logits at every step."""
  a = common.parse_arg(arg, smoke=False, cell='gru', hidden=0, small=False)
  c = common.base_config()
  c.name = 'gru_lm'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.data.name = 'asv_bible'
  c.data.kwargs.seq_len = 128  # Characters per training window.
  c.data.kwargs.test_fraction = 0.05  # The last 5% of the text is held out.
  c.data.kwargs.max_test_sequences = 256  # Evenly spaced held-out windows.
  c.data.kwargs.max_train_chars = 0  # 0 = the whole training text.
  c.data.batch_size = 64
  c.data.eval_batch_size = 256
  c.model.hidden = a.hidden or WIDTHS[a.cell][1 if a.small else 0]
  c.model.embed_dim = 32
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 50
  c.train.steps = 1500
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  if a.small:
    # A quarter of the characters per step of the full recipe, so that the
    # 25 compressed variants per cell and seed of the reproduction fit.
    c.data.kwargs.seq_len = 64
    c.data.batch_size = 32
    # The small LMs train best at a higher peak rate (held-out bits/char
    # after 1500 steps, GRU-128 / LSTM-110: 3e-3 2.223 / 2.572, 6e-3
    # 2.077 / 2.380, 1e-2 2.035 / 2.246).
    c.optimizer.learning_rate = 1e-2
    c.train.eval_every = 0
    c.train.checkpoint_every = 750
  if a.smoke:
    common.make_smoke(c)
    c.data.kwargs.seq_len = 16
    c.data.kwargs.max_test_sequences = 16
    c.data.kwargs.max_train_chars = 20000
    c.data.eval_batch_size = 16
    c.data.batch_size = 8
  return c
