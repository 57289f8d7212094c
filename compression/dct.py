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

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from compression import core
from compression import records
from compression import transforms
from compression.transforms import dct_matrix  # noqa: F401  (re-exported)
from compression.errors import InputError

Params = core.Params

_FIELD = 'compression.dct'


def _bits(v: int) -> str | None:
  return None if v == 0 or 2 <= v <= 8 else f'{v} outside 2..8 (0 = float32)'


OPTIONS = core.Options(
    _FIELD,
    core.Option('regex', r'.*recurrent_kernel',
                'Kernels to transform (re.fullmatch on the parameter path).'),
    core.Option('keep', 0.25, "Fraction of each kernel's coefficients kept.",
                core.in_range(0, 1, lo_open=True)),
    core.Option('threshold', 0.0,
                'Keep |c| >= threshold instead of a fraction; 0 = use keep.',
                core.at_least(0)),
    core.Option('block', 8, 'Square block side (must divide both kernel '
                'dims); 0 = the whole matrix.', core.at_least(0)),
    core.Option('bits', 0, 'Kept values as float32 (0) or 2..8-bit codes and '
                'a scale.', _bits),
)
config = OPTIONS.config


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
  """Blockwise orthonormal 2-D DCT-II of w (`transforms.block_dct`)."""
  return transforms.block_dct(w, bm, bn, xp)


def inverse(c: Any, bm: int, bn: int, xp: Any = jnp) -> Any:
  """The inverse of `forward` (`transforms.block_idct`)."""
  return transforms.block_idct(c, bm, bn, xp)


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


def make(cfg: Any) -> core.Compressor:
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
  o = OPTIONS.parse(cfg)
  regex, block, bits, keep, threshold = (o.regex, o.block, o.bits, o.keep,
                                         o.threshold)

  def init(params):
    chosen = core.select(params, regex, field=f'{_FIELD}.regex')
    paths = [core.path_str(p) for p, c in
             jax.tree_util.tree_flatten_with_path(chosen)[0] if c]
    # Shapes first, so a bad block fails before any kernel is transformed.
    for p in paths:
      shape = np.shape(core.get_path(params, p))
      if len(shape) != 2:
        raise InputError(f'{_FIELD}.regex: {p} has shape {shape}; only 2-D '
                         'kernels are transformed')
      block_shape(shape, block, p)
    out, masks = params, {}
    for p in paths:
      w = np.asarray(core.get_path(params, p), np.float64)
      bm, bn = block_shape(w.shape, block, p)
      c = forward(w, bm, bn, np)
      mask = top_mask(c, keep, threshold)
      out = core.set_path(out, p, jnp.asarray(c * mask, jnp.float32))
      masks = core.set_path(masks, p, jnp.asarray(mask))
    return out, masks

  def apply(params, state):
    out = params
    for p, mask in _walk(state):
      c = core.get_path(params, p)
      bm, bn = block_shape(c.shape, block, p)
      out = core.set_path(out, p, inverse(fake_quant(c, mask, bits), bm, bn))
    return out

  def export(params, state):
    out = {}
    for p, mask in _walk(state):
      c = np.asarray(core.get_path(params, p), np.float32)
      mask = np.asarray(mask, bool)
      bm, bn = block_shape(c.shape, block, p)
      out[p] = encode(c, mask, bm, bn, bits)
    return out

  return core.Compressor(init=init, apply=apply, export=export)


def encode(c: np.ndarray, mask: np.ndarray, bm: int, bn: int,
           bits: int) -> records.Record:
  """The record of one kernel's kept coefficients.

  Args:
    c: (m, n) float32 coefficients.
    mask: (m, n) bool kept positions.
    bm: block rows.
    bn: block columns.
    bits: 0 (float32 values) or 2..8 (symmetric codes, one scale).

  Returns:
    A Record in the transform's domain: the kept positions, and their
    codes or float values.
  """
  positions = records.positions_of_mask(mask)
  transform = records.Transform('dct', (bm, bn))
  values = c.ravel()[positions].astype(np.float32)
  if not bits:
    kept = np.where(mask, c, np.float32(0)).astype(np.float32)
    return records.Record(positions=positions, transform=transform,
                          coefficients=kept)
  # The same float32 arithmetic as `fake_quant`, so decoding matches apply.
  count = int(positions.size)
  max_abs = np.float32(np.max(np.abs(values))) if count else np.float32(0)
  scale = np.float32(max_abs / np.float32(_qmax(bits))) if max_abs > 0 else (
      np.float32(1.0))
  codes = np.clip(np.round(values / scale), -_qmax(bits), _qmax(bits))
  u = np.zeros(c.size, np.uint8)
  u[positions] = (codes + _qmax(bits)).astype(np.uint8)
  return records.Record(
      positions=positions, transform=transform,
      codes=records.Codes(u=u, bits=bits,
                          scale=np.asarray([scale], np.float32)))


METHODS = {'dct': make}
