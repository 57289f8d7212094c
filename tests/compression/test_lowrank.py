"""Tests of low-rank SVD factorization (compression/lowrank.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import accounting
from compression import lowrank
from compression.errors import InputError
from models import cells

# A 4x3 matrix with known singular values 4, 2, 1: A diag(s) B^T with A, B
# orthonormal (a scaled Hadamard-like basis and a rotation).
_A = np.array([[1, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1]]) / 2.0
_B = np.array([[1, 0, 0], [0, 0.6, -0.8], [0, 0.8, 0.6]])
_S = np.array([4.0, 2.0, 1.0])
_W = _A @ np.diag(_S) @ _B.T


def _params(w: np.ndarray) -> dict:
  return {'rnn': {'layer_0': {'recurrent_kernel': jnp.asarray(w, jnp.float32),
                              'bias': jnp.zeros(w.shape[1])}}}


@pytest.mark.parametrize('rank, discarded', [(1, 4.0 + 1.0), (2, 1.0),
                                             (3, 0.0)])
def test_truncation_error_is_discarded_energy(rank, discarded):
  u, v = lowrank.factorize(_W, rank)
  assert u.shape == (4, rank) and v.shape == (rank, 3)
  err = np.sum((u.astype(np.float64) @ v - _W) ** 2)
  np.testing.assert_allclose(err, discarded, atol=1e-5)
  # Square roots of the singular values on both sides: equal column norms.
  np.testing.assert_allclose(np.linalg.norm(u, axis=0), np.sqrt(_S[:rank]),
                             rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(v, axis=1), np.sqrt(_S[:rank]),
                             rtol=1e-5)


def test_full_rank_reproduces_kernel():
  comp = lowrank.make(lowrank.config(regex='.*recurrent_kernel',
                                        rank_fraction=1.0))
  params, state = comp.init(_params(_W))
  f = params['rnn']['layer_0']['recurrent_kernel']
  assert f['u'].shape == (4, 3)
  np.testing.assert_allclose(f['u'] @ f['v'], _W, atol=1e-5)


@pytest.mark.parametrize('tau, want', [(0.5, 1), (16 / 21, 1), (0.77, 2),
                                       (20 / 21, 2), (0.96, 3), (1.0, 3)])
def test_energy_rank_keeps_at_least_tau(tau, want):
  # Energies 16, 4, 1 of 21: rank 1 keeps 0.762, rank 2 keeps 0.952.
  r = lowrank.choose_rank(_S, energy=tau)
  assert r == want
  assert np.sum(_S[:r] ** 2) / 21.0 >= tau - 1e-12


def test_rank_fraction_rounds_up():
  assert lowrank.choose_rank(np.ones(64), rank_fraction=0.25) == 16
  assert lowrank.choose_rank(np.ones(12), rank_fraction=0.25) == 3


@pytest.mark.parametrize('overrides, field', [
    (dict(rank=4), 'compression.lowrank.rank: 4 exceeds the full rank 3'),
    (dict(rank=2, energy=0.9), 'set at most one'),
    (dict(rank=2, rank_fraction=0.5), 'set at most one'),
    (dict(energy=1.5), 'compression.lowrank.energy: 1.5 outside (0, 1]'),
    (dict(rank_fraction=-0.1), 'rank_fraction: -0.1 outside'),
])
def test_bad_config_is_one_line(overrides, field):
  with pytest.raises(InputError) as e:
    comp = lowrank.make(lowrank.config(regex='.*recurrent_kernel',
                                          **overrides))
    comp.init(_params(_W))
  assert field in str(e.value) and '\n' not in str(e.value)


def test_no_rank_rule_means_a_quarter_of_full_rank():
  comp = lowrank.make(lowrank.config(regex='.*recurrent_kernel', rank=0))
  params, _ = comp.init(_params(_W))
  # _W has full rank 3; ceil(0.25 * 3) = 1.
  assert params['rnn']['layer_0']['recurrent_kernel']['u'].shape[1] == 1


def test_matmul_through_factors_equals_dense_product():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 4)), jnp.float32)
  u = jnp.asarray(rng.standard_normal((4, 2)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((2, 6)), jnp.float32)
  np.testing.assert_allclose(cells.matmul(x, {'u': u, 'v': v}),
                             cells.matmul(x, u @ v), atol=1e-5)


def _two_layer_model():
  model = cells.RecurrentStack(cell='gru', hidden=8, layers=2)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 5, 4)),
                  jnp.float32)
  params = model.init(jax.random.key(0), x)['params']
  return model, x, params


def _densify(tree):
  """Every factor dict replaced by its product U @ V."""
  if isinstance(tree, dict):
    if set(tree) == {'u', 'v'}:
      return tree['u'] @ tree['v']
    return {k: _densify(v) for k, v in tree.items()}
  return tree


@pytest.mark.parametrize('shared', [False, True])
def test_model_output_with_factors_equals_dense_product(shared):
  model, x, params = _two_layer_model()
  comp = lowrank.make(lowrank.config(rank=3, shared=shared))
  fparams, state = comp.init(params)
  layer1 = fparams['layer_1']
  if shared:
    # One U, stored once: layer 1's input kernel holds only its V.
    assert set(layer1['input_kernel']) == {'v'}
  else:
    assert set(layer1['input_kernel']) == {'u', 'v'}
  applied = comp.apply(fparams, state)
  assert set(applied['layer_1']['input_kernel']) == {'u', 'v'}
  # Jitted: eager dispatch of the scan's ops took seconds.
  run = jax.jit(lambda p: model.apply({'params': p}, x)[0][-1])
  np.testing.assert_allclose(run(applied), run(_densify(applied)), atol=1e-5)
  # Gradients reach the shared U through both products.
  grads = jax.jit(jax.grad(lambda p: jnp.sum(run(comp.apply(p, state)))))(
      fparams)
  assert np.abs(grads['layer_0']['recurrent_kernel']['u']).sum() > 0


def test_shared_factor_is_svd_of_stacked_kernels():
  _, _, params = _two_layer_model()
  comp = lowrank.make(lowrank.config(rank_fraction=1.0, shared=True))
  fparams, state = comp.init(params)
  applied = comp.apply(fparams, state)
  for layer, name in (('layer_0', 'recurrent_kernel'),
                      ('layer_1', 'input_kernel')):
    f = applied[layer][name]
    assert f['u'].shape == (8, 8)
    np.testing.assert_allclose(f['u'] @ f['v'], params[layer][name],
                               atol=1e-5)
  # Rank 3 of the stacked (8, 48) matrix: its error is the stacked tail energy.
  stacked = np.concatenate([params['layer_0']['recurrent_kernel'],
                            params['layer_1']['input_kernel']], axis=1)
  s = np.linalg.svd(stacked.astype(np.float64), compute_uv=False)
  comp3 = lowrank.make(lowrank.config(rank=3, shared=True))
  a3 = comp3.apply(*comp3.init(params))
  approx = np.concatenate(
      [a3['layer_0']['recurrent_kernel']['u'] @ a3['layer_0'][
          'recurrent_kernel']['v'],
       a3['layer_1']['input_kernel']['u'] @ a3['layer_1']['input_kernel'][
           'v']], axis=1)
  np.testing.assert_allclose(np.sum((approx - stacked) ** 2),
                             np.sum(s[3:] ** 2), rtol=1e-4)


@pytest.mark.parametrize('shared', [False, True])
def test_decode_of_export_equals_apply(shared):
  _, _, params = _two_layer_model()
  comp = lowrank.make(lowrank.config(rank=2, shared=shared))
  fparams, state = comp.init(params)
  applied = comp.apply(fparams, state)
  entries = comp.export(fparams, state)
  factored = ('layer_0/recurrent_kernel', 'layer_1/input_kernel',
              'layer_1/recurrent_kernel')
  assert set(entries) == {f'{p}/{f}' for p in factored for f in 'uv'}
  dense = {p: {f: np.asarray(applied[p.split('/')[0]][p.split('/')[1]][f])
               for f in 'uv'} for p in factored}
  # The artifact stores the factors (a shared U once) and rebuilds them
  # exactly; the model multiplies through them.
  tree = {p.replace('/', '_'): dense[p] for p in factored}
  exports = {f"{p.replace('/', '_')}/{f}": entries[f'{p}/{f}']
             for p in factored for f in 'uv'}
  if shared:
    ref = entries['layer_1/input_kernel/u'].ref
    assert ref == 'layer_0/recurrent_kernel/u'
    exports['layer_1_input_kernel/u'] = type(entries[ref])(
        ref='layer_0_recurrent_kernel/u')
  else:
    assert all(e.ref is None for e in entries.values())
  leaves = {l.path: l for l in accounting.plan(tree, [exports], ['lowrank'],
                                               'fixed')}
  for p in factored:
    for f in 'uv':
      leaf = leaves[f"{p.replace('/', '_')}/{f}"]
      if shared and p == 'layer_1/input_kernel' and f == 'u':
        assert leaf.node == {'k': 'ref', 'path': 'layer_0_recurrent_kernel/u'}
        continue
      got = accounting.decode_leaf(leaf.node, [s.data for s in leaf.streams],
                                   leaf.shape)
      np.testing.assert_array_equal(got, dense[p][f])
  if shared:  # The reference is right: both kernels multiply by one U.
    np.testing.assert_array_equal(dense['layer_1/input_kernel']['u'],
                                  dense['layer_0/recurrent_kernel']['u'])


