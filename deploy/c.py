r"""A C99 library generated from an artifact: the integer program as C.

`export(artifact, path, out)` (`eval.py --export_c=DIR`) lowers the artifact
with `deploy.integer.lower` and writes, whole or not at all (a temporary
directory beside DIR, renamed into place), four files:

  ==============  ============================================================
  file            content
  ==============  ============================================================
  rnnc.h          the API: dimensions, the input and output scales, the
                  state struct and the functions below
  rnnc.c          the code: one matrix-vector function per kernel, the
                  requantization, the sigmoid / tanh / exp tables' use, the
                  cells, pooling and head
  rnnc_data.c     the `const` weights and tables (flash)
  rnnc_data.h     their declarations and the per-tensor constants
  ==============  ============================================================

API (classification and forecasting; x is int8, quantized by the caller as
`clip(round(x / RNNC_INPUT_SCALE), -RNNC_HMAX, RNNC_HMAX)` (RNNC_HMAX is 127
at 8 bits); outputs are int32 Q16, `value = out / 65536`)::

  void rnnc_reset(rnnc_state *state);
  void rnnc_step(rnnc_state *state, const int8_t x[RNNC_INPUT_DIM]);
  void rnnc_output(const rnnc_state *state, int32_t out[RNNC_OUTPUT_DIM]);
  void rnnc_predict(const int8_t *x, int32_t steps,
                    int32_t out[RNNC_OUTPUT_DIM]);

`rnnc_step` is the streaming step: the state (hidden and LSTM cell states,
and the pooling's running sums) lives in the caller's `rnnc_state`, so
`rnnc_output` gives the prediction for the steps seen so far at any time.
A language model steps on tokens and outputs logits every step:
`rnnc_step(state, token, logits)`, `rnnc_predict(tokens, steps, logits)`
(steps x RNNC_OUTPUT_DIM).

No dynamic allocation, no floating point (the header's scale macros are for
the caller), no library calls; every intermediate is on the stack or in the
state, sized by the model's dimensions. The arithmetic is
`deploy.integer`'s, expression for expression, so outputs equal
`--runtime=int` bit for bit.

How weights are stored (per kernel, whichever is smaller where there is a
choice):

* dense kernels whose input width K is a multiple of 8: a row per output,
  each output a dot product over x widened to int16 once (compilers
  vectorize it as 16-bit multiply-adds); other dense kernels (a narrow
  input): a row per input, added x_i times into the outputs;
* codes of 2-4 bits: two per byte, byte p of a row holding code p (low
  nibble) and code p + ceil(row/2) (high nibble), so each half is a
  contiguous loop; the zero point is subtracted once per output
  (`y_j = sum_i x_i u_ij - zp_j sum_i x_i`);
* codes of 5-8 bits: int8 weights `q = u - zp` (or uint8 codes with the
  same zero-point correction when q does not fit int8);
* codebooks: packed indices (4 bits or 8) and the int8 centroid table;
* sparse kernels (pruned positions): CSR by input row: row pointers, column
  indices (uint8 up to 256 columns) and the kept codes or indices, packed
  two per byte when 4 bits or fewer; a sparse kernel is stored dense instead
  (pruned positions as exact zeros) when that is smaller;
* requantization multipliers int16 (one constant when the kernel has one
  scale) and one shift per kernel (or per column, see
  `deploy.integer.make_requant`); biases int16 when they fit.

`flash_bytes` is the text + data of the two objects compiled with
`cc -std=c99 -O2` as `size` reports them: `weights_bytes` (rnnc_data.o:
weights and tables) plus `code_bytes` (rnnc.o). `ram_bytes` is the state
struct plus the largest stack scratch of a step or of the output, from the
model's dimensions.

`run(artifact, path, batches)` (`--runtime=c`) compiles the library with a
small driver (reading the int8 inputs from a file, writing the int32
outputs to another) into a temporary directory with the system compiler
(`$CC`, else `cc`) and runs every test sequence through `rnnc_predict`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any

import numpy as np

from compression.errors import InputError
from deploy import integer
from deploy.integer import Matrix, Program, Requant

FILES = ('rnnc.h', 'rnnc.c', 'rnnc_data.c', 'rnnc_data.h')
CFLAGS = ('-std=c99', '-Wall', '-Wextra', '-Werror', '-O2')
_CELL_IDS = {'gru': 1, 'lstm': 2, 'rnn': 3}


# ----------------------------------------------------------------------------
# C text helpers


def _array(ctype: str, name: str, values: Any) -> str:
  """A `const` array definition, wrapped at 79 columns."""
  vals = [str(int(v)) for v in np.asarray(values).reshape(-1)]
  if not vals:
    vals = ['0']
  lines, line = [], ' '
  for v in vals:
    piece = f' {v},'
    if len(line) + len(piece) > 79:
      lines.append(line)
      line = ' '
    line += piece
  lines.append(line)
  body = '\n'.join(lines)
  return f'const {ctype} {name}[{len(vals)}] = {{\n{body}\n}};\n'


def _int_type(values: np.ndarray, signed: bool = True) -> str:
  """The smallest C integer type holding every value."""
  v = np.asarray(values, np.int64)
  lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
  if not signed and lo >= 0:
    for bits in (8, 16, 32):
      if hi < 1 << bits:
        return f'uint{bits}_t'
  for bits in (8, 16, 32):
    if -(1 << (bits - 1)) <= lo and hi < 1 << (bits - 1):
      return f'int{bits}_t'
  return 'int64_t'


class _Data:
  """Collects the const arrays (rnnc_data.c) and constants (rnnc_data.h)."""

  def __init__(self):
    self.defs: list[str] = []
    self.decls: list[str] = []
    self.macros: list[str] = []

  def array(self, ctype: str, name: str, values: Any) -> str:
    n = int(np.asarray(values).size) or 1
    self.defs.append(_array(ctype, name, values))
    self.decls.append(f'extern const {ctype} {name}[{n}];')
    return name

  def macro(self, name: str, value: Any) -> None:
    self.macros.append(f'#define {name} {value}')

  def per_column(self, name: str, values: np.ndarray, signed=True) -> str:
    """`NAME(j)`: a constant when all equal, else an array lookup."""
    v = np.asarray(values, np.int64)
    if v.size and np.all(v == v[0]):
      self.macro(f'{name.upper()}(j)', f'({int(v[0])})')
    else:
      arr = self.array(_int_type(v, signed), name.lower(), v)
      self.macro(f'{name.upper()}(j)', f'((int32_t){arr}[j])')
    return f'{name.upper()}'


# ----------------------------------------------------------------------------
# Matrices


def _zero_code(m: Matrix) -> int | None:
  """The code that decodes to exactly 0 in every column, if any."""
  if m.kind == 'codes':
    zp = m.zero_point
    return int(zp[0]) if np.all(zp == zp[0]) else -1  # -1: per column.
  hits = np.flatnonzero(m.table == 0)
  if hits.size:
    return int(hits[0])
  if len(m.table) < (16 if m.bits <= 4 else 256):
    return len(m.table)  # A zero appended to the table.
  return None


def _dense_codes(m: Matrix) -> np.ndarray | None:
  """(K, N) codes of every position (pruned ones decoding to 0), or None."""
  k, n = m.q.shape
  if m.positions is None:
    return m.codes.reshape(k, n)
  zero = _zero_code(m)
  if zero is None:
    return None
  if zero == -1:
    full = np.broadcast_to(m.zero_point, (k, n)).reshape(-1).copy()
  else:
    full = np.full(k * n, zero, np.int64)
  full[m.positions] = m.codes
  return full.reshape(k, n)


def _table(m: Matrix) -> np.ndarray:
  """The codebook table (with the appended zero where one was needed)."""
  zero = _zero_code(m) if m.positions is not None else None
  if zero is not None and zero == len(m.table):
    return np.concatenate([m.table, [0]])
  return m.table


def _nibbles(codes: np.ndarray) -> np.ndarray:
  """(R, C) codes < 16 as (R, ceil(C/2)) bytes: byte p of a row holds code p
  (low nibble) and code p + ceil(C/2) (high nibble), so each half is a
  contiguous loop."""
  r, c = codes.shape
  half = (c + 1) // 2
  lo = codes[:, :half]
  hi = np.zeros((r, half), np.int64)
  hi[:, :c - half] = codes[:, half:]
  return (lo | (hi << 4)).astype(np.int64)


def _dense_bytes(m: Matrix) -> int | None:
  k, n = m.q.shape
  if _dense_codes(m) is None:
    return None
  if m.bits > 4:
    return k * n
  return n * ((k + 1) // 2) if k % 8 == 0 else k * ((n + 1) // 2)


def _sparse_bytes(m: Matrix) -> int:
  k, n = m.q.shape
  nnz = len(m.positions)
  ptr = 2 if nnz < 1 << 16 else 4
  col = 1 if n <= 256 else 2
  vals = (nnz + 1) // 2 if m.bits <= 4 else nnz
  return (k + 1) * ptr + nnz * col + vals


def _sparse_value(m: Matrix, name: str, data: _Data, code: str, col: str
                  ) -> str:
  """C expression of a kept weight: its code `code` in column `col`."""
  if m.kind == 'codebook':
    arr = data.array('int8_t', f'rnnc_{name}_tab', m.table)
    return f'(int32_t){arr}[{code}]'
  zp = m.zero_point
  if np.all(zp == zp[0]):
    return f'((int32_t)({code}) - {int(zp[0])})'
  arr = data.array(_int_type(zp, False), f'rnnc_{name}_zp', zp)
  return f'((int32_t)({code}) - (int32_t){arr}[{col}])'


def _matvec(m: Matrix, name: str, data: _Data) -> str:
  """The C function `mv_<name>(x, y)`: y[0:N] = x . q (x int8, y int32).

  Dense kernels whose K is a multiple of 8 are stored transposed (a row
  per output) and each output is a dot product over x widened to int16
  once (`_dot`); other dense kernels add x_i times row i to the outputs
  (`_axpy`); sparse kernels scatter the kept weights of each nonzero input
  (CSR by input row).
  """
  k, n = m.q.shape
  dense = _dense_bytes(m)
  use_sparse = m.positions is not None and (
      dense is None or _sparse_bytes(m) < dense)
  head = (f'static void mv_{name}(const int8_t *restrict x, '
          'int32_t *restrict y) {\n')
  if use_sparse:
    nnz = len(m.positions)
    rows = m.positions // n
    cols = m.positions % n
    ptr = np.searchsorted(rows, np.arange(k + 1)).astype(np.int64)
    rp = data.array('uint16_t' if nnz < 1 << 16 else 'uint32_t',
                    f'rnnc_{name}_rp', ptr)
    ca = data.array('uint8_t' if n <= 256 else 'uint16_t',
                    f'rnnc_{name}_col', cols)
    if m.bits <= 4:
      codes = np.zeros(2 * ((nnz + 1) // 2), np.int64)
      codes[:nnz] = m.codes
      packed = codes[0::2] | (codes[1::2] << 4)
      va = data.array('uint8_t', f'rnnc_{name}_w', packed)
      fetch = f'(({va}[e >> 1] >> ((e & 1) << 2)) & 15)'
    else:
      va = data.array('uint8_t', f'rnnc_{name}_w', m.codes)
      fetch = f'{va}[e]'
    value = _sparse_value(m, name, data, fetch, f'{ca}[e]')
    body = (f'  for (int j = 0; j < {n}; ++j) y[j] = 0;\n'
            f'  for (int i = 0; i < {k}; ++i) {{\n'
            '    const int32_t xi = x[i];\n'
            '    if (xi == 0) continue;\n'
            f'    for (int32_t e = {rp}[i]; e < (int32_t){rp}[i + 1]; ++e)\n'
            f'      y[{ca}[e]] += xi * {value};\n'
            '  }\n')
    return head + body + '}\n'
  if k % 8 == 0:
    return head + _dot(m, name, data) + '}\n'
  return head + _axpy(m, name, data) + '}\n'


def _weights(m: Matrix, name: str, data: _Data, transposed: bool
             ) -> tuple[str, str, int, str]:
  """How a dense kernel's rows are stored and read.

  Args:
    m: the kernel.
    name: its C name.
    data: the arrays.
    transposed: a stored row per output (N rows of K), else per input.

  Returns:
    (the C type of a stored row, the array, the bytes of a row, the C
    expression of weight `IDX` of a row `w` whose codes are read with the
    nibble layout of `_nibbles` when 4 bits or fewer).
  """
  codes = _dense_codes(m).T if transposed else _dense_codes(m)
  if m.kind == 'codes' and m.bits > 4 and np.all((m.q >= -128) &
                                                  (m.q <= 127)):
    q = m.q.T if transposed else m.q
    arr = data.array('int8_t', f'rnnc_{name}_w', q)
    return 'int8_t', arr, q.shape[1], 'w[IDX]'
  table = (data.array('int8_t', f'rnnc_{name}_tab', _table(m))
           if m.kind == 'codebook' else '')

  def look(code):
    return f'{table}[{code}]' if table else f'({code})'

  if m.bits <= 4:
    packed = _nibbles(codes)
    arr = data.array('uint8_t', f'rnnc_{name}_w', packed)
    return 'uint8_t', arr, packed.shape[1], look('NIBBLE')
  arr = data.array('uint8_t', f'rnnc_{name}_w', codes)
  return 'uint8_t', arr, codes.shape[1], look('w[IDX]')


def _zero_fix(m: Matrix, name: str, data: _Data, j: str) -> str:
  """`- zp_j * sx` for unsigned codes (their zero point), else ''."""
  if m.kind != 'codes' or (m.bits > 4 and np.all((m.q >= -128) &
                                                  (m.q <= 127))):
    return ''
  zp = m.zero_point
  if np.all(zp == zp[0]):
    return f' - {int(zp[0])} * sx'
  arr = data.array(_int_type(zp, False), f'rnnc_{name}_zp', zp)
  return f' - (int32_t){arr}[{j}] * sx'


def _dot(m: Matrix, name: str, data: _Data) -> str:
  """Dense, a stored row per output: y_j = x . w_j over x widened to int16
  (K a multiple of 8: compilers vectorize it as 16-bit multiply-adds)."""
  k, n = m.q.shape
  wtype, arr, row, weight = _weights(m, name, data, True)
  fix = _zero_fix(m, name, data, 'j')
  if 'NIBBLE' in weight:  # Unpacked to int16 first, then the dot product.
    half = row
    unpack = (f'    for (int p = 0; p < {half}; ++p) u[p] = (int16_t)'
              f'{weight.replace("NIBBLE", "w[p] & 15")};\n'
              f'    for (int p = 0; p < {half}; ++p) u[{half} + p] = '
              f'(int16_t){weight.replace("NIBBLE", "w[p] >> 4")};\n')
    span, term = 2 * half, 'u[i]'
  elif weight != 'w[IDX]':  # A codebook lookup per weight.
    unpack = (f'    for (int i = 0; i < {k}; ++i) u[i] = (int16_t)'
              f'{weight.replace("IDX", "i")};\n')
    span, term = k, 'u[i]'
  else:
    unpack, span, term = '', k, '(int16_t)w[i]'
  return (f'  int16_t xs[{span}];\n'
          + (f'  int16_t u[{span}];\n' if unpack else '')
          + ('  int32_t sx = 0;\n' if fix else '')
          + f'  for (int i = 0; i < {k}; ++i) xs[i] = x[i];\n'
          + (f'  for (int i = {k}; i < {span}; ++i) xs[i] = 0;\n'
             if span > k else '')
          + (f'  for (int i = 0; i < {k}; ++i) sx += x[i];\n' if fix else '')
          + f'  for (int j = 0; j < {n}; ++j) {{\n'
          f'    const {wtype} *w = {arr} + j * {row};\n' + unpack +
          '    int32_t acc = 0;\n'
          f'    for (int i = 0; i < {span}; ++i) acc += xs[i] * {term};\n'
          f'    y[j] = acc{fix};\n'
          '  }\n')


def _axpy(m: Matrix, name: str, data: _Data) -> str:
  """Dense, a stored row per input: y += x_i w_i over the contiguous outputs
  (for K not a multiple of 8, such as a narrow input)."""
  k, n = m.q.shape
  wtype, arr, row, weight = _weights(m, name, data, False)
  fix = _zero_fix(m, name, data, 'j')
  if 'NIBBLE' in weight:
    half = row
    inner = (f'    for (int p = 0; p < {half}; ++p) y[p] += xi * '
             f'{weight.replace("NIBBLE", "w[p] & 15")};\n'
             f'    for (int p = 0; p < {half}; ++p) y[{half} + p] += xi * '
             f'{weight.replace("NIBBLE", "w[p] >> 4")};\n')
    slots = 2 * half
  else:
    inner = (f'    for (int j = 0; j < {n}; ++j) y[j] += xi * '
             f'{weight.replace("IDX", "j")};\n')
    slots = n
  out = (f'  int32_t t[{slots}];\n'
         + ('  int32_t sx = 0;\n' if fix else '')
         + f'  for (int j = 0; j < {slots}; ++j) t[j] = 0;\n'
         f'  for (int i = 0; i < {k}; ++i) {{\n'
         '    const int32_t xi = x[i];\n'
         '    if (xi == 0) continue;\n'
         + ('    sx += xi;\n' if fix else '') +
         f'    const {wtype} *w = {arr} + i * {row};\n'
         + inner.replace('y[', 't[') + '  }\n'
         f'  for (int j = 0; j < {n}; ++j) y[j] = t[j]{fix};\n')
  return out


def _requant(rq: Requant, name: str, data: _Data) -> tuple[str, str]:
  """(M(j), S(j)) macro names of a kernel's per-column multipliers."""
  m = data.per_column(f'rnnc_{name}_m', rq.m)
  s = data.per_column(f'rnnc_{name}_s', rq.shift, signed=False)
  return m, s


