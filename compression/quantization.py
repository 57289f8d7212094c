r"""Fake quantization with straight-through gradients, PTQ calibration, and the
quantized recurrent state.

Integer grids (b = `bits`, 2..8):

  =============  ===================================  ==========================
  scheme         integer codes q                      dequantized value
  =============  ===================================  ==========================
  symmetric      [-(2^(b-1) - 1), 2^(b-1) - 1]        q * scale
  asymmetric     [0, 2^b - 1], integer zero point z   (q - z) * scale
  =============  ===================================  ==========================

The symmetric grid is *restricted* (it drops -2^(b-1)), so it is symmetric
about an exactly representable zero; 2 bits give the ternary grid {-1, 0, 1}.
Quantization is `q = clip(round(w / scale) + z, qmin, qmax)` with round half to
even (`jnp.round`). The asymmetric range is widened to include 0 before the
scale is computed, so zero (a pruned weight, a padded state) is exact on every
grid.

Granularity: `per_tensor` (one scale) or `per_channel` (one scale per output
unit: the last axis, i.e. per column of an (in, G*H) kernel, which is one
scale per unit of each gate). 1-D parameters always get one scale.

Scale (`scale` field), recomputed from the float master weights at every step
during quantization-aware training (QAT):

* `absmax`: range [-max|w|, max|w|].
* `minmax`: range [min w, max w] (symmetric: max(|min|, |max|), i.e. absmax).
* `percentile`: the `percentile`-th percentile of |w| (symmetric) or the
  (100 - p, p) percentiles of w (asymmetric), clipping outliers.
* `learned`: LSQ (Esser et al. 2020, "Learned Step Size Quantization"): the
  step is a trainable leaf, initialised from the absmax/minmax scale of the
  initial weights. LSQ's gradient of the step is used: (q - z) - w / scale
  where w is represented (its rounded code in range) and (q - z) where it is
  clipped, times LSQ's gradient scale 1 / sqrt(n * qmax) (n = weights
  sharing the step). The leaf holds the *natural log* of the step
  (`log_step`, so the step stays positive and Adam's roughly fixed-size
  updates change it by a relative amount, as TQT, Jain et al. 2019, learns
  log thresholds); the chain rule adds a factor `scale`. The asymmetric zero
  point is fixed at initialisation.

Learned steps live in the parameter tree under one extra top-level key:
`init` returns `params['_quantize'][<kernel path>]['log_step']` (for example
`_quantize/rnn/layer_0/input_kernel/log_step`), so the optimizer trains them
and checkpoints hold them; every other leaf is unchanged. `apply` removes the
`'_quantize'` entry, so the model sees its own tree. Regexes ending in
`kernel` do not match these paths.

Gradients: the rounding is straight-through; the gradient of a weight is 1
wherever its rounded code `round(w / scale) + z` lies in [qmin, qmax] (the
weight is represented, not clipped) and 0 where the code is clipped (see
`fake_quant`). The test is on the rounded code, not on the continuous value
`w / scale + z`: an asymmetric grid's rounded zero point shifts its ends by
up to half a step inside [min w, max w], and float rounding can put the
absmax weight a hair above qmax, and those extreme weights, which the grid
represents, would otherwise get no gradient and never train. (PyTorch's
fake-quantize uses the same convention.)

State (per quantized parameter, a nested dict mirroring its path):
`{'clip': factor}` (the range computed by the scale method is multiplied by
this factor; 1 except after PTQ calibration) and, for learned asymmetric
scales, `{'zero_point': z}`.

Post-training quantization (`calibrate`): tensor by tensor, pick among the
candidate clipping factors {1 (the scale method's own range), the ratio of the
99.99th, 99.9th and 99th percentile of |w| to its maximum, the per-channel
factor that minimises the squared quantization error} the one whose whole-model
loss `loss_fn` is lowest, with the factors already chosen for earlier tensors
in place. Learned steps are not calibrated (they train).

`export` gives, per quantized parameter (the encoding `decode` reads):

  ============  ==============================================================
  field         encoding
  ============  ==============================================================
  codes         uint8: the unsigned codes u, row-major, as a little-endian
                bitstream of `bits` bits each (`pack_bits`); u = q for
                asymmetric, u = q + 2^(b-1) - 1 in [0, 2^b - 2] for symmetric
  bits          int, 2..8
  shape         int32 array, the parameter's shape
  scheme        str, 'symmetric' | 'asymmetric'
  scale         float32, shape () (per tensor) or (shape[-1],) (per channel)
  zero_point    uint8, like scale; asymmetric only (symmetric: 2^(b-1) - 1
                implied)
  ============  ==============================================================

and `decode(entry) = (u - zero_point) * scale` in float32 is bit-identical to
what `apply` gives for that parameter.

The recurrent state: `state_quantizers(config.compression.hidden_state)`
returns functions the layers apply to each new h_t (and LSTM c_t) inside the
scan. h_t of all three cells lies in (-1, 1) (a tanh, a convex combination of
tanh values, or o * tanh(c)), so its symmetric grid is fixed at scale
1 / (2^(b-1) - 1) with no calibration; c_t uses [-cell_clip, cell_clip].

Example:
  >>> section = config(bits=4)
  >>> comp = make(section)
  >>> params, state = comp.init(params)
  >>> dense = comp.apply(params, state)      # kernels on the 4-bit grid
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from compression import core
from compression import records
from compression.core import Compressor
from compression.errors import InputError

Params = Any
State = Any
Keys = tuple[str, ...]

SCHEMES = ('asymmetric', 'symmetric')
GRANULARITIES = ('per_channel', 'per_tensor')
SCALE_METHODS = ('absmax', 'learned', 'minmax', 'percentile')
LEARNED_KEY = '_quantize'
# Percentiles of |w| tried by `calibrate`, besides absmax and the MSE optimum.
CALIBRATION_PERCENTILES = (99.99, 99.9, 99.0)
# Clipping factors searched for the per-channel MSE-optimal scale.
MSE_FACTORS = tuple(np.linspace(0.2, 1.0, 33).tolist())


# ----------------------------------------------------------------------------
# Config


def check_bits(value: Any, field: str, allow_off: bool = False) -> int:
  """Validates a bit width: an int in 2..8 (or 0 = off where allowed).

  Args:
    value: the config value.
    field: the config field named in the error.
    allow_off: accept 0 as "off".

  Returns:
    The bit width as an int.

  Raises:
    InputError: not an integer in range.
  """
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise InputError(f'{field}: expected an integer in 2..8, got {value!r}')
  value = int(value)
  if allow_off and value == 0:
    return 0
  if not 2 <= value <= 8:
    off = ' (0 = off)' if allow_off else ''
    raise InputError(f'{field}: {value} outside 2..8{off}')
  return value


OPTIONS = core.Options(
    'compression.quantize',
    core.Option('bits', 8, 'Bits per weight code, 2..8.',
                lambda b: None if 2 <= b <= 8 else f'{b} outside 2..8'),
    core.Option('regex', '.*kernel', 'Parameters to quantize (re.fullmatch on '
                'the path).', lambda r: None if r else
                f'expected a non-empty regex, got {r!r}'),
    core.Option('scheme', 'symmetric', 'symmetric (zero point 0) | '
                'asymmetric.', core.one_of(*SCHEMES)),
    core.Option('granularity', 'per_channel', 'per_channel (per output unit) '
                '| per_tensor.', core.one_of(*GRANULARITIES)),
    core.Option('scale', 'absmax', 'absmax | minmax | percentile | learned '
                '(LSQ).', core.one_of(*SCALE_METHODS)),
    core.Option('percentile', 99.9, "scale='percentile': clip at this "
                'percentile, (50, 100].', core.in_range(50, 100, lo_open=True)),
)
config = OPTIONS.config
parse = OPTIONS.parse


def symmetric(spec: Any) -> bool:
  """Whether a parsed section's grid is symmetric (zero point fixed)."""
  return spec.scheme == 'symmetric'


