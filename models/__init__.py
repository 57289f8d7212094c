"""Flax linen recurrent layers and task heads; `make` builds one from a config.

Parameter paths ('/'-joined, as compression regexes see them). G is the number
of gates (GRU 3 `[r, z, n]`, LSTM 4 `[i, f, g, o]`, RNN 1), H = `hidden`,
F = input features, L = `layers`, i in 0..L-1:

  ==============================  ============  ===============================
  path                            shape         present
  ==============================  ============  ===============================
  rnn/layer_0/input_kernel        (F, G*H)      always (F = embed_dim for LM)
  rnn/layer_{i>0}/input_kernel    (H, G*H)      layers >= 2
  rnn/layer_{i}/recurrent_kernel  (H, G*H)      always
  rnn/layer_{i}/bias              (G*H,)        always (LSTM forget block = 1)
  rnn/layer_{i}/recurrent_bias    (H,)          GRU only
  attention/kernel                (H, 1)        classification, 'attention'
  head/kernel                     (H, C)        C = num_classes / horizon /
  head/bias                       (C,)            vocab_size
  embed/embedding                 (vocab, E)    language_model, E = embed_dim
  ==============================  ============  ===============================

Columns `[k*H:(k+1)*H]` of a G*H axis are gate k. Regex examples: every
recurrent matrix `r'.*/recurrent_kernel'`; every matrix of the recurrent layers
`r'rnn/.*_kernel'`; every matrix `r'.*kernel'`.

Usage::

  model = models.make(config.model, 'classification',
                      {'num_classes': 9, 'input_dim': 12})
  variables = model.init(jax.random.key(0), x, lengths)   # x (B, T, F)
  logits, state = model.apply(variables, x, lengths, mutable=['intermediates'])
  state['intermediates']['features']        # (B, H), what the head reads
  state['intermediates']['hidden_states']   # per layer (B, T, H)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from compression.errors import InputError
from models import cells
from models import sequence
from models.cells import CELLS, DTYPES, Dense, RecurrentLayer, RecurrentStack
from models.cells import matmul
from models.sequence import POOLINGS, Classifier, Forecaster, LanguageModel

TASKS = ('classification', 'forecasting', 'language_model')

__all__ = [
    'CELLS', 'DTYPES', 'POOLINGS', 'TASKS', 'Classifier', 'Dense', 'Forecaster',
    'LanguageModel', 'RecurrentLayer', 'RecurrentStack', 'cells', 'make',
    'matmul', 'sequence',
]


def _field(cfg: Any, name: str) -> Any:
  try:
    return getattr(cfg, name)
  except (AttributeError, KeyError):
    raise InputError(f'model.{name}: missing from the model config') from None


def _choice(cfg: Any, name: str, valid: tuple[str, ...]) -> str:
  value = _field(cfg, name)
  if value not in valid:
    raise InputError(f'model.{name}: unknown {name} {value!r}; '
                     f'valid: {", ".join(valid)}')
  return value


def _positive_int(value: Any, where: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise InputError(f'{where}: must be an integer >= 1, got {value!r}')
  return value


def make(model_cfg: Any, task: str, info: dict[str, Any], *,
         state_fn: cells.StateFn | None = None,
         cell_state_fn: cells.StateFn | None = None,
         gate_fn: cells.GateFn | None = None,
         input_fn: cells.InputFn | None = None,
         features_fn: cells.StateFn | None = None) -> nn.Module:
  """Builds the model for a task from the `model` config section.

  Args:
    model_cfg: has `cell` ('rnn'|'lstm'|'gru'), `hidden`, `layers`,
      `pooling` ('last'|'mean'|'attention'), `embed_dim`, `dtype`
      ('float32'|'bfloat16'|'float16'), `unroll` and `matmul_precision`
      (`cells.PRECISIONS`; absent means 'default').
    task: 'classification', 'forecasting' or 'language_model'.
    info: facts about the data: `num_classes` (classification), `horizon`
      (forecasting), `vocab_size` (language_model). Other keys are ignored.
    state_fn: applied to every new hidden state inside the scan (e.g.
      fake-quant of h_t); identity when None.
    cell_state_fn: LSTM only: applied to every new cell state.
    gate_fn: applies every sigmoid / tanh of the cells (`cells.GateFn`).
    input_fn: classification and forecasting: applied to the input
      (`cells.quantize_input`).
    features_fn: classification: applied to the pooled features.
    (`compression.model_hooks(config.compression)` gives these five.)

  Returns:
    An unbound Flax module; call it as `apply(variables, x, lengths)`.

  Raises:
    InputError: a config field, the task or an info entry is invalid.
  """
  cell = _choice(model_cfg, 'cell', CELLS)
  hidden = _positive_int(_field(model_cfg, 'hidden'), 'model.hidden')
  layers = _positive_int(_field(model_cfg, 'layers'), 'model.layers')
  dtype = _choice(model_cfg, 'dtype', DTYPES)
  unroll = _positive_int(_field(model_cfg, 'unroll'), 'model.unroll')
  # Checked for every task so a typo never waits for a config that uses it.
  pooling = _choice(model_cfg, 'pooling', POOLINGS)
  embed_dim = _positive_int(_field(model_cfg, 'embed_dim'), 'model.embed_dim')
  # Configs and artifact headers written before the option existed have no
  # `matmul_precision`: they ran with JAX's default.
  precision = (_choice(model_cfg, 'matmul_precision', cells.PRECISIONS)
               if getattr(model_cfg, 'matmul_precision', None) is not None
               else 'default')
  if task not in TASKS:
    raise InputError(f'task: unknown task {task!r}; valid: {", ".join(TASKS)}')
  common = dict(cell=cell, hidden=hidden, layers=layers, dtype=dtype,
                unroll=unroll, state_fn=state_fn, cell_state_fn=cell_state_fn,
                gate_fn=gate_fn, matmul_precision=precision)

  def info_int(key: str) -> int:
    if key not in info:
      raise InputError(f"data info: '{key}' is required for task {task!r}")
    return _positive_int(info[key], f"data info '{key}'")

  if task == 'classification':
    return Classifier(num_classes=info_int('num_classes'), pooling=pooling,
                      input_fn=input_fn, features_fn=features_fn, **common)
  if task == 'forecasting':
    return Forecaster(horizon=info_int('horizon'), input_fn=input_fn,
                      **common)
  return LanguageModel(vocab_size=info_int('vocab_size'), embed_dim=embed_dim,
                       **common)