def _bias(values: np.ndarray, name: str, data: _Data) -> str:
  return data.array(_int_type(values), f'rnnc_{name}', values)


# ----------------------------------------------------------------------------
# The library


_PRIMITIVES = r"""
#define WIDE ((int32_t)1 << 24)

static int32_t sat_wide(int64_t v) {
  return v > WIDE ? WIDE : v < -WIDE ? -WIDE : (int32_t)v;
}

/* (v + 2^(s-1)) >> s, s >= 1: round half up (>> of a negative value is an
   arithmetic shift on every compiler this targets). */
static int64_t shift_round(int64_t v, int s) {
  return (v + ((int64_t)1 << (s - 1))) >> s;
}

static int32_t rq(int32_t acc, int32_t m, int32_t s) {
  return sat_wide(shift_round((int64_t)acc * m, (int)s));
}

static int32_t clip_h(int64_t v) {
  return v > RNNC_HMAX ? RNNC_HMAX : v < -RNNC_HMAX ? -RNNC_HMAX : (int32_t)v;
}

/* sigmoid of Q12, Q15: 65-entry table, step 1/8, linear interpolation. */
static int32_t sigmoid_q15(int32_t a) {
  int32_t x = a < 0 ? -a : a;
  if (x > 32767) x = 32767;
  const int32_t i = x >> 9, f = x & 511;
  const int32_t lo = rnnc_sigmoid[i], hi = rnnc_sigmoid[i + 1];
  const int32_t y = lo + (((hi - lo) * f + 256) >> 9);
  return a >= 0 ? y : 32768 - y;
}

static int32_t tanh_q15(int32_t a) { return 2 * sigmoid_q15(2 * a) - 32768; }
"""

