r"""Activation quantization: the integer model's activation grids, in training.

Weights are quantized by the weight methods (`quantize`, `kmeans`, ...);
this option quantizes what flows between them, so that a float model trained
(or evaluated) with it computes what the integer runtimes (`deploy.integer`,
the generated C library) compute, up to their lookup tables' rounding. It is
an option of the model, like `hidden_state`, because it acts at every step of
the scan; `compression.model_hooks(config.compression, train_split)` turns
the section into the model's hooks (`models.make(..., **hooks)`), the one
mechanism that also carries `hidden_state`.

Config: `config.compression.activations` (see `OPTIONS`); `bits = 0` is off.

Grids (fake quantization `(clip(round(v / s), qmin, qmax)) * s`, straight-
through gradients as `quantization.fake_quant`: 1 where the rounded code is
in range, 0 where it is clipped):

  ===================  =======================================  ==============
  activation           grid (the integer format)                hook
  ===================  =======================================  ==============
  input x              step s_x, codes +-(2^(b-1) - 1) (int8)   `input_fn`
  gate pre-activation  Q12: step 2^-12, codes +-32767           `gate_fn`
                       (the tables' input range, +-8)
  sigmoid / tanh out   Q15: step 2^-15, codes -32768..32768     `gate_fn`
  LSTM cell state c    Q4.11: step 2^-11, codes -32768..32767   `cell_state_fn`
  hidden state h       step 1 / (2^(b-1) - 1) (1/127 at 8 bits) `state_fn`
  head input           the h grid (pooled h: mean, attention)   `features_fn`
  ===================  =======================================  ==============

(b = `bits`). The layers after the first read h, already on its grid; the
logits stay float (the integer runtimes' int32 accumulators with a known
scale). A language model has no input quantizer: its input is an embedding
row, on the embedding's own grid when the embedding is quantized. What the
fake quantization does not copy: the tables' interpolation error (< 3e-4 on
a gate output), the integer tanh's saturation at |a| = 4 (tanh(4) is 7e-4
short of 1), and the integer rounding of products inside a step.

The input step s_x (`mode`):

* `static`: one step for the tensor. `scale='absmax'`: the largest |x| over
  the valid steps (t < length) of the training split, over 2^(b-1) - 1, so
  no training input clips (`calibrate_input`; at 8 bits exactly
  `deploy.integer.calibrate_input`); `'percentile'`: that percentile of |x|
  instead, clipping outliers; `'learned'`: LSQ (Esser et al. 2020) from the
  absmax step: the parameters get one extra leaf,
  `_activations/input_log_gain` (0 at the start; the step is
  `absmax step * exp(gain)`, so Adam changes it by relative amounts), whose
  gradient is LSQ's step gradient (scaled by 1 / sqrt(n * qmax), n the
  input values of one sequence) times the step. The calibration reads only
  the training inputs (not the model), so it is the same before training,
  after it and when the artifact is written.
* `dynamic`: a step per sequence and time step, `max_f |x_t| / (2^(b-1) -
  1)` (1 where x_t is all zero), computed at run time (the counterpart of
  dynamic int8 quantization: nothing calibrated); the straight-through
  gradient is 1 (nothing clips).

The artifact (`compression.export`) stores the result in its header key
`activations`: `{"bits", "mode", "input_scale", "fake_quant"}` with
`input_scale` the list `[s_x]` (static), or `[]` (dynamic; a language
model), and `fake_quant` true: the float model rebuilt from the file applies
the same grids (`--runtime=jax` gives the fake-quant metrics). Runs without
the option get `bits` 8, mode static, `s_x` from
`deploy.integer.calibrate_input` at write time and `fake_quant` false (the
float model runs as trained; only the integer runtimes quantize).

Example:
  >>> config.compression.activations = config(bits=8)   # static, absmax
  >>> hooks = compression.model_hooks(config.compression, dataset.train)
  >>> model = models.make(config.model, task, info, **hooks)
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from compression import core
from compression import quantization
from compression.core import Compressor
from compression.errors import InputError

MODES = ('dynamic', 'static')
SCALES = ('absmax', 'learned', 'percentile')
# The top-level parameter entry of a learned step (`models.cells` reads the
# same key: `LEARNED_ACTIVATIONS`).
LEARNED_KEY = '_activations'
GAIN = 'input_log_gain'

# Fixed-point formats of the integer runtimes: (fractional bits, qmin, qmax).
PREACT = (12, -32767, 32767)  # Gate pre-activations, Q12 (tables: +-8).
GATE = (15, -32768, 32768)  # Sigmoid / tanh outputs, Q15.
CELL = (11, -32768, 32767)  # LSTM cell state, Q4.11 in int16.

OPTIONS = core.Options(
    'compression.activations',
    core.Option('bits', 0, 'Bits of the input, the hidden state and the '
                "head's input, 2..8 (gates and LSTM c use the integer "
                "runtimes' 16-bit formats); 0 = off.",
                lambda b: None if b == 0 or 2 <= b <= 8 else
                f'{b} outside 2..8 (0 = off)'),
    core.Option('mode', 'static', 'static (one input step: scale) | dynamic '
                '(a step per sequence and time step, max|x_t| / qmax).',
                core.one_of(*MODES)),
    core.Option('scale', 'absmax', "mode='static': the input step: absmax "
                '(of the training inputs) | percentile | learned (LSQ from '
                'absmax).', core.one_of(*SCALES)),
    core.Option('percentile', 99.99, "scale='percentile': clip |x| at "
                'this percentile of the training inputs, (50, 100].',
                core.in_range(50, 100, lo_open=True)),
)
config = OPTIONS.config
parse = OPTIONS.parse


def section_of(cfg: Any) -> Any | None:
  """`cfg.activations` of a `config.compression`, or None when it has none.

  A config.json written before the option existed has no section: the
  option is off there.
  """
  try:
    return cfg['activations'] if 'activations' in cfg else None
  except TypeError:
    return None


def enabled(cfg: Any) -> bool:
  """Whether `config.compression` switches activation quantization on."""
  section = section_of(cfg)
  return section is not None and bool(parse(section).bits)


def learned(cfg: Any) -> bool:
  """Whether the input step is a trained parameter (static, 'learned')."""
  if not enabled(cfg):
    return False
  spec = parse(section_of(cfg))
  return spec.mode == 'static' and spec.scale == 'learned'


def qmax_of(bits: int) -> int:
  """The largest code of the symmetric b-bit grid: 2^(b-1) - 1."""
  return 2 ** (bits - 1) - 1


# ----------------------------------------------------------------------------
# Calibration


def calibrate_input(x_train: Any, lengths: Any = None, bits: int = 8,
                    method: str = 'absmax', percentile: float = 99.99
                    ) -> list[float]:
  """The static input step from training inputs, per tensor.

  Args:
    x_train: (N, T, F) float inputs, or (N, T) integer tokens.
    lengths: (N,) valid steps per sequence; None means all T.
    bits: the input's bits (qmax = 2^(bits-1) - 1).
    method: 'absmax' (or 'learned', which starts there) | 'percentile'.
    percentile: for 'percentile', of |x| over the valid steps.

  Returns:
    `[range / qmax]` (1.0 for an all-zero input), or `[]` for tokens. At 8
    bits with 'absmax' this is the integer runtimes' calibration
    (`deploy.integer.calibrate_input` calls it).
  """
  x = np.asarray(x_train)
  if not np.issubdtype(x.dtype, np.floating):
    return []
  if lengths is not None and x.ndim >= 2:
    valid = np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]
    x = x[valid]
  if not x.size:
    return [1.0]
  magnitude = np.abs(x)
  if method == 'percentile':
    top = float(np.percentile(magnitude, percentile))
  else:
    top = float(np.max(magnitude))
  return [top / qmax_of(bits) if top > 0 else 1.0]


def input_step(section: Any, train: Mapping[str, Any] | None) -> list[float]:
  """The calibrated static input step of a section from the train split.

  Args:
    section: `config.compression.activations`.
    train: the training split (`x`, `lengths`).

  Returns:
    `calibrate_input` of the split with the section's bits and method.

  Raises:
    InputError: no split to calibrate from.
  """
  spec = parse(section)
  if train is None:
    raise InputError('compression.activations: a static input scale is '
                     'calibrated from the training split; none was given')
  return calibrate_input(train['x'], train.get('lengths'), spec.bits,
                         spec.scale, spec.percentile)


@functools.lru_cache(maxsize=8)
def _cached_step(data_json: str, section_json: str, default: bool
                 ) -> tuple[float, ...]:
  """The input step of a dataset config, computed once per process."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  import data  # pylint: disable=g-import-not-at-top
  train = data.load(ml_collections.ConfigDict(json.loads(data_json))).train
  if default:
    return tuple(calibrate_input(train['x'], train.get('lengths')))
  return tuple(input_step(json.loads(section_json), train))


