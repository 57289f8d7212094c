"""Kronecker and tensor-train factorizations (compression/kronecker.py,
compression/tensor_train.py): cores, products, shapes, artifact, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import accounting
from compression import export
from compression import kronecker
from compression import quantization
from compression import tensor_train as tt
from compression.errors import InputError
from configs import common
import models
from models import cells

INFO = {'num_classes': 3, 'input_dim': 4, 'max_len': 6}


def _cores(shapes, ranks, seed=0):
  rng = np.random.default_rng(seed)
  full = [1] + list(ranks) + [1]
  return [rng.standard_normal((full[k], m, n, full[k + 1])).astype(np.float32)
          for k, (m, n) in enumerate(shapes)]


def test_kronecker_cores_are_a_sum_of_kronecker_products():
  # Two terms of (2, 3) x (3, 2) factors, by hand with np.kron.
  c0, c1 = _cores([(2, 3), (3, 2)], [2])
  want = sum(np.kron(c0[0, :, :, t], c1[t, :, :, 0]) for t in range(2))
  np.testing.assert_allclose(tt.tt_dense([c0, c1]), want, rtol=1e-6)


@pytest.mark.parametrize('shapes, ranks', [
    ([(2, 3), (3, 2)], [2]),
    ([(2, 2), (3, 1), (2, 4)], [3, 2]),
])
def test_matmul_through_cores_equals_the_dense_product(shapes, ranks):
  cores = _cores(shapes, ranks)
  w = tt.tt_dense(cores)
  x = np.random.default_rng(1).standard_normal((2, 5, w.shape[0]))
  y = cells.matmul(jnp.asarray(x, jnp.float32),
                   {f'core_{k}': jnp.asarray(c) for k, c in enumerate(cores)})
  assert y.shape == (2, 5, w.shape[1]) and y.dtype == jnp.float32
  np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)


def test_tt_svd_is_exact_at_full_rank_and_recovers_a_kronecker_product():
  rng = np.random.default_rng(2)
  w = rng.standard_normal((12, 8))
  shapes = [(2, 2), (3, 2), (2, 2)]
  cores = tt.tt_svd(w, shapes, tt.max_ranks(shapes))
  np.testing.assert_allclose(tt.tt_dense(cores), w, atol=1e-5)
  # Equal core norms after balancing.
  norms = [np.linalg.norm(c) for c in cores]
  np.testing.assert_allclose(norms, norms[0], rtol=1e-5)
  a, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 5))
  one = tt.tt_svd(np.kron(a, b), [(3, 4), (2, 5)], [1])
  np.testing.assert_allclose(tt.tt_dense(one), np.kron(a, b), atol=1e-5)


def test_two_core_truncation_error_is_the_discarded_energy():
  # Van Loan-Pitsianis: the error of r terms is the singular values of the
  # rearranged matrix R(W) (rows (i1, j1), columns (i2, j2)) past r.
  w = np.random.default_rng(3).standard_normal((6, 6))
  r_w = w.reshape(2, 3, 3, 2).transpose(0, 2, 1, 3).reshape(6, 6)
  s = np.linalg.svd(r_w, compute_uv=False)
  for r in (1, 3):
    err = np.sum((tt.tt_dense(tt.tt_svd(w, [(2, 3), (3, 2)], [r])) - w) ** 2)
    np.testing.assert_allclose(err, np.sum(s[r:] ** 2), rtol=1e-4)


def test_rescale_gives_the_product_the_kernel_norm():
  w = np.random.default_rng(4).standard_normal((8, 8))
  cores = tt.tt_svd(w, [(2, 4), (4, 2)], [1], rescale=True)
  np.testing.assert_allclose(np.linalg.norm(tt.tt_dense(cores)),
                             np.linalg.norm(w), rtol=1e-5)


def test_chosen_shapes_are_balanced_and_parameters_counted():
  assert tt.choose_shapes(64, 192, 2, [1]) == [(8, 12), (8, 16)]
  assert tt.choose_shapes(12, 192, 2, [2]) == [(3, 16), (4, 12)]
  three = tt.choose_shapes(64, 192, 3, [4, 4])
  assert [m for m, _ in three] == [4, 4, 4]
  assert tt.tt_params(three, [4, 4]) == sum(
      c.size for c in _cores(three, [4, 4]))
  # A rank no bond can hold leaves no shape.
  assert tt.choose_shapes(4, 4, 2, [17]) is None


def _params(hidden=8, features=4):
  mc = common.base_config().model
  mc.hidden = hidden
  model = models.make(mc, 'classification', INFO)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 6, features))
  lengths = jnp.array([6, 4, 2])
  params = model.init(jax.random.PRNGKey(0), x, lengths)['params']
  return mc, model, params, x, lengths


def test_factored_model_runs_its_dense_equivalent_and_the_artifact_rebuilds_it(
    tmp_path):
  mc, model, params, x, lengths = _params()
  comp = kronecker.make(kronecker.config(terms=2))
  fparams, state = comp.init(params)
  rec = fparams['rnn']['layer_0']['recurrent_kernel']
  assert sorted(rec) == ['core_0', 'core_1']
  # (8, 24) = (2, 6) x (4, 4): the most balanced, then the fewest (28).
  assert rec['core_0'].shape == (1, 2, 6, 2)
  assert rec['core_1'].shape == (2, 4, 4, 1)
  dense = comp.apply(fparams, state)
  out = model.apply({'params': dense}, x, lengths)
  # The same model with the cores multiplied out.
  expanded = jax.tree_util.tree_map(lambda a: a, dense)
  for name in ('input_kernel', 'recurrent_kernel'):
    cores = dense['rnn']['layer_0'][name]
    expanded['rnn']['layer_0'][name] = jnp.asarray(
        tt.tt_dense([cores['core_0'], cores['core_1']]), jnp.float32)
  np.testing.assert_allclose(out, model.apply({'params': expanded}, x, lengths),
                             rtol=1e-4, atol=1e-5)
  # Chained with 8-bit quantization of the cores: exact accounting, and the
  # artifact decodes to the model's parameters and predictions.
  q = quantization.make(quantization.config(bits=8,
                                            regex=r'.*kernel/core_\d+'))
  qparams, qstate = q.init(fparams)
  qdense = q.apply(qparams, qstate)
  exports = (comp.export(qdense, state), q.export(qparams, qstate))
  methods = ['kronecker', 'quantize']
  path = str(tmp_path / 'model.rnnc')
  written = export.write(path, dense=qdense, exports=exports, methods=methods,
                         model_cfg=mc, task='classification', info=INFO)
  art = export.read(path)
  cores = [r for r in written['leaves'] if '/core_' in r['path']]
  assert len(cores) == 4 and all(r['bits'] == 8 for r in cores)
  assert {r['path'] for r in cores} == {
      f'rnn/layer_0/{k}/core_{i}' for k in ('input_kernel', 'recurrent_kernel')
      for i in (0, 1)}
  np.testing.assert_array_equal(
      art.params['rnn']['layer_0']['recurrent_kernel']['core_1'],
      np.asarray(qdense['rnn']['layer_0']['recurrent_kernel']['core_1']))
  np.testing.assert_allclose(export.predict(art, x, lengths),
                             model.apply({'params': qdense}, x, lengths),
                             rtol=1e-6, atol=1e-6)
  stored, full = tt.kernel_params(qdense)
  assert full == 4 * 24 + 8 * 24 + 8 * 3
  assert stored == 8 * 3 + sum(
      int(np.size(c)) for k in ('input_kernel', 'recurrent_kernel')
      for c in qdense['rnn']['layer_0'][k].values())


def test_tt_method_uses_the_ranks_and_shapes_given():
  _, _, params, _, _ = _params()
  comp = tt.make(tt.config(
      regex='.*recurrent_kernel', ranks='2,3',
      shapes='.*recurrent_kernel=2x2,2x3,2x4'))
  fparams, _ = comp.init(params)
  cores = fparams['rnn']['layer_0']['recurrent_kernel']
  assert [c.shape for _, c in sorted(cores.items())] == [
      (1, 2, 2, 2), (2, 2, 3, 3), (3, 2, 4, 1)]
  assert not isinstance(fparams['rnn']['layer_0']['input_kernel'], dict)


@pytest.mark.parametrize('make, section, match', [
    (kronecker.make, dict(shapes='8x12,8x16'),
     r'^compression.kronecker.shapes: factors 8x12 \* 8x16 make a \(64, 192\) '
     r'kernel, rnn/layer_0/input_kernel is \(4, 24\)$'),
    (kronecker.make, dict(terms=9),
     r'^compression.kronecker: no 2-factor shape of rnn/layer_0/input_kernel'),
    (kronecker.make, dict(shapes='2x2,2x3,1x4'),
     r'^compression.kronecker.shapes: a Kronecker product has 2 factors, got 3'),
    (kronecker.make, dict(shapes='2x,3'),
     r"^compression.kronecker.shapes: '2x' in '2x,3' is not MxN"),
    (tt.make, dict(ranks='0'), r'^compression.tt.ranks: .*must be >= 1'),
    (tt.make, dict(ranks='2,2,2'),
     r'^compression.tt.ranks: 3 ranks for 3 cores; give one, or 2$'),
    (tt.make, dict(regex='.*input_kernel', shapes='.*input_kernel=2x4,2x6',
                   ranks='9'),
     r'^compression.tt: rank 9 exceeds the largest useful rank 8 at bond 1 '
     r'of rnn/layer_0/input_kernel'),
])
def test_bad_factor_options_are_one_line(make, section, match):
  _, _, params, _, _ = _params()
  module = kronecker if make is kronecker.make else tt
  with pytest.raises(InputError, match=match) as e:
    make(module.config(**section)).init(params)
  assert '\n' not in str(e.value)


def test_artifact_with_cores_that_do_not_make_the_kernel_is_refused():
  _, model, params, _, _ = _params()
  header = {'task': 'classification', 'info': INFO}
  flat = accounting.flatten(jax.tree_util.tree_map(np.asarray, params))
  flat.pop('rnn/layer_0/recurrent_kernel')
  flat['rnn/layer_0/recurrent_kernel/core_0'] = np.zeros((1, 2, 4, 2))
  flat['rnn/layer_0/recurrent_kernel/core_1'] = np.zeros((2, 4, 5, 1))
  with pytest.raises(InputError, match=r'recurrent_kernel cores make \(8, 20\),'
                     r' the model needs \(8, 24\)'):
    export.check_shapes(model, header, flat)
