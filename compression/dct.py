"""DCT-domain compression: kernels trained as masked 2-D DCT-II coefficients.

A matched kernel W (m, n) is cut into blocks of (bm, bn) (`block` = b gives
b x b blocks as in JPEG; `block` = 0 one block, the whole matrix) and each
block X is replaced by its orthonormal 2-D DCT-II `C = D_bm X D_bn^T`, where

  D_N[k, i] = s_k cos(pi (2 i + 1) k / (2 N)),  s_0 = sqrt(1/N), s_k = sqrt(2/N)

is orthonormal (D D^T = I), so the inverse is `X = D_bm^T C D_bn` and the
squared Frobenius norm is preserved. Coefficients stay in place: block (I, J)'s
coefficient (k, l) sits at row I*bm + k, column J*bn + l of an (m, n) grid,
which replaces the kernel leaf in params (the trainable values).

`init` keeps the largest-magnitude fraction `keep` of each kernel's
coefficients (`round(keep * m * n)`, at least 1; ties broken by position), or,
when `threshold` > 0, every coefficient with |c| >= threshold; the boolean
mask, in the state, never changes. `apply` multiplies by the mask (so dropped
coefficients get no gradient), optionally fake-quantizes the kept values
(`bits`, straight-through gradient) and takes the inverse DCT: the dense
kernel the model runs with.

Export (`export(params, state)` -> `{path: entry}`), fields of an entry:

  ==========  ================  ===============================================
  field       type              meaning
  ==========  ================  ===============================================
  rows, cols  int               kernel shape (m, n)
  block_rows  int               block shape (bm, bn); (m, n) for whole-matrix
  block_cols  int
  count       int               number K of kept coefficients
  bitmap      uint8 (ceil(mn/8))  kept positions, one bit per grid cell in
                                row-major order, MSB first (np.packbits);
                                stored when smaller than `index`
  index       uint16 / uint32   or: the K kept flat positions, ascending
  values      float32 (K,)      bits = 0: kept coefficients, ascending position
  codes       int8 (K,)         bits = 8: value = code * scale
              uint8 packed      bits 2..7: (code + 2^(bits-1) - 1) in `bits`
                                bits each, MSB first, concatenated, packbits
  scale       float32           bits > 0: max |kept| / (2^(bits-1) - 1)
  bits        int               0 (float32 values) or 2..8
  ==========  ================  ===============================================

`decode(entry)` rebuilds the dense float32 kernel (equal to `apply`'s to float
rounding).

Example:
  c.compression.methods = 'dct'
  c.compression.dct = dct.config(keep=0.25, block=8)
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from compression import core
from compression.errors import InputError

Params = core.Params

_FIELD = 'compression.dct'


def config(**overrides: Any) -> ml_collections.ConfigDict:
  """The `compression.dct` section with every key declared.

  Args:
    **overrides: values replacing the defaults below.

  Returns:
    A ConfigDict of scalars and strings.
  """
  c = ml_collections.ConfigDict()
  c.regex = r'.*recurrent_kernel'  # Kernels to transform (re.fullmatch).
  c.keep = 0.25  # Fraction of each kernel's coefficients kept, (0, 1].
  # Keep |c| >= threshold instead of a fraction; 0 = use `keep`.
  c.threshold = 0.0
  c.block = 8  # Square block side (must divide both kernel dims); 0 = whole.
  c.bits = 0  # Kept values stored as float32 (0) or 2..8-bit codes + scale.
  for k, v in overrides.items():
    c[k] = v
  return c


def _check_config(cfg: Any) -> None:
  if not 0.0 < cfg.keep <= 1.0:
    raise InputError(f'{_FIELD}.keep: {cfg.keep} outside (0, 1]')
  if cfg.threshold < 0:
    raise InputError(f'{_FIELD}.threshold: {cfg.threshold} must be >= 0 '
                     '(0 = use keep)')
  if isinstance(cfg.block, bool) or not isinstance(cfg.block, int) or (
      cfg.block < 0):
    raise InputError(f'{_FIELD}.block: {cfg.block!r} must be an integer >= 0 '
                     '(0 = whole matrix)')
  if cfg.bits != 0 and not 2 <= cfg.bits <= 8:
    raise InputError(f'{_FIELD}.bits: {cfg.bits} outside 2..8 (0 = float32)')


def dct_matrix(n: int) -> np.ndarray:
  """The orthonormal DCT-II matrix D (n, n): `D @ x` is the DCT of x.

  Args:
    n: transform length.

  Returns:
    float64 (n, n) with D D^T = I.
  """
  k = np.arange(n)[:, None]
  i = np.arange(n)[None, :]
  d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
  d[0] /= np.sqrt(2.0)
  return d


def block_shape(shape: tuple[int, int], block: int,
                where: str = 'kernel') -> tuple[int, int]:
  """(bm, bn) for a kernel of `shape`; raises InputError if b does not divide.

  Args:
    shape: (m, n).
    block: side b, or 0 for the whole matrix.
    where: the parameter path, for the error message.

  Returns:
    The block shape.
  """
  if not block:
    return tuple(shape)
  if shape[0] % block or shape[1] % block:
    raise InputError(f'{_FIELD}.block: {block} does not divide {where} of '
                     f'shape {tuple(shape)}; use a divisor of both or 0 '
                     '(whole matrix)')
  return block, block


def forward(w: Any, bm: int, bn: int, xp: Any = jnp) -> Any:
  """Blockwise orthonormal 2-D DCT-II of w (m, n), coefficients in place.

  Args:
    w: (m, n) matrix, m divisible by bm and n by bn.
    bm: block rows.
    bn: block columns.
    xp: the array module (`jax.numpy` in `apply`, `numpy` on host).

  Returns:
    (m, n) coefficients.
  """
  m, n = w.shape
  dm = xp.asarray(dct_matrix(bm), w.dtype)
  dn = xp.asarray(dct_matrix(bn), w.dtype)
  w4 = w.reshape(m // bm, bm, n // bn, bn)
  c4 = xp.einsum('ki,aibj,lj->akbl', dm, w4, dn)
  return c4.reshape(m, n)


def inverse(c: Any, bm: int, bn: int, xp: Any = jnp) -> Any:
  """The inverse of `forward`: `X = D_bm^T C D_bn` per block.

  Args:
    c: (m, n) coefficients.
    bm: block rows.
    bn: block columns.
    xp: the array module.

  Returns:
    (m, n) matrix.
  """
  m, n = c.shape
  dm = xp.asarray(dct_matrix(bm), c.dtype)
  dn = xp.asarray(dct_matrix(bn), c.dtype)
  c4 = c.reshape(m // bm, bm, n // bn, bn)
  w4 = xp.einsum('ki,akbl,lj->aibj', dm, c4, dn)
  return w4.reshape(m, n)


def top_mask(c: np.ndarray, keep: float = 0.0,
             threshold: float = 0.0) -> np.ndarray:
  """Boolean mask of the kept coefficients.

  Args:
    c: coefficients.
    keep: fraction kept by magnitude (round(keep * size), at least 1).
    threshold: when > 0, keep |c| >= threshold instead.

  Returns:
    Bool array shaped like c.
  """
  mag = np.abs(np.asarray(c, np.float64)).ravel()
  if threshold > 0:
    return (mag >= threshold).reshape(np.shape(c))
  k = max(1, int(round(keep * mag.size)))
  # Stable sort on -|c|: equal magnitudes keep the earlier position.
  order = np.argsort(-mag, kind='stable')[:k]
  mask = np.zeros(mag.size, bool)
  mask[order] = True
  return mask.reshape(np.shape(c))


def _qmax(bits: int) -> int:
  return 2 ** (bits - 1) - 1


def fake_quant(c: jax.Array, mask: jax.Array, bits: int) -> jax.Array:
  """Masked coefficients on a symmetric `bits` grid, straight-through.

  Args:
    c: coefficients.
    mask: kept positions.
    bits: 0 (no quantization) or 2..8.

  Returns:
    `c * mask`, rounded to multiples of `max|kept| / qmax` when bits > 0; the
    gradient passes to the kept coefficients unchanged.
  """
  c = c * mask
  if not bits:
    return c
  scale = _scale(jnp.max(jnp.abs(c)), bits)
  q = jnp.clip(jnp.round(c / scale), -_qmax(bits), _qmax(bits)) * scale
  return c + jax.lax.stop_gradient(q - c)


def _scale(max_abs: Any, bits: int) -> Any:
  # A zero kernel still needs a nonzero step to divide by.
  return jnp.where(max_abs > 0, max_abs / _qmax(bits), 1.0).astype(jnp.float32)


def _get(tree: Params, path: str) -> Any:
  for key in path.split('/'):
    tree = tree[key]
  return tree


def _set(tree: Params, path: str, value: Any) -> Params:
  head, _, rest = path.partition('/')
  out = dict(tree)
  out[head] = _set(tree.get(head, {}), rest, value) if rest else value
  return out


def _walk(tree: Params, prefix: str = '') -> list[tuple[str, Any]]:
  """(path, leaf) for every leaf of a nested dict, in key order."""
  found = []
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, Mapping):
      found.extend(_walk(value, path + '/'))
    else:
      found.append((path, value))
  return found


def dct(cfg: Any) -> core.Compressor:
  """The DCT-domain Compressor for a `config()` section.

  Args:
    cfg: the `compression.dct` ConfigDict.

  Returns:
    A Compressor whose params hold masked DCT coefficients at each matched
    kernel and whose state is a tree of the boolean masks (same paths).

  Raises:
    InputError: bad keep / threshold / block / bits (here), or, in `init`, a
      regex matching nothing or a block size not dividing a kernel.
  """
  _check_config(cfg)
  regex, block, bits = str(cfg.regex), int(cfg.block), int(cfg.bits)
  keep, threshold = float(cfg.keep), float(cfg.threshold)

  def init(params):
    chosen = core.select(params, regex, field=f'{_FIELD}.regex')
    paths = [core.path_str(p) for p, c in
             jax.tree_util.tree_flatten_with_path(chosen)[0] if c]
    # Shapes first, so a bad block fails before any kernel is transformed.
    for p in paths:
      shape = np.shape(_get(params, p))
      if len(shape) != 2:
        raise InputError(f'{_FIELD}.regex: {p} has shape {shape}; only 2-D '
                         'kernels are transformed')
      block_shape(shape, block, p)
    out, masks = params, {}
    for p in paths:
      w = np.asarray(_get(params, p), np.float64)
      bm, bn = block_shape(w.shape, block, p)
      c = forward(w, bm, bn, np)
      mask = top_mask(c, keep, threshold)
      out = _set(out, p, jnp.asarray(c * mask, jnp.float32))
      masks = _set(masks, p, jnp.asarray(mask))
    return out, masks

  def apply(params, state):
    out = params
    for p, mask in _walk(state):
      c = _get(params, p)
      bm, bn = block_shape(c.shape, block, p)
      out = _set(out, p, inverse(fake_quant(c, mask, bits), bm, bn))
    return out

  def update(params, state, grads, step):
    del grads, step
    return params, state

  def penalty(params, state):
    del params, state
    return jnp.zeros((), jnp.float32)

  def export(params, state):
    entries = {}
    for p, mask in _walk(state):
      c = np.asarray(_get(params, p), np.float32)
      mask = np.asarray(mask, bool)
      bm, bn = block_shape(c.shape, block, p)
      entries[p] = encode(c, mask, bm, bn, bits)
    return entries

  return core.Compressor(init, apply, update, penalty, export)


def encode(c: np.ndarray, mask: np.ndarray, bm: int, bn: int,
           bits: int) -> dict[str, Any]:
  """The export entry of one kernel's coefficients (fields in the docstring).

  Args:
    c: (m, n) float32 coefficients.
    mask: (m, n) bool kept positions.
    bm: block rows.
    bn: block columns.
    bits: 0 (float32 values) or 2..8.

  Returns:
    The entry dict.
  """
  m, n = c.shape
  flat = np.flatnonzero(mask.ravel())
  count = int(flat.size)
  entry: dict[str, Any] = {'rows': m, 'cols': n, 'block_rows': bm,
                           'block_cols': bn, 'count': count, 'bits': bits}
  index_dtype = np.uint16 if m * n <= 2 ** 16 else np.uint32
  bitmap_bytes = math.ceil(m * n / 8)
  if bitmap_bytes <= count * np.dtype(index_dtype).itemsize:
    entry['bitmap'] = np.packbits(mask.ravel())
  else:
    entry['index'] = flat.astype(index_dtype)
  values = c.ravel()[flat].astype(np.float32)
  if not bits:
    entry['values'] = values
    return entry
  # The same float32 arithmetic as `fake_quant`, so decode matches apply.
  max_abs = np.float32(np.max(np.abs(values))) if count else np.float32(0)
  scale = np.float32(max_abs / np.float32(_qmax(bits))) if max_abs > 0 else (
      np.float32(1.0))
  codes = np.clip(np.round(values / scale), -_qmax(bits), _qmax(bits))
  entry['scale'] = scale
  if bits == 8:
    entry['codes'] = codes.astype(np.int8)
  else:
    shifted = (codes + _qmax(bits)).astype(np.uint8)
    planes = np.unpackbits(shifted[:, None], axis=1)[:, 8 - bits:]
    entry['codes'] = np.packbits(planes.ravel())
  return entry


def decode(entry: Mapping[str, Any]) -> np.ndarray:
  """The dense float32 kernel of one exported entry.

  Args:
    entry: one value of `export(...)`.

  Returns:
    The (rows, cols) float32 kernel: the inverse DCT of the kept coefficients.
  """
  m, n = int(entry['rows']), int(entry['cols'])
  count, bits = int(entry['count']), int(entry['bits'])
  if 'bitmap' in entry:
    flat = np.flatnonzero(np.unpackbits(entry['bitmap'])[:m * n])
  else:
    flat = np.asarray(entry['index'], np.int64)
  if not bits:
    values = np.asarray(entry['values'], np.float32)
  else:
    if bits == 8:
      codes = np.asarray(entry['codes'], np.float32)
    else:
      planes = np.unpackbits(entry['codes'])[:count * bits].reshape(count, bits)
      weights = 2 ** np.arange(bits - 1, -1, -1)
      codes = (planes @ weights).astype(np.float32) - _qmax(bits)
    values = codes * np.float32(entry['scale'])
  c = np.zeros(m * n, np.float64)
  c[flat] = values
  w = inverse(c.reshape(m, n), int(entry['block_rows']),
              int(entry['block_cols']), np)
  return w.astype(np.float32)


METHODS = {'dct': dct}
