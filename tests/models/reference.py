"""Loop-over-time reference implementations of the three cells.

Written from the equations in `models/cells.py`, one sequence at a time with no
masking (the caller passes only the valid steps), with the array module as an
argument: numpy in float64 for values, jax.numpy for gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _sigmoid(xp: Any, v: Any) -> Any:
  return 1.0 / (1.0 + xp.exp(-v))


def run(cell: str, params: dict, x: Any, xp: Any = np) -> tuple[Any, Any]:
  """Runs one layer over one unpadded sequence.

  Args:
    cell: 'gru', 'lstm' or 'rnn'.
    params: the layer's parameters (names as in models/cells.py).
    x: (T, F) inputs.
    xp: array module (numpy or jax.numpy).

  Returns:
    (outputs (T, H), final hidden state (H,)); for LSTM the final state is
    (h, c).
  """
  w, u, b = params['input_kernel'], params['recurrent_kernel'], params['bias']
  hidden = u.shape[0]
  h = xp.zeros((hidden,), x.dtype)
  c = xp.zeros((hidden,), x.dtype)
  outputs = []
  for t in range(x.shape[0]):
    if cell == 'rnn':
      h = xp.tanh(x[t] @ w + b + h @ u)
    elif cell == 'lstm':
      a = x[t] @ w + b + h @ u
      i, f, g, o = (a[k * hidden:(k + 1) * hidden] for k in range(4))
      c = _sigmoid(xp, f) * c + _sigmoid(xp, i) * xp.tanh(g)
      h = _sigmoid(xp, o) * xp.tanh(c)
    elif cell == 'gru':
      a, r_h = x[t] @ w + b, h @ u
      r = _sigmoid(xp, a[:hidden] + r_h[:hidden])
      z = _sigmoid(xp, a[hidden:2 * hidden] + r_h[hidden:2 * hidden])
      n = xp.tanh(a[2 * hidden:]
                  + r * (r_h[2 * hidden:] + params['recurrent_bias']))
      h = (1.0 - z) * n + z * h
    else:
      raise ValueError(cell)
    outputs.append(h)
  final = (h, c) if cell == 'lstm' else h
  return xp.stack(outputs), final