def per_channel(spec: Any) -> bool:
  """Whether a parsed section has one scale per output channel."""
  return spec.granularity == 'per_channel'


# ----------------------------------------------------------------------------
# The quantizer


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
  """The integer code range [qmin, qmax] of a grid (see the module table).

  Args:
    bits: bit width, 2..8.
    symmetric: the restricted symmetric grid, else the unsigned one.

  Returns:
    (qmin, qmax).
  """
  if symmetric:
    top = 2 ** (bits - 1) - 1
    return -top, top
  return 0, 2 ** bits - 1


def _reduce_axes(x: jax.Array, per_channel: bool) -> tuple[int, ...]:
  """Axes reduced to one statistic per scale: all but the last, or all."""
  if per_channel and x.ndim >= 2:
    return tuple(range(x.ndim - 1))
  return tuple(range(x.ndim))


def value_range(x: jax.Array, method: str, per_channel: bool,
                percentile: float = 99.9, symmetric: bool = True
                ) -> tuple[jax.Array, jax.Array]:
  """The float range [lo, hi] the grid should cover, per scale.

  Args:
    x: the tensor.
    method: 'absmax' | 'minmax' | 'percentile' ('learned' starts from
      'absmax' for symmetric and 'minmax' for asymmetric grids).
    per_channel: one range per last-axis index (else one for the tensor).
    percentile: for 'percentile'.
    symmetric: percentiles of |x| (True) or of x at both tails.

  Returns:
    (lo, hi), each of shape () or (x.shape[-1],).
  """
  axes = _reduce_axes(x, per_channel)
  if method == 'learned':
    method = 'absmax' if symmetric else 'minmax'
  if method == 'absmax':
    m = jnp.max(jnp.abs(x), axis=axes)
    return -m, m
  if method == 'minmax':
    return jnp.min(x, axis=axes), jnp.max(x, axis=axes)
  if method == 'percentile':
    if symmetric:
      m = jnp.percentile(jnp.abs(x), percentile, axis=axes)
      return -m, m
    return (jnp.percentile(x, 100.0 - percentile, axis=axes),
            jnp.percentile(x, percentile, axis=axes))
  raise InputError(f'compression.quantize.scale: unknown {method!r}; valid: '
                   + ', '.join(SCALE_METHODS))


