r"""The integer reference: a quantized artifact computed in integers only.

This module is the specification of integer inference. `lower(artifact)`
turns an artifact's records into a `Program` (integer weights, integer
requantization multipliers and shifts, integer biases), and `forward`
runs it with numpy integer arithmetic. The generated C library
(`deploy.c`) computes exactly the same integers (tests compare them bit for
bit); `run` is the `--runtime=int` of `eval.py`.

Weights
-------
Every kernel (`input_kernel`, `recurrent_kernel`, `attention/kernel`,
`head/kernel`, the language model's `embed/embedding`) must be stored with
integer codes: `records[path].codes` (`value = (u - zero_point) * scale`,
2..8 bits, per tensor or per output channel, symmetric zero point
2^(bits-1) - 1 when none is stored) or a codebook (`value =
codebook[index]`), either possibly sparse (`positions`: the kept positions;
the others are exactly 0). The integer weight is `q = u - zero_point` with
the record's scale per output column. A codebook's float centroids are
quantized once, per tensor, to int8: `scale = max|centroid| / 127`, `q =
round(centroid / scale)` (this is the only place lowering changes a
stored value, by at most half an 8-bit step of the largest centroid). A
kernel stored as float32 values (dense, or only its kept positions) has no
integer form and is refused with one line naming it; so are low-rank
factors, DCT coefficients and copies of other leaves.

Biases may be stored in any form (float32, codes); their decoded values are
quantized when lowered: gate biases to the gates' pre-activation grid (Q12,
below), the head bias to the output grid (Q16). (The pre-activation is
itself rounded to Q12, so a finer bias grid, such as the accumulator's, would
buy nothing; on Q12 the biases also stay independent of the input scale,
and fit in int16 for |b| < 8.)

Activations
-----------
The header key `activations` (`{"bits": 8, "mode": "static" | "dynamic",
"input_scale": [...]}`, written with the artifact) gives the input grid and
the width of the activation codes; below, `H = 2^(bits-1) - 1` (127 at the
usual 8 bits; `bits` may be 2..8):

* static: `x_q = clip(round(x * float32(1 / s_x)), -H, H)` (round half to
  even, in float32, as the fake quantizer computes it) with the per-tensor
  scale `s_x`. A per-feature list of scales is reduced to its largest (the
  integer runtimes quantize the input per tensor). `calibrate_input`
  computes `s_x` from training data (the largest |x| over valid steps / 127).
* dynamic (this reference only; the C runtime refuses it): `s_x` per
  sequence and step is `max_f |x_t| * float32(1 / H)` (1 when all zero),
  and the input accumulator is rescaled to Q12 in float64
  (`floor(acc * M + 1/2)`); the rest is integer as below.
* language models read int8 embedding rows instead (`input_scale` []): the
  embedding's codes when they are one per-tensor int8 grid, else its values
  requantized to one per-tensor int8 grid (`scale = max|value| / 127`) when
  lowered.

Hidden states h are int8 codes with the fixed scale 1/H (h lies in [-1, 1]
for all three cells); an artifact whose in-model state quantizer is anything
else (`hidden_state.bits` other than 0 or `bits`, or `cell_bits`) is
refused.

Arithmetic
----------
Matrix products are int8 x int8 (up to int16 weights for asymmetric 8-bit
codes) accumulated exactly (int32 in C: at most K * 127 * 255 in
magnitude). An accumulator with real scale `S` goes to a fixed-point
format of `F` fractional bits by `rq(acc) = (acc * m + 2^(sh-1)) >> sh`
(int64 product, arithmetic shift = floor), where `m` < 2^15 and `sh` >= 1
are computed once when lowered so that `m * 2^-sh ~ S * 2^F`, and the
result is saturated to +-2^24. Per column, `m` in [2^14, 2^15) (relative
error < 2^-15); when every column of a kernel keeps m >= 2^10 under the
largest multiplier's shift, that one shift serves the whole kernel
(`make_requant`), so the C library stores one shift instead of one per
column.

* Gate pre-activations are Q12 (`a / 4096`): per gate column j,
  `a = rq_x(x_q . W_q[:, j]) + b_j + rq_h(h_q . U_q[:, j])`, with
  `S_x = s_x * s_w[j]` (`s_x` = 1/H for the layers above the first) and
  `S_h = s_u[j] / H`.
* sigmoid(a) in Q15 (`/ 32768`) from a 65-entry int16 table of
  `round(32768 sigmoid(k / 8))`, k = 0..64, with linear interpolation:
  `x = min(|a|, 32767)`, `i = x >> 9`, `f = x & 511`,
  `y = T[i] + (((T[i+1] - T[i]) * f + 256) >> 9)`, and `32768 - y` for
  a < 0 (error < 2e-4 inside +-8, < 3e-4 past it). tanh(a) = 2 sigmoid(2a)
  - 1 on the same table: `2 * sigmoid_q15(2a) - 32768` (error < 7e-4).
* GRU (linear before reset, exactly `models.cells.gru_step`):
  `r, z = sigmoid(a_r), sigmoid(a_z)`; `hn = sat(rq_h(h . U_n) + b_hn)`;
  `n = tanh(rq_x(x . W_n) + b_n + ((r * hn + 2^14) >> 15))`;
  `h' = ((32768 - z) * n * H + z * h * 32768 + 2^29) >> 30`, clipped to
  [-H, H].
* LSTM: `i, f, o = sigmoid(.)`, `g = tanh(.)` (Q15); the cell state c is
  int16 Q4.11 (`/ 2048`, range +-16, saturating):
  `c' = sat16((f * c + ((i * g + 8) >> 4) + 2^14) >> 15)`;
  `h' = (o * tanh(2 c') * H + 2^29) >> 30`, clipped to [-H, H].
* RNN: `h' = (tanh(a) * H + 2^14) >> 15`, clipped to [-H, H].
* A step past a sequence's length keeps its state (as the float layer does).

Pooling (the head's input is int8 at scale 1/H):

* last: the top layer's state at the last valid step.
* mean: `div_round(sum_t h_t, length)` (int32 sum, exact for up to 2^24
  steps; `div_round` rounds half away from zero); 0 for an empty sequence.
* attention: scores `e_t = rq_a(h_t . a_q)` in Q12 (`S = s_a / H`), and
  an online softmax so that a streaming step needs no history: the state is
  the running maximum `m` (Q12), `s = sum exp(e_t - m)` and
  `v[k] = sum exp(e_t - m) h_t[k]` (int64, exp in Q15). A score above `m`
  rescales s and v by `exp(m - e)` (`(s * f + 2^14) >> 15`) before adding
  32768 (exp(0)); the pooled vector is `div_round(v[k], s)` (exact for up
  to 2^26 steps).
  `exp(-u / 4096)` for u >= 0 (Q12 in, Q15 out): `u = min(u, 2^17 - 1)`,
  `w = (u * 23637 + 2^13) >> 14` (u * log2(e), Q12), `n = w >> 12`, and
  2^(-frac) from a 17-entry table of `round(32768 * 2^(-k / 16))` with linear
  interpolation (`k = (w & 4095) >> 8`, weight `w & 255`), shifted right by
  n (0 for n >= 16; error < 4e-4).

Heads: `out_j = sat32(rq_o(p . W_q[:, j]) + b_j)` in Q16 (`S = s_w[j] /
H`; the requantized product saturated to +-2^40 first): the classification
logits, forecasts and per-step language-model
logits are int32 with the one scale 2^-16, so argmax needs no float and the
runtimes report `out * 2^-16`. A language model's padded steps (past the
length) output the head of a zero state, as the float model does.

Every shift is an arithmetic shift (floor) of a signed value and every
product that could pass 2^31 is int64; the C runtime writes the same
expressions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from compression.errors import InputError
from models.cells import CELL_SPECS

# Fixed-point formats (fractional bits).
GATE_FRAC = 12  # Gate pre-activations: Q12 (int16 range: +-8 for the tables).
OUT_FRAC = 16  # Head outputs: Q16 in int32.
Q15 = 15  # Sigmoid / tanh / exp outputs.
CELL_FRAC = 11  # LSTM cell state: Q4.11 in int16.
H_MAX = 127  # Hidden state and input codes at 8 bits: +-127.
WIDE = 1 << 24  # Saturation of requantized Q12 values.
INT32 = (-(1 << 31), (1 << 31) - 1)
INT16 = (-(1 << 15), (1 << 15) - 1)
MULT_BITS = 15  # Requantization multipliers in [2^14, 2^15).
MAX_SHIFT = 62
SHARED_SHIFT_MIN = 1 << 10  # A kernel-wide shift keeps m >= 2^10.

# sigmoid(k / 8), k = 0..64, in Q15 (int16).
SIGMOID_STEP_BITS = 9  # Table step 1/8 = 2^9 in Q12.
SIGMOID_TABLE = np.array(
    [round(32768.0 / (1.0 + math.exp(-k / 8.0))) for k in range(65)],
    np.int64)
# 2^(-k / 16), k = 0..16, in Q15 (uint16).
EXP2_TABLE = np.array([round(32768.0 * 2.0 ** (-k / 16.0)) for k in range(17)],
                      np.int64)
LOG2E_Q14 = round(math.log2(math.e) * (1 << 14))
EXP_INPUT_MAX = (1 << 17) - 1
OUTPUT_SCALE = 2.0 ** -OUT_FRAC

MODES = ('static', 'dynamic')


# ----------------------------------------------------------------------------
# Lowered model


@dataclasses.dataclass(frozen=True)
class Matrix:
  """A kernel in integers, with what the C runtime stores of it.

  Attributes:
    path: the leaf path.
    q: (K, N) int64 integer weights (0 at pruned positions).
    scale: (N,) float64: the real weight is `q * scale[column]`.
    kind: 'codes' (q = code - zero_point) or 'codebook' (q = table[code]).
    bits: code width.
    codes: the stored codes (row-major, kept positions only when sparse).
    zero_point: (N,) int64 per column ('codes'; zeros for 'codebook').
    table: int8 centroids as int64 ('codebook'), else None.
    positions: sorted flat positions kept, or None (dense).
  """
  path: str
  q: np.ndarray
  scale: np.ndarray
  kind: str
  bits: int
  codes: np.ndarray
  zero_point: np.ndarray
  table: np.ndarray | None
  positions: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Requant:
  """Per-column `rq(acc) = (acc * m + 2^(shift-1)) >> shift` (int64 arrays)."""
  m: np.ndarray
  shift: np.ndarray


@dataclasses.dataclass(frozen=True)
class Layer:
  """One recurrent layer in integers.

  Attributes:
    input: the input kernel (K, G*H).
    recurrent: the recurrent kernel (H, G*H).
    input_rq: input accumulator -> Q12 (None: dynamic input, layer 0).
    recurrent_rq: recurrent accumulator -> Q12.
    bias: (G*H,) int64 Q12.
    recurrent_bias: (H,) int64 Q12 (GRU) or None.
  """
  input: Matrix
  recurrent: Matrix
  input_rq: Requant | None
  recurrent_rq: Requant
  bias: np.ndarray
  recurrent_bias: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Program:
  """A lowered artifact: everything the integer forward pass needs.

  Attributes:
    task: 'classification' | 'forecasting' | 'language_model'.
    cell: 'gru' | 'lstm' | 'rnn'.
    hidden: H.
    input_dim: F (the embedding width for a language model).
    output_dim: logits / horizon / vocabulary size.
    pooling: 'last' | 'mean' | 'attention' (classification), 'last'
      (forecasting), 'steps' (language model: a head at every step).
    layers: the recurrent layers, bottom first.
    attention: the attention kernel (H, 1) or None.
    attention_rq: its scores -> Q12, or None.
    head: the head kernel (H, C).
    head_rq: head accumulator -> Q16.
    head_bias: (C,) int64 Q16.
    mode: 'static' | 'dynamic' input quantization.
    input_scale: s_x (static; the embedding's for a language model).
    h_max: the largest hidden (and input) code, 2^(bits-1) - 1 (127).
    embedding: (V, E) int64 int8 rows (language model) or None.
  """
  task: str
  cell: str
  hidden: int
  input_dim: int
  output_dim: int
  pooling: str
  layers: tuple[Layer, ...]
  attention: Matrix | None
  attention_rq: Requant | None
  head: Matrix
  head_rq: Requant
  head_bias: np.ndarray
  mode: str
  input_scale: float
  h_max: int
  embedding: np.ndarray | None

  @property
  def gates(self) -> int:
    return CELL_SPECS[self.cell].gates


# ----------------------------------------------------------------------------
# Primitives (the C runtime writes the same expressions)


def shift_round(v: np.ndarray, shift: Any) -> np.ndarray:
  """`(v + 2^(shift-1)) >> shift` on int64 (round half up); shift >= 1."""
  v = np.asarray(v, np.int64)
  shift = np.asarray(shift, np.int64)
  return (v + (np.int64(1) << (shift - 1))) >> shift


def requantize(acc: np.ndarray, rq: Requant, limit: int = WIDE) -> np.ndarray:
  """`rq(acc)` per column (the last axis), saturated to +-limit."""
  v = shift_round(np.asarray(acc, np.int64) * rq.m, rq.shift)
  return np.clip(v, -limit, limit)


def sigmoid_q15(a: np.ndarray) -> np.ndarray:
  """sigmoid of Q12 values, Q15 (see the module docstring)."""
  a = np.asarray(a, np.int64)
  x = np.minimum(np.abs(a), INT16[1])
  i = x >> SIGMOID_STEP_BITS
  f = x & ((1 << SIGMOID_STEP_BITS) - 1)
  lo, hi = SIGMOID_TABLE[i], SIGMOID_TABLE[i + 1]
  y = lo + (((hi - lo) * f + (1 << (SIGMOID_STEP_BITS - 1)))
            >> SIGMOID_STEP_BITS)
  return np.where(a >= 0, y, 32768 - y)


def tanh_q15(a: np.ndarray) -> np.ndarray:
  """tanh of Q12 values, Q15: `2 sigmoid(2a) - 1`."""
  return 2 * sigmoid_q15(2 * np.asarray(a, np.int64)) - 32768


def exp_q15(u: np.ndarray) -> np.ndarray:
  """exp(-u / 4096) for u >= 0 (Q12), Q15 (see the module docstring)."""
  u = np.minimum(np.asarray(u, np.int64), EXP_INPUT_MAX)
  w = (u * LOG2E_Q14 + (1 << 13)) >> 14
  n = w >> 12
  frac = w & 4095
  k = frac >> 8
  t = frac & 255
  lo, hi = EXP2_TABLE[k], EXP2_TABLE[k + 1]
  p = lo - (((lo - hi) * t + 128) >> 8)
  return np.where(n >= 16, 0, p >> np.minimum(n, 16))


def div_round(n: np.ndarray, d: np.ndarray) -> np.ndarray:
  """n / d rounded half away from zero, for d > 0 (C's `/` on magnitudes)."""
  n = np.asarray(n, np.int64)
  d = np.asarray(d, np.int64)
  mag = (np.abs(n) + d // 2) // d
  return np.where(n >= 0, mag, -mag)


def q15_to_h(v: np.ndarray, h_max: int = H_MAX) -> np.ndarray:
  """A Q15 value in [-1, 1] on the hidden grid (scale 1 / h_max)."""
  return np.clip(shift_round(np.asarray(v, np.int64) * h_max, Q15), -h_max,
                 h_max)


def multiplier(real: float, where: str) -> tuple[int, int]:
  """(m, shift) with `m * 2^-shift ~ real`, m in [2^14, 2^15), shift >= 1.

  Args:
    real: the positive real multiplier.
    where: what it is for (in the error message).

  Returns:
    (m, shift); a multiplier below 2^-47 gets shift 62 and a smaller m
    (possibly 0).

  Raises:
    InputError: a non-positive, non-finite or too large multiplier.
  """
  real = float(real)
  if not (math.isfinite(real) and real > 0):
    raise InputError(f'{where}: scale {real!r} is not a positive finite '
                     'number')
  frac, exp = math.frexp(real)  # real = frac * 2^exp, frac in [0.5, 1).
  m = round(frac * (1 << MULT_BITS))
  if m == 1 << MULT_BITS:
    m, exp = m >> 1, exp + 1
  shift = MULT_BITS - exp
  if shift < 1:
    raise InputError(f'{where}: scale {real:.3g} is too large for integer '
                     'requantization (at most 2^13)')
  if shift > MAX_SHIFT:
    m = round(real * 2.0 ** MAX_SHIFT)
    shift = MAX_SHIFT
  return int(m), int(shift)


def make_requant(real: np.ndarray, where: str) -> Requant:
  """Per-column multipliers of `real` (float64 array).

  One shift for the whole kernel (the largest multiplier's) when every
  column's multiplier then keeps at least 11 significant bits (m >=
  SHARED_SHIFT_MIN), so the C runtime stores one shift instead of one per
  column; otherwise each column has its own shift.
  """
  real = np.asarray(real, np.float64).ravel()
  pairs = [multiplier(r, where) for r in real]
  m = np.array([p[0] for p in pairs], np.int64)
  shift = np.array([p[1] for p in pairs], np.int64)
  common = int(shift.min())
  shared = np.round(real * 2.0 ** common).astype(np.int64)
  if np.all(shared >= SHARED_SHIFT_MIN) and np.all(shared < 1 << MULT_BITS):
    return Requant(shared, np.full_like(shift, common))
  return Requant(m, shift)


def quantize_input(x: np.ndarray, scale: float, qmax: int = H_MAX
                   ) -> np.ndarray:
  """`clip(round(x * float32(1 / scale)), -qmax, qmax)` as int64 (half even).
  """
  inv = np.float32(1.0) / np.float32(scale)
  q = np.round(np.asarray(x, np.float32) * inv)
  return np.clip(q, -qmax, qmax).astype(np.int64)


def calibrate_input(x_train: np.ndarray, lengths: np.ndarray | None = None
                    ) -> list[float]:
  """The static input scale of the integer runtimes, from training inputs.

  Per tensor: the largest |x| over the valid steps (t < length) of every
  training sequence, divided by 127, so that no training input clips on the
  int8 grid (the inputs of this project are standardised or bounded, so the
  maximum is not an outlier's; a constant zero input gets scale 1).

  Args:
    x_train: (N, T, F) float inputs (the train split), or (N, T) integer
      tokens of a language model.
    lengths: (N,) valid steps per sequence; None means all T.

  Returns:
    `[s_x]`, the `input_scale` of the header's `activations`; `[]` for
    integer tokens (a language model's input is its int8 embedding). It is
    `compression.activations.calibrate_input` at 8 bits, absmax: the one
    calibration the fake-quant training uses too.
  """
  from compression import activations  # pylint: disable=g-import-not-at-top
  return activations.calibrate_input(x_train, lengths, bits=8,
                                     method='absmax')


# ----------------------------------------------------------------------------
# Lowering


def _fail(name: str, message: str) -> InputError:
  return InputError(f'artifact {name}: {message}' if name
                    else f'artifact: {message}')


def _matrix(art: Any, path: str, name: str) -> Matrix:
  """The integer form of a 2-D kernel leaf, or one error line."""
  records = art.records
  if path not in records:
    if any(p.startswith(f'{path}/') for p in records):
      raise _fail(name, f'{path} is stored as factors: the integer runtimes '
                  'need it as one quantized matrix')
    raise _fail(name, f'{path} is missing')
  rec = records[path]
  hint = ('quantize the weights (methods quantize or kmeans) to run it in '
          'integers')
  if rec is None:
    raise _fail(name, f'{path} is float32: {hint}')
  if rec.transform is not None:
    raise _fail(name, f'{path} is stored as {rec.transform.kind} '
                'coefficients, which have no integer form: the integer '
                'runtimes need codes or a codebook')
  if rec.ref is not None:
    raise _fail(name, f'{path} is a copy of {rec.ref}: the integer runtimes '
                'need its own codes')
  shape = _leaf_shape(art, path)
  if len(shape) != 2:
    raise _fail(name, f'{path} has shape {shape}, not a matrix')
  k, n = shape
  pos = rec.positions
  kept = (np.arange(k * n, dtype=np.int64) if pos is None
          else np.asarray(pos, np.int64))
  cols = kept % n
  if rec.codes is not None:
    c = rec.codes
    bits = int(c.bits)
    scale = np.asarray(c.scale, np.float64).reshape(-1)
    scale = np.broadcast_to(scale, (n,)).copy() if scale.size in (1, n) \
        else None
    if scale is None:
      raise _fail(name, f'{path}: {np.size(c.scale)} scales for {n} columns')
    if c.zero_point is None:
      zp = np.full(n, 2 ** (bits - 1) - 1, np.int64)
    else:
      zp = np.broadcast_to(np.asarray(c.zero_point, np.int64).reshape(-1),
                           (n,)).copy()
    u = np.asarray(c.u, np.int64).reshape(-1)
    values = u - zp[cols]
    kind, table = 'codes', None
  elif rec.codebook is not None:
    b = rec.codebook
    bits = int(b.bits)
    cb = np.asarray(b.codebook, np.float64)
    top = float(np.max(np.abs(cb))) if cb.size else 0.0
    step = top / 127 if top > 0 else 1.0
    table = np.clip(np.round(cb / step), -127, 127).astype(np.int64)
    u = np.asarray(b.index, np.int64).reshape(-1)
    values = table[u]
    scale = np.full(n, step, np.float64)
    zp = np.zeros(n, np.int64)
    kind = 'codebook'
  else:
    raise _fail(name, f'{path} stores float32 values at its kept positions: '
                f'{hint}')
  if u.size != kept.size:
    raise _fail(name, f'{path}: {u.size} codes for {kept.size} positions')
  q = np.zeros(k * n, np.int64)
  q[kept] = values
  return Matrix(path=path, q=q.reshape(k, n), scale=scale, kind=kind,
                bits=bits, codes=u, zero_point=zp, table=table,
                positions=None if pos is None else kept)


def _leaf_shape(art: Any, path: str) -> tuple[int, ...]:
  node: Any = art.params
  for key in path.split('/'):
    node = node[key]
  return tuple(np.shape(node))


def _leaf(art: Any, path: str) -> np.ndarray:
  node: Any = art.params
  for key in path.split('/'):
    node = node[key]
  return np.asarray(node, np.float64)


def _bias(values: np.ndarray, frac: int, limit: int) -> np.ndarray:
  return np.clip(np.round(values * 2.0 ** frac), -limit, limit).astype(
      np.int64)


def activations(header: dict, name: str = ''
                ) -> tuple[str, float, int]:
  """(mode, per-tensor input scale, bits) from the header's `activations`.

  Raises:
    InputError: the key is missing or malformed (one line).
  """
  act = header.get('activations')
  if act is None:
    raise _fail(name, "its header has no 'activations' (the int8 input "
                'scale the integer runtimes need); write the artifact again '
                'with a version that calibrates it (deploy.integer.'
                'calibrate_input)')
  if not isinstance(act, dict):
    raise _fail(name, 'activations is not an object')
  bits = act.get('bits')
  if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
    raise _fail(name, f'activations.bits {bits!r}: must be an integer in '
                '2..8')
  mode = act.get('mode')
  if mode not in MODES:
    raise _fail(name, f'activations.mode {mode!r}; valid: {", ".join(MODES)}')
  scales = act.get('input_scale')
  if not isinstance(scales, list) or not all(
      isinstance(s, (int, float)) and not isinstance(s, bool)
      and math.isfinite(s) and s > 0 for s in scales):
    raise _fail(name, 'activations.input_scale must be a list of positive '
                'finite numbers')
  if header['task'] == 'language_model' or mode == 'dynamic':
    return mode, 0.0, bits
  dim = int(header['info'].get('input_dim', 0))
  if len(scales) not in (1, dim):
    raise _fail(name, f'activations.input_scale has {len(scales)} values; '
                f'valid: 1 (per tensor) or {dim} (per feature)')
  return mode, float(max(scales)), bits


def _embedding(art: Any, name: str) -> tuple[np.ndarray, float]:
  """(V, E) int8 rows and their per-tensor scale (see the docstring)."""
  m = _matrix(art, 'embed/embedding', name)
  if np.all(m.scale == m.scale[0]) and np.max(np.abs(m.q)) <= 127:
    return m.q, float(m.scale[0])
  real = m.q * m.scale[None, :]
  top = float(np.max(np.abs(real)))
  step = top / 127 if top > 0 else 1.0
  return np.clip(np.round(real / step), -127, 127).astype(np.int64), step


def lower(art: Any, name: str = '') -> Program:
  """An artifact's integer program.

  Args:
    art: `compression.export.read(path)`.
    name: the file name for messages.

  Returns:
    The Program.

  Raises:
    InputError: what the artifact lacks for integer inference, as one line.
  """
  header = art.header
  task = header['task']
  model = header['model']
  cell, hidden, n_layers = model['cell'], int(model['hidden']), int(
      model['layers'])
  mode, s_x, bits = activations(header, name)
  h_max = 2 ** (bits - 1) - 1
  hs = header.get('hidden_state') or {}
  if (hs.get('bits') or 0) not in (0, bits) or (hs.get('cell_bits') or 0):
    raise _fail(name, f'hidden_state {hs}: the integer runtimes keep h on '
                f'the {bits}-bit grid of activations.bits and c in Q4.11; '
                f'only hidden_state.bits 0 or {bits} without cell_bits can '
                'run')
  embedding = None
  if task == 'language_model':
    embedding, s_x = _embedding(art, name)
    mode = 'static'
  g = CELL_SPECS[cell].gates
  layers = []
  for i in range(n_layers):
    pre = f'rnn/layer_{i}'
    w = _matrix(art, f'{pre}/input_kernel', name)
    u = _matrix(art, f'{pre}/recurrent_kernel', name)
    s_in = s_x if i == 0 else 1.0 / h_max
    in_rq = None if (i == 0 and mode == 'dynamic') else make_requant(
        s_in * w.scale * 2.0 ** GATE_FRAC, f'{pre}/input_kernel')
    rec_rq = make_requant(u.scale / h_max * 2.0 ** GATE_FRAC,
                          f'{pre}/recurrent_kernel')
    bias = _bias(_leaf(art, f'{pre}/bias'), GATE_FRAC, WIDE)
    rbias = (_bias(_leaf(art, f'{pre}/recurrent_bias'), GATE_FRAC, WIDE)
             if cell == 'gru' else None)
    if w.q.shape[1] != g * hidden or u.q.shape != (hidden, g * hidden):
      raise _fail(name, f'{pre}: kernels {w.q.shape} and {u.q.shape} do not '
                  f'fit a {cell} of {hidden} units')
    layers.append(Layer(w, u, in_rq, rec_rq, bias, rbias))
  attention = attention_rq = None
  if task == 'classification':
    pooling = model.get('pooling', 'last')
    if pooling == 'attention':
      attention = _matrix(art, 'attention/kernel', name)
      attention_rq = make_requant(
          attention.scale / h_max * 2.0 ** GATE_FRAC, 'attention/kernel')
  elif task == 'forecasting':
    pooling = 'last'
  else:
    pooling = 'steps'
  head = _matrix(art, 'head/kernel', name)
  head_rq = make_requant(head.scale / h_max * 2.0 ** OUT_FRAC, 'head/kernel')
  head_bias = _bias(_leaf(art, 'head/bias'), OUT_FRAC, INT32[1])
  return Program(
      task=task, cell=cell, hidden=hidden,
      input_dim=int(layers[0].input.q.shape[0]),
      output_dim=int(head.q.shape[1]), pooling=pooling, layers=tuple(layers),
      attention=attention, attention_rq=attention_rq, head=head,
      head_rq=head_rq, head_bias=head_bias, mode=mode, input_scale=s_x,
      h_max=h_max, embedding=embedding)


# ----------------------------------------------------------------------------
# The forward pass


def _cell_step(prog: Program, layer: Layer, gx: np.ndarray, h: np.ndarray,
               c: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
  """One step of one layer: gx (B, G*H) is rq_x(x . W) + b (Q12)."""
  hid, hq = prog.hidden, prog.h_max
  gh = requantize(h @ layer.recurrent.q, layer.recurrent_rq)
  if prog.cell == 'gru':
    r = sigmoid_q15(gx[:, :hid] + gh[:, :hid])
    z = sigmoid_q15(gx[:, hid:2 * hid] + gh[:, hid:2 * hid])
    hn = np.clip(gh[:, 2 * hid:] + layer.recurrent_bias, -WIDE, WIDE)
    n = tanh_q15(gx[:, 2 * hid:] + shift_round(r * hn, Q15))
    num = (32768 - z) * n * hq + z * h * 32768
    return np.clip(shift_round(num, 30), -hq, hq), None
  a = gx + gh
  if prog.cell == 'lstm':
    i = sigmoid_q15(a[:, :hid])
    f = sigmoid_q15(a[:, hid:2 * hid])
    g = tanh_q15(a[:, 2 * hid:3 * hid])
    o = sigmoid_q15(a[:, 3 * hid:])
    c_new = np.clip(shift_round(f * c + shift_round(i * g, 4), Q15), *INT16)
    tc = tanh_q15(c_new * 2)
    h_new = np.clip(shift_round(o * tc * hq, 30), -hq, hq)
    return h_new, c_new
  return q15_to_h(tanh_q15(a), hq), None


def _input_gates(layer: Layer, seq: np.ndarray,
                 x_scale: np.ndarray | None) -> np.ndarray:
  """rq_x(x . W) + b for every step: (B, T, G*H) Q12."""
  b, t, k = seq.shape
  acc = (seq.reshape(b * t, k) @ layer.input.q).reshape(b, t, -1)
  if layer.input_rq is None:  # Dynamic input scale (layer 0).
    real = acc * (x_scale[..., None] * layer.input.scale * 2.0 ** GATE_FRAC)
    gx = np.clip(np.floor(real + 0.5), -WIDE, WIDE).astype(np.int64)
  else:
    gx = requantize(acc, layer.input_rq)
  return gx + layer.bias


def _pool_attention(prog: Program, top: np.ndarray, valid: np.ndarray
                    ) -> np.ndarray:
  """The online-softmax attention pooling (see the module docstring)."""
  b, t, hid = top.shape
  scores = requantize((top.reshape(b * t, hid) @ prog.attention.q)[:, 0:1],
                      prog.attention_rq).reshape(b, t)
  m = np.zeros(b, np.int64)
  s = np.zeros(b, np.int64)
  v = np.zeros((b, hid), np.int64)
  count = np.zeros(b, np.int64)
  for step in range(t):
    e, h, ok = scores[:, step], top[:, step], valid[:, step]
    first = ok & (count == 0)
    higher = ok & (count > 0) & (e > m)
    lower_ = ok & (count > 0) & (e <= m)
    f = exp_q15(np.where(higher, e - m, 0))
    w = exp_q15(np.where(lower_, m - e, 0))
    s_up = shift_round(s * f, Q15) + 32768
    v_up = shift_round(v * f[:, None], Q15) + 32768 * h
    s = np.where(first, 32768, np.where(higher, s_up,
                                        np.where(lower_, s + w, s)))
    v = np.where(first[:, None], 32768 * h,
                 np.where(higher[:, None], v_up,
                          np.where(lower_[:, None], v + w[:, None] * h, v)))
    m = np.where(first | higher, e, m)
    count = count + ok
  safe = np.maximum(s, 1)
  pooled = np.clip(div_round(v, safe[:, None]), -prog.h_max, prog.h_max)
  return np.where((count > 0)[:, None], pooled, 0)


def head(prog: Program, features: np.ndarray) -> np.ndarray:
  """The head's Q16 outputs of (B, H) int8 features."""
  acc = features @ prog.head.q
  out = requantize(acc, prog.head_rq, limit=1 << 40) + prog.head_bias
  return np.clip(out, *INT32)


def forward(prog: Program, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """The integer outputs of one batch.

  Args:
    prog: `lower(artifact)`.
    x: (B, T, F) float inputs, or (B, T) int tokens for a language model.
    lengths: (B,) valid steps.

  Returns:
    int64 outputs on the Q16 grid (values fit int32): (B, C) logits or
    (B, horizon) forecasts, or (B, T, V) language-model logits.
  """
  lengths = np.asarray(lengths, np.int64)
  x = np.asarray(x)
  b, t = x.shape[:2]
  valid = np.arange(t)[None, :] < lengths[:, None]
  x_scale = None
  if prog.embedding is not None:
    seq = prog.embedding[np.clip(np.asarray(x, np.int64), 0,
                                 len(prog.embedding) - 1)]
  elif prog.mode == 'dynamic':
    xf = np.asarray(x, np.float32)
    top = np.max(np.abs(xf), axis=-1) * np.float32(1.0 / prog.h_max)
    x_scale = np.where(top > 0, top, np.float32(1.0))
    inv = np.float32(1.0) / x_scale
    seq = np.clip(np.round(xf * inv[..., None]), -prog.h_max,
                  prog.h_max).astype(
        np.int64)
    x_scale = x_scale.astype(np.float64)
  else:
    seq = quantize_input(x, prog.input_scale, prog.h_max)
  h = None
  for layer in prog.layers:
    gx = _input_gates(layer, seq, x_scale)
    h = np.zeros((b, prog.hidden), np.int64)
    c = np.zeros((b, prog.hidden), np.int64) if prog.cell == 'lstm' else None
    outs = np.zeros((b, t, prog.hidden), np.int64)
    for step in range(t):
      h_new, c_new = _cell_step(prog, layer, gx[:, step], h, c)
      ok = valid[:, step][:, None]
      h = np.where(ok, h_new, h)
      if c is not None:
        c = np.where(ok, c_new, c)
      outs[:, step] = np.where(ok, h_new, 0)
    seq = outs
  if prog.pooling == 'steps':
    return head(prog, seq.reshape(b * t, -1)).reshape(b, t, -1)
  if prog.pooling == 'last':
    features = h
  elif prog.pooling == 'mean':
    total = np.sum(np.where(valid[..., None], seq, 0), axis=1)
    features = np.where((lengths > 0)[:, None],
                        div_round(total, np.maximum(lengths, 1)[:, None]), 0)
  else:
    features = _pool_attention(prog, seq, valid)
  return head(prog, features)


def outputs(prog: Program, batches: Sequence[dict]) -> list[np.ndarray]:
  """The integer outputs of every batch (`forward`)."""
  return [forward(prog, bt['x'], bt['lengths']) for bt in batches]


def to_float(out: np.ndarray) -> np.ndarray:
  """Integer outputs as the float values they stand for (`out * 2^-16`)."""
  return (np.asarray(out, np.float64) * OUTPUT_SCALE).astype(np.float32)


def run(artifact: Any, path: str, batches: list[dict]
        ) -> tuple[list[np.ndarray], dict]:
  """`--runtime=int`: each batch's outputs through the integer reference."""
  import os  # pylint: disable=g-import-not-at-top
  prog = lower(artifact, os.path.basename(path))
  outs = [to_float(o) for o in outputs(prog, batches)]
  return outs, {'activations': prog.mode, 'input_scale': prog.input_scale,
                'output_scale': OUTPUT_SCALE}