_EXP = r"""
/* exp(-u / 4096), u >= 0 (Q12), Q15: 2^-(u log2 e) from a 17-entry table. */
static int32_t exp_q15(int32_t u) {
  if (u > 131071) u = 131071;
  const int32_t w = (int32_t)(((int64_t)u * 23637 + 8192) >> 14);
  const int32_t n = w >> 12, fr = w & 4095, k = fr >> 8, t = fr & 255;
  const int32_t lo = rnnc_exp2[k], hi = rnnc_exp2[k + 1];
  const int32_t p = lo - (((lo - hi) * t + 128) >> 8);
  return n >= 16 ? 0 : p >> n;
}
"""

_DIV = r"""
/* n / d rounded half away from zero (d > 0). */
static int64_t div_round(int64_t n, int64_t d) {
  const int64_t mag = ((n < 0 ? -n : n) + d / 2) / d;
  return n < 0 ? -mag : mag;
}
"""

_CELLS = {
    'gru': r"""
/* GRU, linear before reset; gh's n block already holds h.U_n + b_hn. */
static void cell_update(int8_t *h, const int32_t *gx, const int32_t *gh) {
  for (int j = 0; j < RNNC_HIDDEN; ++j) {
    const int32_t r = sigmoid_q15(gx[j] + gh[j]);
    const int32_t z = sigmoid_q15(gx[RNNC_HIDDEN + j] + gh[RNNC_HIDDEN + j]);
    const int32_t hn = gh[2 * RNNC_HIDDEN + j];
    const int32_t n = tanh_q15(gx[2 * RNNC_HIDDEN + j]
                               + (int32_t)shift_round((int64_t)r * hn, 15));
    const int64_t num = (int64_t)(32768 - z) * n * RNNC_HMAX
                        + (int64_t)z * h[j] * 32768;
    h[j] = (int8_t)clip_h(shift_round(num, 30));
  }
}
""",
    'lstm': r"""
/* LSTM: c in Q4.11 (int16, saturating). */
static void cell_update(int8_t *h, int16_t *c, const int32_t *gx,
                        const int32_t *gh) {
  for (int j = 0; j < RNNC_HIDDEN; ++j) {
    const int32_t i = sigmoid_q15(gx[j] + gh[j]);
    const int32_t f = sigmoid_q15(gx[RNNC_HIDDEN + j] + gh[RNNC_HIDDEN + j]);
    const int32_t g = tanh_q15(gx[2 * RNNC_HIDDEN + j]
                               + gh[2 * RNNC_HIDDEN + j]);
    const int32_t o = sigmoid_q15(gx[3 * RNNC_HIDDEN + j]
                                  + gh[3 * RNNC_HIDDEN + j]);
    int64_t cn = shift_round((int64_t)f * c[j]
                             + shift_round((int64_t)i * g, 4), 15);
    cn = cn > 32767 ? 32767 : cn < -32768 ? -32768 : cn;
    const int32_t tc = tanh_q15((int32_t)cn * 2);
    h[j] = (int8_t)clip_h(shift_round((int64_t)o * tc * RNNC_HMAX, 30));
    c[j] = (int16_t)cn;
  }
}
""",
    'rnn': r"""
/* Elman RNN. */
static void cell_update(int8_t *h, const int32_t *gx, const int32_t *gh) {
  for (int j = 0; j < RNNC_HIDDEN; ++j) {
    const int32_t t = tanh_q15(gx[j] + gh[j]);
    h[j] = (int8_t)clip_h(shift_round((int64_t)t * RNNC_HMAX, 15));
  }
}
""",
}