def _as_dict(section: Any) -> dict:
  return section.to_dict() if hasattr(section, 'to_dict') else dict(section)


# ----------------------------------------------------------------------------
# Fake quantization in the model


def _grid(step: float, qmin: int, qmax: int) -> Callable[[jax.Array],
                                                         jax.Array]:
  """v -> v on the fixed grid `step * [qmin, qmax]` (straight-through)."""
  step = np.float32(step)

  def fn(v: jax.Array) -> jax.Array:
    return quantization.fake_quant(v, jnp.asarray(step, v.dtype),
                                   jnp.zeros((), v.dtype), qmin, qmax, 1.0)
  return fn


def _fixed(fmt: tuple[int, int, int]) -> Callable[[jax.Array], jax.Array]:
  frac, qmin, qmax = fmt
  return _grid(2.0 ** -frac, qmin, qmax)


def state_grid(bits: int) -> Callable[[jax.Array], jax.Array]:
  """h -> h on the symmetric grid of step 1 / (2^(b-1) - 1) over [-1, 1]."""
  qmax = qmax_of(bits)
  return _grid(1.0 / qmax, -qmax, qmax)


def _dynamic_input(bits: int) -> Callable[[jax.Array, Any], jax.Array]:
  """x -> x on a grid per sequence and step: max_f |x_t| / qmax."""
  qmax = qmax_of(bits)
  inv = np.float32(1.0 / qmax)

  def fn(x: jax.Array, learned_params: Any) -> jax.Array:
    del learned_params
    top = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    step = jnp.where(top > 0, top * inv, 1.0).astype(x.dtype)
    q = quantization.quantize_codes(x, step, jnp.zeros((), x.dtype), -qmax,
                                    qmax)
    # The largest value maps to qmax: nothing clips, the gradient is 1.
    return x + jax.lax.stop_gradient(q * step - x)
  return fn