def _reciprocal(n: int) -> np.float32:
  """1/n rounded once to float32: a constant factor jit and eager share."""
  return np.float32(1.0 / n)


def scale_and_zero_point(lo: jax.Array, hi: jax.Array, bits: int,
                         symmetric: bool) -> tuple[jax.Array, jax.Array]:
  """The step and integer zero point mapping [lo, hi] onto the grid.

  Args:
    lo, hi: the range (broadcastable arrays).
    bits: bit width.
    symmetric: restricted symmetric grid (zero point 0).

  Returns:
    (scale, zero_point) as float32; scale > 0 (1 where the range is empty,
    e.g. an all-zero channel, so the codes are all zero point).
  """
  qmin, qmax = int_range(bits, symmetric)
  if symmetric:
    width = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    scale = width * _reciprocal(qmax)
    zero = jnp.zeros_like(scale)
  else:
    # Widen to include 0 so that zero is exactly representable.
    lo, hi = jnp.minimum(lo, 0.0), jnp.maximum(hi, 0.0)
    scale = (hi - lo) * _reciprocal(qmax - qmin)
    safe = jnp.where(scale > 0, scale, 1.0)
    zero = jnp.clip(jnp.round(-lo * (1.0 / safe)), qmin, qmax)
  scale = jnp.where(scale > 0, scale, 1.0).astype(jnp.float32)
  return scale, zero.astype(jnp.float32)


