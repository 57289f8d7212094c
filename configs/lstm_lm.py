"""Character-level LSTM language model; the GRU LM's recipe with an LSTM-220.

  python train.py --config=configs/lstm_lm.py[:smoke]
  python train.py --config=configs/lstm_lm.py:small      # LSTM-110, ~1 min

Args as `gru_lm.py` (the cell is fixed to lstm).
"""

from configs import gru_lm


def get_config(arg=None):
  """The GRU LM recipe with the cell switched to LSTM."""
  c = gru_lm.get_config(f'cell=lstm,{arg}' if arg else 'cell=lstm')
  c.arg = arg or ''
  return c
