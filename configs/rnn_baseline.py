"""Elman (tanh) RNN speaker classifier on JapaneseVowels.

  python train.py --config=configs/rnn_baseline.py[:smoke]
"""

from configs import gru_baseline


def get_config(arg=None):
  """The GRU baseline with the cell switched to a plain tanh RNN."""
  a = f'cell=rnn,{arg}' if arg else 'cell=rnn'
  c = gru_baseline.get_config(a)
  c.arg = arg or ''
  return c