def quantize_codes(x: jax.Array, scale: jax.Array, zero_point: jax.Array,
                   qmin: int, qmax: int) -> jax.Array:
  """The integer codes `clip(round(x / scale) + z, qmin, qmax)` (as float32).

  Round half to even. Used by both the forward pass and `export`, so the two
  agree bit for bit. It multiplies by the float32 reciprocal of the step
  rather than dividing: under jit XLA turns a division by a broadcast scalar
  into that product anyway, and op-by-op execution would not, so writing the
  product keeps jitted and eager codes identical.
  """
  return jnp.clip(jnp.round(x * (1.0 / scale)) + zero_point, qmin, qmax)


def _sum_to(t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums a broadcast product back to a scale's shape: () or (last axis,)."""
  lead = t.ndim - len(shape)
  return jnp.sum(t, axis=tuple(range(lead))).reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def fake_quant(x: jax.Array, scale: jax.Array, zero_point: jax.Array,
               qmin: int, qmax: int, grad_scale: float = 1.0) -> jax.Array:
  """Quantize-dequantize `(clip(round(x / s) + z, qmin, qmax) - z) * s`.

  Gradients (straight-through estimator, LSQ for the step):

  * d/dx = 1 where the rounded code `round(x / s) + z` lies in [qmin, qmax]
    (x is represented on the grid), 0 where it is clipped. So every value
    within half a step of the grid's ends trains, including the extreme
    weights an asymmetric grid's rounded zero point leaves just outside
    `[(qmin - z) s, (qmax - z) s]` (`represented`). A value exactly half a
    step beyond an end rounds half to even, like the forward pass.
  * d/ds = ((q - z) - x / s) where represented, (q - z) where clipped, times
    `grad_scale`, summed over the elements sharing the step.
  * d/dz = 0 (the zero point is an integer, not trained).

  Args:
    x: the tensor.
    scale: positive step, shape () or (x.shape[-1],).
    zero_point: integer-valued float32, shaped like `scale`.
    qmin, qmax: the integer range (`int_range`).
    grad_scale: multiplies the step's gradient (LSQ: 1/sqrt(n * qmax)).

  Returns:
    The dequantized tensor, on the grid `scale * (integers - z)`.
  """
  q = quantize_codes(x, scale, zero_point, qmin, qmax)
  return ((q - zero_point) * scale).astype(x.dtype)


def _fake_quant_fwd(x, scale, zero_point, qmin, qmax, grad_scale):
  q = quantize_codes(x, scale, zero_point, qmin, qmax)
  out = ((q - zero_point) * scale).astype(x.dtype)
  return out, (x, scale, zero_point, q)


def represented(x: jax.Array, scale: jax.Array, zero_point: jax.Array,
                qmin: int, qmax: int) -> jax.Array:
  """Where the rounded code `round(x / s) + z` lies in [qmin, qmax] (bool).

  The straight-through mask of `fake_quant`: the values the grid represents
  (not clipped). Computed exactly as `quantize_codes` rounds, so a value
  whose stored code is an end of the grid but not clipped to it is inside.
  """
  code = jnp.round(x * (1.0 / scale)) + zero_point
  return (code >= qmin) & (code <= qmax)


def _fake_quant_bwd(qmin, qmax, grad_scale, res, g):
  x, scale, zero_point, q = res
  v = x * (1.0 / scale)
  inside = represented(x, scale, zero_point, qmin, qmax)
  gx = jnp.where(inside, g, 0.0).astype(x.dtype)
  ds = (q - zero_point) - jnp.where(inside, v, 0.0)
  gs = _sum_to(g * ds * grad_scale, jnp.shape(scale)).astype(scale.dtype)
  return gx, gs, jnp.zeros_like(zero_point)


fake_quant.defvjp(_fake_quant_fwd, _fake_quant_bwd)


# ----------------------------------------------------------------------------
# The Compressor


def _grid_params(spec: Any, w: jax.Array, record: dict,
                 log_step: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """(scale, zero_point) of one tensor under `spec`, its record and step."""
  if spec.scale == 'learned':
    scale = jnp.exp(log_step)
    zero = record.get('zero_point', jnp.zeros_like(scale))
    return scale, zero
  lo, hi = value_range(jax.lax.stop_gradient(w), spec.scale, per_channel(spec),
                       spec.percentile, symmetric(spec))
  clip = record['clip']
  return scale_and_zero_point(lo * clip, hi * clip, spec.bits, symmetric(spec))


def _quantize_tree(spec: Any, params: Params, state: State,
                   fn: Callable[[jax.Array, jax.Array, jax.Array, jax.Array,
                                 float], Any]) -> list[tuple[Keys, Any]]:
  """Runs `fn(w, scale, zero, n_per_scale)` on every quantized tensor."""
  learned = params.get(LEARNED_KEY, {}) if isinstance(params, dict) else {}
  out = []
  for keys, record in core.tagged(state, 'clip'):
    w = core.get_path(params, keys)
    log_step = (core.get_path(learned, keys)['log_step']
                if spec.scale == 'learned' else None)
    scale, zero = _grid_params(spec, w, record, log_step)
    n = w.size // max(1, int(np.prod(jnp.shape(scale))))
    out.append((keys, fn(w, scale, zero, n)))
  return out


def _strip(params: Params) -> Params:
  if isinstance(params, dict) and LEARNED_KEY in params:
    params = dict(params)
    del params[LEARNED_KEY]
  return params


def make(section: Any) -> Compressor:
  """The 'quantize' method: fake-quant of the kernels `section.regex` picks.

  Args:
    section: `config.compression.quantize` (see `config`).

  Returns:
    A Compressor (QAT in `apply`; PTQ via `calibrate`; codes via `export`).

  Raises:
    InputError: a bad field (when called) or a regex matching nothing (in
      `init`).
  """
  spec = parse(section)
  qmin, qmax = int_range(spec.bits, symmetric(spec))

  def init(params):
    paths = core.selected_keys(params, spec.regex, 'compression.quantize.regex')
    state_items, learned_items = [], []
    for keys in paths:
      w = jnp.asarray(core.get_path(params, keys))
      if not jnp.issubdtype(w.dtype, jnp.floating):
        raise InputError(f'compression.quantize.regex: {"/".join(keys)} is '
                         f'not a float parameter ({w.dtype})')
      # Shaped like the scale, so calibrated factors keep the state's shapes
      # (checkpoints restore into the structure `init` builds).
      lo, _ = value_range(w, 'absmax', per_channel(spec))
      record = {'clip': jnp.ones(jnp.shape(lo), jnp.float32)}
      if spec.scale == 'learned':
        lo, hi = value_range(w, 'learned', per_channel(spec), spec.percentile,
                             symmetric(spec))
        scale, zero = scale_and_zero_point(lo, hi, spec.bits, symmetric(spec))
        learned_items.append((keys, {'log_step': jnp.log(scale)}))
        if not symmetric(spec):
          record['zero_point'] = zero
      state_items.append((keys, record))
    if learned_items:
      params = dict(params)
      params[LEARNED_KEY] = core.nest(learned_items)
    return params, core.nest(state_items)

  def apply(params, state):
    def quant(w, scale, zero, n):
      g = 1.0 / math.sqrt(n * qmax) if spec.scale == 'learned' else 1.0
      if spec.scale != 'learned':
        scale = jax.lax.stop_gradient(scale)
      return fake_quant(w, scale, zero, qmin, qmax, g)

    out = _strip(params)
    for keys, w in _quantize_tree(spec, params, state, quant):
      out = core.set_path(out, keys, w)
    return out

  def export(params, state):
    def encode(w, scale, zero, n):
      del n
      q = np.asarray(quantize_codes(w, scale, zero, qmin, qmax))
      return records.Record(codes=records.Codes(
          u=(q - qmin).astype(np.uint8),  # Unsigned: u = q - qmin.
          bits=spec.bits, scale=np.asarray(scale, np.float32),
          zero_point=(None if symmetric(spec)
                      else np.asarray(zero).astype(np.uint8))))

    return {'/'.join(keys): e
            for keys, e in _quantize_tree(spec, params, state, encode)}

  def calibrate(params, state, loss_fn):
    if spec.scale == 'learned':
      return state  # Learned steps train; nothing to choose here.
    for keys, _ in list(core.tagged(state, 'clip')):
      w = jnp.asarray(core.get_path(params, keys))
      best = None
      for factor in candidate_clips(w, spec):
        trial = core.set_path(state, keys + ('clip',), factor)
        loss = float(loss_fn(apply(params, trial)))
        if best is None or loss < best[0]:
          best = (loss, factor)
      state = core.set_path(state, keys + ('clip',), best[1])
    return state

  return Compressor(
      init=init,
      apply=apply,
      export=export,
      calibrate=calibrate)


def candidate_clips(w: jax.Array, spec: Any) -> list[jax.Array]:
  """The clipping factors PTQ tries for one tensor (see the module docstring).

  Args:
    w: the float tensor.
    spec: the quantize spec (bits, scheme, granularity, scale method).

  Returns:
    Factors shaped like the tensor's scale: 1 (the scale method's own range),
    the percentile ratios, and the per-scale MSE-optimal factor.
  """
  qmin, qmax = int_range(spec.bits, symmetric(spec))
  axes = _reduce_axes(w, per_channel(spec))
  lo, hi = value_range(w, spec.scale, per_channel(spec), spec.percentile,
                       symmetric(spec))
  top = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
  safe_top = jnp.where(top > 0, top, 1.0)
  out = [jnp.ones_like(top, jnp.float32)]
  for p in CALIBRATION_PERCENTILES:
    ratio = jnp.percentile(jnp.abs(w), p, axis=axes) / safe_top
    out.append(jnp.clip(ratio, 1e-3, 1.0).astype(jnp.float32))
  errors = []
  for f in MSE_FACTORS:
    s, z = scale_and_zero_point(lo * f, hi * f, spec.bits, symmetric(spec))
    err = jnp.square(fake_quant(w, s, z, qmin, qmax) - w)
    errors.append(jnp.sum(err, axis=axes))
  best = jnp.argmin(jnp.stack(errors), axis=0)
  out.append(jnp.asarray(MSE_FACTORS, jnp.float32)[best])
  return out


def state_quantizers(section: Any) -> tuple[
    Callable[[jax.Array], jax.Array] | None,
    Callable[[jax.Array], jax.Array] | None]:
  """Fake-quant functions for h_t and the LSTM c_t (straight-through).

  Args:
    section: `config.compression.hidden_state` with `bits` (h_t, 0 = off),
      `cell_bits` (c_t, 0 = off) and `cell_clip` (> 0).

  Returns:
    (state_fn, cell_state_fn), each None when off. h_t maps onto the
    symmetric grid of step 1 / (2^(b-1) - 1) over [-1, 1]; c_t onto the one
    of step cell_clip / (2^(b-1) - 1) over [-cell_clip, cell_clip], with zero
    gradient where c_t is clipped.

  Raises:
    InputError: bits outside 2..8 (and not 0), or cell_clip <= 0.
  """
  where = 'compression.hidden_state'
  bits = check_bits(core.field(section, 'bits', where), f'{where}.bits', True)
  cell_bits = check_bits(core.field(section, 'cell_bits', where),
                         f'{where}.cell_bits', True)
  clip = core.field(section, 'cell_clip', where)
  if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not (
      math.isfinite(clip) and clip > 0):
    raise InputError(f'{where}.cell_clip: must be a finite float > 0, '
                     f'got {clip!r}')

  def grid_fn(b: int, width: float) -> Callable[[jax.Array], jax.Array]:
    qmin, qmax = int_range(b, True)
    scale = np.float32(width / qmax)

    def fn(h: jax.Array) -> jax.Array:
      return fake_quant(h, jnp.asarray(scale, h.dtype),
                        jnp.zeros((), h.dtype), qmin, qmax, 1.0)
    return fn

  state_fn = grid_fn(bits, 1.0) if bits else None
  cell_fn = grid_fn(cell_bits, float(clip)) if cell_bits else None
  return state_fn, cell_fn


METHODS = {'quantize': make}
