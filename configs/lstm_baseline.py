"""LSTM speaker classifier on JapaneseVowels; the GRU baseline's recipe.

  python train.py --config=configs/lstm_baseline.py[:smoke]
"""

from configs import gru_baseline


def get_config(arg=None):
  """The GRU baseline with the cell switched to LSTM."""
  a = f'cell=lstm,{arg}' if arg else 'cell=lstm'
  c = gru_baseline.get_config(a)
  c.arg = arg or ''
  return c