def _static_input(bits: int, step: float
                  ) -> Callable[[jax.Array, Any], jax.Array]:
  """x -> x on the grid of `step` (times exp(learned gain) when given)."""
  qmax = qmax_of(bits)
  base = np.float32(step)

  def fn(x: jax.Array, learned_params: Any) -> jax.Array:
    zero = jnp.zeros((), x.dtype)
    if learned_params is None or GAIN not in learned_params:
      return quantization.fake_quant(x, jnp.asarray(base, x.dtype), zero,
                                     -qmax, qmax, 1.0)
    s = learned_step(base, learned_params[GAIN]).astype(x.dtype)
    per_sequence = max(1, x.size // max(1, x.shape[0]))
    g = 1.0 / math.sqrt(per_sequence * qmax)
    return quantization.fake_quant(x, s, zero, -qmax, qmax, g)
  return fn


def learned_step(base: Any, gain: jax.Array) -> jax.Array:
  """The learned input step: the calibrated step times exp(gain)."""
  return jnp.asarray(np.float32(base)) * jnp.exp(gain)


def gate_fn(pre: jax.Array, nonlinearity: Callable[[jax.Array], jax.Array]
            ) -> jax.Array:
  """A gate on the integer formats: Q12 pre-activation in, Q15 out."""
  return _GATE_OUT(nonlinearity(_PREACT(pre)))


_PREACT = _fixed(PREACT)
_GATE_OUT = _fixed(GATE)


def hooks(section: Any, input_scale: Any = None) -> dict[str, Any]:
  """The `models.make` hooks of an activations section (empty when off).

  Args:
    section: `config.compression.activations`.
    input_scale: the static input step (a float, or a list of one); [] or
      None for token inputs (no input quantizer). Ignored when dynamic.

  Returns:
    {'state_fn', 'cell_state_fn', 'gate_fn', 'features_fn', 'input_fn'}.

  Raises:
    InputError: a bad section, or a static section without a step.
  """
  spec = parse(section)
  if not spec.bits:
    return {}
  state = state_grid(spec.bits)
  steps = ([] if input_scale is None else
           list(np.atleast_1d(np.asarray(input_scale, np.float64))))
  if spec.mode == 'dynamic':
    input_fn = _dynamic_input(spec.bits)
  elif not steps:
    input_fn = None  # Token input (a language model): nothing to quantize.
  else:
    if len(steps) != 1 or not (math.isfinite(steps[0]) and steps[0] > 0):
      raise InputError('compression.activations: a static input needs one '
                       f'finite positive step, got {input_scale!r}')
    input_fn = _static_input(spec.bits, steps[0])
  return dict(state_fn=state, cell_state_fn=_fixed(CELL), gate_fn=gate_fn,
              features_fn=state, input_fn=input_fn)


# ----------------------------------------------------------------------------
# The learned step: a parameter outside the model


def _split(tree: Any) -> tuple[Any, Any]:
  if isinstance(tree, dict) and LEARNED_KEY in tree:
    rest = dict(tree)
    return rest, rest.pop(LEARNED_KEY)
  return tree, None


def _join(tree: Any, extra: Any) -> Any:
  if extra is None:
    return tree
  out = dict(tree)
  out[LEARNED_KEY] = extra
  return out


def strip(tree: Any) -> Any:
  """A parameter tree without the learned activation entry."""
  return _split(tree)[0]


def with_learned_step(inner: Compressor) -> Compressor:
  """`inner` plus the learned input step's parameter (see the docstring).

  `init` adds `params['_activations'] = {'input_log_gain': 0.0}` (not for a
  language model, which has no input quantizer); `apply` hands the entry on
  to the dense tree, where the model's input quantizer reads it; the
  methods of `inner` never see it. The state is `inner`'s, so the chain's
  state and records are unchanged.

  Args:
    inner: the chained methods.

  Returns:
    The wrapped Compressor.
  """

  def init(params):
    params, state = inner.init(params)
    if isinstance(params, dict) and 'embed' in params:
      return params, state  # A language model: no input quantizer.
    return _join(params, {GAIN: jnp.zeros((), jnp.float32)}), state

  def apply(params, state):
    rest, extra = _split(params)
    return _join(inner.apply(rest, state), extra)

  def update(params, state, grads, step):
    rest, extra = _split(params)
    rest, state = inner.update(rest, state, strip(grads), step)
    return _join(rest, extra), state

  def penalty(params, state):
    return inner.penalty(strip(params), state)

  def export(params, state):
    return inner.export(strip(params), state)

  def calibrate(params, state, loss_fn):
    rest, extra = _split(params)
    return inner.calibrate(rest, state,
                           lambda dense: loss_fn(_join(dense, extra)))

  return Compressor(init, apply, update, penalty, export, calibrate)


# ----------------------------------------------------------------------------
# The artifact's header entry


def header(compression_cfg: Any, data_cfg: Any, task: str,
           params: Any) -> dict[str, Any]:
  """The artifact header's `activations` of a run (see the docstring).

  Args:
    compression_cfg: `config.compression`.
    data_cfg: `config.data` (its training split is calibrated, once per
      process).
    task: the dataset's task.
    params: the trained parameters (the learned gain, if any).

  Returns:
    {'bits', 'mode', 'input_scale', 'fake_quant'}.
  """
  section = section_of(compression_cfg)
  on = enabled(compression_cfg)
  spec = parse(section) if on else None
  out = {'bits': spec.bits if on else 8,
         'mode': spec.mode if on else 'static',
         'input_scale': [], 'fake_quant': on}
  if task == 'language_model' or (on and spec.mode == 'dynamic'):
    return out
  data_json = json.dumps(_as_dict(data_cfg), sort_keys=True)
  section_json = json.dumps(_as_dict(section) if on else {}, sort_keys=True)
  steps = list(_cached_step(data_json, section_json, not on))
  extra = _split(params)[1]
  if on and extra is not None and GAIN in extra:
    # The float32 step the trained model used (`_static_input`).
    steps = [float(np.asarray(learned_step(steps[0], extra[GAIN])))]
  out['input_scale'] = steps
  return out


def header_hooks(entry: Any) -> dict[str, Any]:
  """The model hooks of an artifact header's `activations` entry.

  Only an entry written by a run that trained with the option
  (`fake_quant` true) puts grids into the float model; otherwise the scale
  is for the integer runtimes alone and the model runs in float.

  Args:
    entry: `header.get('activations')` (None for older files).

  Returns:
    `hooks(...)`'s dict, or {}.
  """
  if not isinstance(entry, Mapping) or entry.get('fake_quant') is not True:
    return {}
  section = config(bits=entry['bits'], mode=entry['mode'])
  scales = entry.get('input_scale') or []
  # The integer runtimes use one step per tensor, the largest listed.
  return hooks(section, [max(scales)] if scales else None)
