"""Tests of DCT-domain coefficient compression (compression/dct.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import accounting
from compression import dct
from compression.errors import InputError


def _params(m: int = 8, n: int = 16, seed: int = 0) -> dict:
  w = np.random.default_rng(seed).standard_normal((m, n))
  return {'layer_0': {'recurrent_kernel': jnp.asarray(w, jnp.float32),
                      'bias': jnp.zeros(n)}}


@pytest.mark.parametrize('n', [1, 2, 8, 12])
def test_dct_matrix_is_orthonormal(n):
  d = dct.dct_matrix(n)
  np.testing.assert_allclose(d @ d.T, np.eye(n), atol=1e-12)


def test_dct_matrix_by_hand():
  # N = 2: [[1, 1], [1, -1]] / sqrt(2) (cos(pi/4) = cos(3pi/4) negated).
  np.testing.assert_allclose(dct.dct_matrix(2),
                             np.array([[1, 1], [1, -1]]) / np.sqrt(2),
                             atol=1e-12)
  # A constant 4x4 block has only a DC coefficient: 4 * value.
  c = dct.forward(np.full((4, 4), 3.0), 4, 4, np)
  want = np.zeros((4, 4))
  want[0, 0] = 12.0
  np.testing.assert_allclose(c, want, atol=1e-12)


@pytest.mark.parametrize('bm, bn', [(8, 16), (4, 4), (2, 8)])
def test_round_trip_is_identity(bm, bn):
  w = np.asarray(_params()['layer_0']['recurrent_kernel'])
  c = dct.forward(jnp.asarray(w), bm, bn)
  np.testing.assert_allclose(dct.inverse(c, bm, bn), w, atol=1e-6)
  # Orthonormal: the energy is preserved.
  np.testing.assert_allclose(np.sum(np.square(c)), np.sum(w ** 2), rtol=1e-5)


def test_blocks_are_independent():
  w = np.asarray(_params()['layer_0']['recurrent_kernel'], np.float64)
  c = dct.forward(w, 4, 4, np)
  block = dct.forward(w[4:8, 8:12], 4, 4, np)
  np.testing.assert_allclose(c[4:8, 8:12], block, atol=1e-12)


@pytest.mark.parametrize('block', [0, 4])
def test_keep_one_reproduces_kernel(block):
  params = _params()
  comp = dct.make(dct.config(keep=1.0, block=block))
  cparams, state = comp.init(params)
  np.testing.assert_allclose(
      comp.apply(cparams, state)['layer_0']['recurrent_kernel'],
      params['layer_0']['recurrent_kernel'], atol=1e-6)


def test_mask_keeps_largest_fraction():
  c = np.array([[0.5, -4.0], [2.0, 1.0]])
  np.testing.assert_array_equal(dct.top_mask(c, keep=0.5),
                                [[False, True], [True, False]])
  np.testing.assert_array_equal(dct.top_mask(c, threshold=1.0),
                                [[False, True], [True, True]])
  params = _params()
  comp = dct.make(dct.config(keep=0.25, block=4))
  cparams, state = comp.init(params)
  mask = np.asarray(state['layer_0']['recurrent_kernel'])
  assert mask.sum() == 32  # 0.25 of 128.
  coef = np.asarray(cparams['layer_0']['recurrent_kernel'])
  assert np.all(coef[~mask] == 0)
  assert np.abs(coef[mask]).min() >= np.abs(
      dct.forward(np.asarray(params['layer_0']['recurrent_kernel'],
                             np.float64), 4, 4, np)[~mask]).max() - 1e-6


def test_masked_coefficients_get_no_gradient():
  comp = dct.make(dct.config(keep=0.25, block=4))
  cparams, state = comp.init(_params())
  grads = jax.grad(lambda p: jnp.sum(
      comp.apply(p, state)['layer_0']['recurrent_kernel'] ** 3))(cparams)
  g = np.asarray(grads['layer_0']['recurrent_kernel'])
  mask = np.asarray(state['layer_0']['recurrent_kernel'])
  assert np.all(g[~mask] == 0) and np.any(g[mask] != 0)


@pytest.mark.parametrize('keep, block, bits', [
    (0.25, 4, 0), (0.25, 0, 8), (0.05, 8, 4), (0.5, 4, 3), (1.0, 0, 2)])
def test_decode_of_export_equals_apply(keep, block, bits):
  comp = dct.make(dct.config(keep=keep, block=block, bits=bits))
  cparams, state = comp.init(_params(16, 32))
  entry = comp.export(cparams, state)['layer_0/recurrent_kernel']
  assert entry.positions.size == round(keep * 512)
  assert entry.transform.kind == 'dct'
  assert entry.transform.block == ((block, block) if block else (16, 32))
  if bits:
    assert entry.codes.bits == bits and entry.codes.scale.size == 1
    assert entry.codes.u[entry.positions].max() < 2 ** bits
  else:
    assert entry.codes is None and entry.coefficients.dtype == np.float32
  want = np.asarray(comp.apply(cparams, state)['layer_0']['recurrent_kernel'])
  (leaf,) = accounting.plan({'k': want}, [{'k': entry}], ['dct'], 'fixed')
  # Accounting stores the kept coefficients' positions in its smallest
  # format: never more than a bitmap (64 bytes) or 16-bit indices.
  positions_bytes = leaf.streams[leaf.node['c']['pos']].fixed_bytes()
  assert positions_bytes <= min(64, 2 * entry.positions.size)
  np.testing.assert_allclose(accounting.rebuild([entry], want.shape), want,
                             atol=1e-6)


@pytest.mark.parametrize('overrides, message', [
    (dict(keep=0.0), 'compression.dct.keep: 0.0 outside (0, 1]'),
    (dict(keep=1.5), 'compression.dct.keep: 1.5 outside (0, 1]'),
    (dict(block=3), 'compression.dct.block: 3 does not divide'),
    (dict(bits=9), 'compression.dct.bits: 9 outside 2..8'),
])
def test_bad_config_is_one_line(overrides, message):
  with pytest.raises(InputError) as e:
    comp = dct.make(dct.config(**overrides))
    comp.init(_params())
  assert message in str(e.value) and '\n' not in str(e.value)
