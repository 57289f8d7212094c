"""Orthonormal block transforms that a stored tensor may live in.

A `records.Transform` names one of `KINDS`; the artifact stores the
transform's coefficients and `inverse` rebuilds the tensor. The functions
take the array module (`numpy` on the host, `jax.numpy` inside a jitted
`apply`) so both sides run the same arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compression.errors import InputError

# 'dct': the blockwise orthonormal 2-D DCT-II. A stored leaf's node kind is
# its transform's name.
KINDS = ('dct',)


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


def block_dct(w: Any, bm: int, bn: int, xp: Any = np) -> Any:
  """Blockwise orthonormal 2-D DCT-II of w (m, n), coefficients in place.

  Args:
    w: (m, n) matrix, m divisible by bm and n by bn.
    bm: block rows.
    bn: block columns.
    xp: the array module.

  Returns:
    (m, n) coefficients.
  """
  m, n = w.shape
  dm = xp.asarray(dct_matrix(bm), w.dtype)
  dn = xp.asarray(dct_matrix(bn), w.dtype)
  w4 = w.reshape(m // bm, bm, n // bn, bn)
  c4 = xp.einsum('ki,aibj,lj->akbl', dm, w4, dn, **_exact(xp))
  return c4.reshape(m, n)


def block_idct(c: Any, bm: int, bn: int, xp: Any = np) -> Any:
  """The inverse of `block_dct`: `X = D_bm^T C D_bn` per block.

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
  w4 = xp.einsum('ki,akbl,lj->aibj', dm, c4, dn, **_exact(xp))
  return w4.reshape(m, n)


def _exact(xp: Any) -> dict:
  """Full float32 products under JAX: accelerators would otherwise use
  TF32 or bf16 passes, and the artifact's float64 decoding would disagree."""
  return {} if xp is np else {'precision': 'highest'}


def inverse(kind: str, coefficients: np.ndarray, block: tuple[int, int]
            ) -> np.ndarray:
  """The float32 tensor whose `kind` transform is `coefficients` (numpy).

  Raises:
    InputError: an unknown kind, or a block that does not tile the tensor.
  """
  if kind not in KINDS:
    raise InputError(f'transform {kind!r} unknown; valid: ' + ', '.join(KINDS))
  shape = np.shape(coefficients)
  br, bc = int(block[0]), int(block[1])
  if len(shape) != 2 or br < 1 or bc < 1 or shape[0] % br or shape[1] % bc:
    raise InputError('transform block shape does not divide the kernel')
  w = block_idct(np.asarray(coefficients, np.float64), br, bc, np)
  return np.asarray(w, np.float32)