def _name(path: str) -> str:
  parts = path.split('/')
  if parts[0] == 'rnn':
    layer = parts[1].split('_')[1]
    return f'l{layer}_' + {'input_kernel': 'in',
                           'recurrent_kernel': 'rec'}[parts[2]]
  return {'attention': 'att', 'head': 'head', 'embed': 'embed'}[parts[0]]


def _mv_scratch(m: Matrix) -> int:
  """Stack bytes of a matrix-vector function, at most (the dense forms')."""
  k, n = m.q.shape
  return 4 * (k + 1) if k % 8 == 0 else 4 * (n + 1)


def _sizes(prog: Program) -> dict[str, int]:
  """State bytes (the C layout of `rnnc_state`) and stack scratch bytes.

  The scratch is the larger of a step's (its gate accumulators and the
  largest matrix-vector function's buffers) and the output's (the head's
  accumulators, the pooled vector and the head's buffers); for a language
  model, whose step runs the head, their sum.
  """
  h, layers = prog.hidden, len(prog.layers)
  fields = [(1, layers * h)]  # int8 h
  if prog.cell == 'lstm':
    fields.append((2, 2 * layers * h))
  fields.append((4, 4))  # count
  if prog.pooling == 'mean':
    fields.append((4, 4 * h))
  if prog.pooling == 'attention':
    fields += [(4, 4), (8, 8), (8, 8 * h)]
  offset, align = 0, 1
  for a, size in fields:
    offset = -(-offset // a) * a + size
    align = max(align, a)
  state = -(-offset // align) * align
  gates = max(l.input.q.shape[1] for l in prog.layers)
  kernels = [m for l in prog.layers for m in (l.input, l.recurrent)]
  step = 2 * 4 * gates + max(_mv_scratch(m) for m in kernels)
  if prog.attention is not None:
    step = max(step, 2 * 4 * gates + 4 + _mv_scratch(prog.attention))
  out = 4 * prog.output_dim + h + _mv_scratch(prog.head)
  scratch = step + out if prog.task == 'language_model' else max(step, out)
  return {'state_bytes': state, 'scratch_bytes': scratch,
          'ram_bytes': state + scratch}


def generate(prog: Program, label: str = '', name: str = ''
             ) -> dict[str, str]:
  """The library's files (see the module docstring) for a lowered program.

  Args:
    prog: `deploy.integer.lower(artifact)`.
    label: what the files' comment says they were generated from.
    name: the artifact's file name, for the error message.

  Raises:
    InputError: a dynamic input scale (the C runtime needs a static one).
  """
  if prog.mode != 'static':
    where = f'artifact {name}: ' if name else ''
    raise InputError(f'{where}activations.mode {prog.mode!r}: the C runtime '
                     "needs a static input scale ('dynamic' runs with "
                     '--runtime=int only)')
  data = _Data()
  h, g = prog.hidden, prog.gates
  lm = prog.task == 'language_model'
  funcs = []
  data.array('int16_t', 'rnnc_sigmoid', integer.SIGMOID_TABLE)
  if prog.attention is not None:
    data.array('uint16_t', 'rnnc_exp2', integer.EXP2_TABLE)
  layer_funcs = []
  for i, layer in enumerate(prog.layers):
    funcs += [_matvec(layer.input, f'l{i}_in', data),
              _matvec(layer.recurrent, f'l{i}_rec', data)]
    mi, si = _requant(layer.input_rq, f'l{i}_in', data)
    mr, sr = _requant(layer.recurrent_rq, f'l{i}_rec', data)
    bias = _bias(layer.bias, f'l{i}_bias', data)
    rbias = ''
    if prog.cell == 'gru':
      arr = _bias(layer.recurrent_bias, f'l{i}_rbias', data)
      rbias = (f'  for (int j = 0; j < {h}; ++j)\n'
               f'    gh[{2 * h} + j] = sat_wide((int64_t)gh[{2 * h} + j] + '
               f'{arr}[j]);\n')
    c_arg = 'int16_t *c, ' if prog.cell == 'lstm' else ''
    c_use = 'c, ' if prog.cell == 'lstm' else ''
    layer_funcs.append(
        f'static void layer_{i}(int8_t *h, {c_arg}const int8_t *in, '
        'int32_t *gx, int32_t *gh) {\n'
        f'  mv_l{i}_in(in, gx);\n'
        f'  mv_l{i}_rec(h, gh);\n'
        f'  for (int j = 0; j < {g * h}; ++j) {{\n'
        f'    gx[j] = rq(gx[j], {mi}(j), {si}(j)) + {bias}[j];\n'
        f'    gh[j] = rq(gh[j], {mr}(j), {sr}(j));\n'
        '  }\n' + rbias +
        f'  cell_update(h, {c_use}gx, gh);\n'
        '}\n')
  if prog.attention is not None:
    funcs.append(_matvec(prog.attention, 'att', data))
    ma, sa = _requant(prog.attention_rq, 'att', data)
  funcs.append(_matvec(prog.head, 'head', data))
  mh, sh = _requant(prog.head_rq, 'head', data)
  hbias = _bias(prog.head_bias, 'head_bias', data)
  if lm:
    data.array('int8_t', 'rnnc_embed', prog.embedding)
  gates_pad = max(l.input.q.shape[1] for l in prog.layers)
  out_pad = prog.output_dim

  # rnnc.h
  cell_state = (f'  int16_t c[{len(prog.layers)}][{h}];  /* LSTM cell states, '
                'Q4.11 */\n' if prog.cell == 'lstm' else '')
  pool_state = ''
  if prog.pooling == 'mean':
    pool_state = f'  int32_t sum[{h}];  /* mean pooling: sum of top h */\n'
  elif prog.pooling == 'attention':
    pool_state = ('  int32_t max;  /* attention: running max score, Q12 */\n'
                  '  int64_t total;  /* sum of exp(score - max), Q15 */\n'
                  f'  int64_t acc[{h}];  /* sum of exp(.) * h */\n')
  if lm:
    api = ('void rnnc_reset(rnnc_state *state);\n'
           '/* One token in, the next token\'s logits (int32 Q16) out. */\n'
           'void rnnc_step(rnnc_state *state, int32_t token,\n'
           '               int32_t logits[RNNC_OUTPUT_DIM]);\n'
           '/* steps tokens; logits: steps x RNNC_OUTPUT_DIM. */\n'
           'void rnnc_predict(const int32_t *tokens, int32_t steps, '
           'int32_t *logits);\n')
  else:
    api = ('void rnnc_reset(rnnc_state *state);\n'
           '/* One time step: x int8, quantized with RNNC_INPUT_SCALE. */\n'
           'void rnnc_step(rnnc_state *state, const int8_t '
           'x[RNNC_INPUT_DIM]);\n'
           '/* The output (int32 Q16) for the steps seen so far. */\n'
           'void rnnc_output(const rnnc_state *state, '
           'int32_t out[RNNC_OUTPUT_DIM]);\n'
           '/* One whole sequence: x is steps x RNNC_INPUT_DIM. */\n'
           'void rnnc_predict(const int8_t *x, int32_t steps,\n'
           '                  int32_t out[RNNC_OUTPUT_DIM]);\n')
  header = (
      f'/* Integer-only {prog.cell.upper()} {prog.task} generated from '
      f'{label or "an artifact"} by deploy/c.py. */\n'
      '#ifndef RNNC_H_\n#define RNNC_H_\n\n#include <stdint.h>\n\n'
      f'#define RNNC_CELL {_CELL_IDS[prog.cell]}  /* 1 GRU, 2 LSTM, 3 RNN */\n'
      f'#define RNNC_LAYERS {len(prog.layers)}\n'
      f'#define RNNC_HIDDEN {h}\n'
      f'#define RNNC_INPUT_DIM {prog.input_dim}\n'
      f'#define RNNC_OUTPUT_DIM {prog.output_dim}\n'
      '/* Largest hidden and input code (2^(bits-1) - 1); h = code / HMAX. */\n'
      f'#define RNNC_HMAX {prog.h_max}\n'
      + (f'#define RNNC_VOCAB {len(prog.embedding)}\n' if lm else '') +
      '/* Outputs are int32 with 16 fractional bits: value = out / 65536. */\n'
      f'#define RNNC_OUTPUT_FRAC {integer.OUT_FRAC}\n'
      + ('' if lm else
         '/* For the caller (the library itself is integer-only):\n'
         '   x_q = clip(round(x / RNNC_INPUT_SCALE), -RNNC_HMAX, RNNC_HMAX). '
         '*/\n'
         f'#define RNNC_INPUT_SCALE {prog.input_scale!r}\n') +
      '\ntypedef struct {\n'
      f'  int8_t h[{len(prog.layers)}][{h}];  /* hidden states, scale '
      '1/RNNC_HMAX */\n' + cell_state +
      '  int32_t count;  /* steps seen */\n' + pool_state +
      '} rnnc_state;\n\n' + api + '\n#endif  /* RNNC_H_ */\n')

  # rnnc.c
  code = ['/* Generated by deploy/c.py: integer-only inference (see rnnc.h). '
          '*/\n#include "rnnc.h"\n#include "rnnc_data.h"\n',
          _PRIMITIVES]
  if prog.attention is not None:
    code.append(_EXP)
  if prog.pooling in ('mean', 'attention'):
    code.append(_DIV)
  code.append(_CELLS[prog.cell])
  code += funcs + layer_funcs
  c_args = ['state->c[%d], ' % i if prog.cell == 'lstm' else ''
            for i in range(len(prog.layers))]
  layer_calls = ''.join(
      f'  layer_{i}(state->h[{i}], {c_args[i]}'
      f'{"in" if i == 0 else f"state->h[{i - 1}]"}, gx, gh);\n'
      for i in range(len(prog.layers)))
  top = f'state->h[{len(prog.layers) - 1}]'
  pool_update = ''
  if prog.pooling == 'mean':
    pool_update = (f'  for (int k = 0; k < {h}; ++k) state->sum[k] += '
                   f'{top}[k];\n')
  elif prog.pooling == 'attention':
    pool_update = (
        '  {\n'
        '    int32_t sc[1];\n'
        f'    mv_att({top}, sc);\n'
        f'    const int32_t e = rq(sc[0], {ma}(0), {sa}(0));\n'
        f'    const int8_t *t = {top};\n'
        '    if (state->count == 0) {\n'
        '      state->max = e;\n'
        '      state->total = 32768;\n'
        f'      for (int k = 0; k < {h}; ++k) state->acc[k] = '
        '(int64_t)32768 * t[k];\n'
        '    } else if (e > state->max) {\n'
        '      const int64_t f = exp_q15(e - state->max);\n'
        '      state->total = shift_round(state->total * f, 15) + 32768;\n'
        f'      for (int k = 0; k < {h}; ++k)\n'
        '        state->acc[k] = shift_round(state->acc[k] * f, 15)\n'
        '                        + (int64_t)32768 * t[k];\n'
        '      state->max = e;\n'
        '    } else {\n'
        '      const int64_t w = exp_q15(state->max - e);\n'
        '      state->total += w;\n'
        f'      for (int k = 0; k < {h}; ++k) state->acc[k] += w * t[k];\n'
        '    }\n'
        '  }\n')
  head_fn = (
      f'static void head(const int8_t *p, int32_t *out) {{\n'
      f'  int32_t acc[{out_pad}];\n'
      '  mv_head(p, acc);\n'
      f'  for (int j = 0; j < {prog.output_dim}; ++j) {{\n'
      f'    int64_t v = shift_round((int64_t)acc[j] * {mh}(j), {sh}(j));\n'
      '    const int64_t lim = (int64_t)1 << 40;\n'
      '    v = v > lim ? lim : v < -lim ? -lim : v;\n'
      f'    v += {hbias}[j];\n'
      '    out[j] = v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN\n'
      '             : (int32_t)v;\n'
      '  }\n}\n')
  code.append(head_fn)
  reset = ('void rnnc_reset(rnnc_state *state) {\n'
           '  uint8_t *b = (uint8_t *)state;\n'
           '  for (unsigned i = 0; i < sizeof *state; ++i) b[i] = 0;\n}\n')
  code.append(reset)
  if lm:
    vocab = len(prog.embedding)
    code.append(
        'void rnnc_step(rnnc_state *state, int32_t token,\n'
        '               int32_t logits[RNNC_OUTPUT_DIM]) {\n'
        f'  int32_t gx[{gates_pad}], gh[{gates_pad}];\n'
        f'  if (token < 0) token = 0;\n  if (token > {vocab - 1}) '
        f'token = {vocab - 1};\n'
        f'  const int8_t *in = rnnc_embed + token * {prog.input_dim};\n'
        + layer_calls +
        '  state->count += 1;\n'
        f'  head({top}, logits);\n}}\n\n'
        'void rnnc_predict(const int32_t *tokens, int32_t steps, '
        'int32_t *logits) {\n'
        '  rnnc_state state;\n  rnnc_reset(&state);\n'
        '  for (int32_t t = 0; t < steps; ++t)\n'
        '    rnnc_step(&state, tokens[t], logits + t * RNNC_OUTPUT_DIM);\n'
        '}\n')
  else:
    if prog.pooling == 'last':
      pooled = f'  const int8_t *p = {top};\n'
    elif prog.pooling == 'mean':
      pooled = (f'  int8_t p[{h}];\n'
                f'  for (int k = 0; k < {h}; ++k)\n'
                '    p[k] = (int8_t)(state->count > 0\n'
                '        ? clip_h(div_round(state->sum[k], state->count)) : 0);'
                '\n')
    else:
      pooled = (f'  int8_t p[{h}];\n'
                f'  for (int k = 0; k < {h}; ++k)\n'
                '    p[k] = (int8_t)(state->count > 0\n'
                '        ? clip_h(div_round(state->acc[k], state->total)) : 0);'
                '\n')
    code.append(
        'void rnnc_step(rnnc_state *state, const int8_t x[RNNC_INPUT_DIM]) '
        '{\n'
        f'  int32_t gx[{gates_pad}], gh[{gates_pad}];\n'
        '  const int8_t *in = x;\n' + layer_calls + pool_update +
        '  state->count += 1;\n}\n\n'
        'void rnnc_output(const rnnc_state *state, '
        'int32_t out[RNNC_OUTPUT_DIM]) {\n' + pooled +
        '  head(p, out);\n}\n\n'
        'void rnnc_predict(const int8_t *x, int32_t steps,\n'
        '                  int32_t out[RNNC_OUTPUT_DIM]) {\n'
        '  rnnc_state state;\n  rnnc_reset(&state);\n'
        '  for (int32_t t = 0; t < steps; ++t)\n'
        '    rnnc_step(&state, x + t * RNNC_INPUT_DIM);\n'
        '  rnnc_output(&state, out);\n}\n')
  data_h = ('/* Generated by deploy/c.py: the weights and tables of rnnc_data.c'
            ' and per-tensor constants. */\n#ifndef RNNC_DATA_H_\n'
            '#define RNNC_DATA_H_\n\n#include <stdint.h>\n\n'
            + '\n'.join(data.decls) + '\n\n' + '\n'.join(data.macros)
            + '\n\n#endif  /* RNNC_DATA_H_ */\n')
  data_c = ('/* Generated by deploy/c.py: weights and tables (const, '
            'flash). */\n#include "rnnc_data.h"\n\n' + '\n'.join(data.defs))
  return {'rnnc.h': header, 'rnnc.c': '\n'.join(code), 'rnnc_data.c': data_c,
          'rnnc_data.h': data_h}


# ----------------------------------------------------------------------------
# Compiling


def compiler() -> str | None:
  """The C compiler: `$CC` if set, else `cc`, when on PATH; else None."""
  return shutil.which(os.environ.get('CC') or 'cc')


def _need_compiler(what: str) -> str:
  cc = compiler()
  if cc is None:
    raise InputError(f'{what}: no C compiler found (set $CC or install cc, '
                     'e.g. gcc)')
  return cc


def _compile(cc: str, args: list[str], cwd: str) -> None:
  run = subprocess.run([cc, *args], cwd=cwd, capture_output=True, text=True,
                       check=False)
  if run.returncode != 0:
    raise RuntimeError(f'C compilation failed ({" ".join(args)}):\n'
                       f'{run.stderr[-4000:]}')


def object_sizes(cc: str, directory: str, extra: tuple[str, ...] = ()
                 ) -> dict[str, int] | None:
  """`size` of the compiled library: weights + tables, code, flash.

  Args:
    cc: the compiler.
    directory: holds the generated files.
    extra: more compiler flags (e.g. '-O3').

  Returns:
    {'weights_bytes', 'code_bytes', 'flash_bytes'} (text + data), or None
    without a `size` tool.
  """
  for src in ('rnnc.c', 'rnnc_data.c'):
    _compile(cc, [*CFLAGS, *extra, '-c', src, '-o', src[:-2] + '.o'],
             directory)
  tool = shutil.which(os.environ.get('SIZE') or 'size')
  if tool is None:
    return None
  out = {}
  for obj, key in (('rnnc_data.o', 'weights_bytes'), ('rnnc.o', 'code_bytes')):
    run = subprocess.run([tool, obj], cwd=directory, capture_output=True,
                         text=True, check=True)
    text, data_ = run.stdout.splitlines()[1].split()[:2]
    out[key] = int(text) + int(data_)
  out['flash_bytes'] = out['weights_bytes'] + out['code_bytes']
  return out


def _write_files(directory: str, files: dict[str, str]) -> None:
  for fname, text in files.items():
    with open(os.path.join(directory, fname), 'w', encoding='utf-8') as f:
      f.write(text)


def _label(artifact: Any, path: str) -> str:
  return f'{os.path.basename(path)} ({artifact.header.get("config", "")})'


def export(artifact: Any, path: str, out: str) -> dict:
  """`--export_c=DIR`: writes the C library of an artifact (atomically).

  Args:
    artifact: `compression.export.read(path)`.
    path: the artifact's path (for messages and the files' comment).
    out: the directory to write; an existing one is replaced only when it
      holds nothing but a previous export's files.

  Returns:
    {'bytes' (of the files written), 'files', 'flash_bytes',
    'weights_bytes', 'code_bytes' (None without a compiler), 'ram_bytes',
    'state_bytes', 'scratch_bytes'}.

  Raises:
    InputError: the artifact has no integer form, or `out` is in use.
  """
  prog = integer.lower(artifact, os.path.basename(path))
  files = generate(prog, _label(artifact, path), os.path.basename(path))
  out = os.path.abspath(out)
  if os.path.exists(out) and not (
      os.path.isdir(out) and set(os.listdir(out)) <= set(FILES)):
    raise InputError(f'--export_c: {out} exists and is not a previous C '
                     'export; give a new directory')
  parent = os.path.dirname(out)
  if not os.path.isdir(parent):
    raise InputError(f'--export_c: the parent directory {parent} does not '
                     'exist')
  report: dict[str, Any] = {'files': list(FILES), **_sizes(prog)}
  cc = compiler()
  with tempfile.TemporaryDirectory(prefix='rnnc_size_') as build:
    _write_files(build, files)
    sizes = object_sizes(cc, build) if cc else None
  report.update(sizes or {'flash_bytes': None, 'weights_bytes': None,
                          'code_bytes': None})
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.', dir=parent)
  try:
    _write_files(tmp, files)
    if os.path.exists(out):
      old = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.old.',
                             dir=parent)
      os.rename(out, os.path.join(old, 'x'))
      os.rename(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  report['bytes'] = sum(len(t.encode('utf-8')) for t in files.values())
  return report


_DRIVER = r"""
/* Test driver: sequences from a binary file in, int32 outputs to another. */
#include <stdio.h>
#include <stdlib.h>
#include "rnnc.h"

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
  if (!in || !out) return 3;
  int32_t n, t;
  if (fread(&n, 4, 1, in) != 1 || fread(&t, 4, 1, in) != 1) return 4;
#if LM
  int32_t *x = malloc(sizeof(int32_t) * (size_t)(t > 0 ? t : 1));
  int32_t *y = malloc(sizeof(int32_t) * (size_t)(t > 0 ? t : 1)
                      * RNNC_OUTPUT_DIM);
#else
  int8_t *x = malloc((size_t)(t > 0 ? t : 1) * RNNC_INPUT_DIM);
  int32_t y[RNNC_OUTPUT_DIM];
#endif
  for (int32_t s = 0; s < n; ++s) {
    int32_t len;
    if (fread(&len, 4, 1, in) != 1 || len < 0 || len > t) return 5;
#if LM
    if (fread(x, 4, (size_t)len, in) != (size_t)len) return 6;
    rnnc_predict(x, len, y);
    fwrite(y, 4, (size_t)len * RNNC_OUTPUT_DIM, out);
#else
    if (fread(x, 1, (size_t)len * RNNC_INPUT_DIM, in)
        != (size_t)len * RNNC_INPUT_DIM) return 6;
    rnnc_predict(x, len, y);
    fwrite(y, 4, RNNC_OUTPUT_DIM, out);
#endif
  }
  fclose(out);
  return 0;
}
"""


def build(prog: Program, directory: str, label: str = '',
          extra: tuple[str, ...] = ()) -> tuple[str, dict]:
  """Generates and compiles the library with the test driver.

  Args:
    prog: the lowered program.
    directory: an empty working directory.
    label: the artifact's name for the files' comment.
    extra: more compiler flags.

  Returns:
    (the driver executable, the sizes of `object_sizes`).
  """
  cc = _need_compiler('--runtime=c')
  files = generate(prog, label)
  _write_files(directory, files)
  with open(os.path.join(directory, 'main.c'), 'w', encoding='utf-8') as f:
    f.write(_DRIVER)
  sizes = object_sizes(cc, directory, extra) or {}
  lm = '1' if prog.task == 'language_model' else '0'
  exe = os.path.join(directory, 'rnnc_run')
  _compile(cc, ['-std=c99', '-O2', f'-DLM={lm}', *extra, 'main.c',
                'rnnc.o', 'rnnc_data.o', '-o', exe], directory)
  return exe, sizes


def predict(prog: Program, exe: str, directory: str, batches: list[dict]
            ) -> list[np.ndarray]:
  """Every batch through the compiled driver: int64 outputs per batch."""
  lm = prog.task == 'language_model'
  steps = max(int(np.asarray(b['x']).shape[1]) for b in batches)
  chunks = [np.array([sum(len(b['lengths']) for b in batches), steps],
                     np.int32).tobytes()]
  for b in batches:
    x = np.asarray(b['x'])
    q = (np.asarray(x, np.int32) if lm
         else integer.quantize_input(x, prog.input_scale,
                                     prog.h_max).astype(np.int8))
    for row, n in zip(q, np.asarray(b['lengths'])):
      n = int(n)
      chunks.append(np.array([n], np.int32).tobytes())
      chunks.append(np.ascontiguousarray(row[:n]).tobytes())
  src = os.path.join(directory, 'inputs.bin')
  dst = os.path.join(directory, 'outputs.bin')
  with open(src, 'wb') as f:
    f.write(b''.join(chunks))
  run = subprocess.run([exe, src, dst], capture_output=True, text=True,
                       check=False)
  if run.returncode != 0:
    raise RuntimeError(f'the compiled C runtime failed ({run.returncode}): '
                       f'{run.stderr[-2000:]}')
  flat = np.fromfile(dst, np.int32).astype(np.int64)
  outs, at = [], 0
  for b in batches:
    lengths = np.asarray(b['lengths'])
    if lm:
      t = np.asarray(b['x']).shape[1]
      zero = integer.head(prog, np.zeros((1, prog.hidden), np.int64))
      batch = np.broadcast_to(zero, (len(lengths), t, prog.output_dim)).copy()
      for i, n in enumerate(lengths):
        size = int(n) * prog.output_dim
        batch[i, :int(n)] = flat[at:at + size].reshape(int(n), -1)
        at += size
    else:
      size = len(lengths) * prog.output_dim
      batch = flat[at:at + size].reshape(len(lengths), -1)
      at += size
    outs.append(batch)
  if at != flat.size:
    raise RuntimeError('the compiled C runtime wrote an unexpected number of '
                       f'outputs ({flat.size}, expected {at})')
  return outs


def run(artifact: Any, path: str, batches: list[dict]
        ) -> tuple[list[np.ndarray], dict]:
  """`--runtime=c`: each batch's outputs through the compiled library."""
  prog = integer.lower(artifact, os.path.basename(path))
  # Refuses what C cannot run before compiling anything.
  generate(prog, name=os.path.basename(path))
  _need_compiler('--runtime=c')
  with tempfile.TemporaryDirectory(prefix='rnnc_c_') as tmp:
    exe, sizes = build(prog, tmp, _label(artifact, path))
    outs = predict(prog, exe, tmp, batches)
  extras = {**sizes, **_sizes(prog)}
  return [integer.to_float(o) for o in outs], extras
