"""Tests of k-means weight sharing: recovery, zeros, gradients, export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import compression
from compression import accounting
from compression import clustering as km
from compression.errors import InputError


def test_kmeans_recovers_known_clusters():
  rng = np.random.default_rng(0)
  centers = np.array([-1.0, 0.5, 2.0])
  labels = rng.integers(0, 3, 60)
  w = centers[labels] + 0.01 * rng.standard_normal(60)
  c, idx = km.kmeans_1d(w, 3, 30)
  np.testing.assert_allclose(c, centers, atol=0.01)
  np.testing.assert_array_equal(idx, labels)


def test_linear_initialisation_with_one_iteration():
  # Linear init puts centroids at -1, 0, 1; one Lloyd step averages members.
  w = np.array([-1.0, -0.8, 0.1, 0.2, 0.9, 1.0])
  c, idx = km.kmeans_1d(w, 3, 1)
  np.testing.assert_allclose(c, [-0.9, 0.15, 0.95], rtol=1e-6)
  np.testing.assert_array_equal(idx, [0, 0, 1, 1, 2, 2])


def test_apply_is_the_codebook_gather_and_gradients_sum_per_cluster():
  w = jnp.asarray([[-1.0, -0.9, 1.0], [0.95, -1.05, 1.05]])
  comp = km.make(km.config(clusters=2, regex='w'))
  params, state = comp.init({'w': w})
  np.testing.assert_allclose(params['w']['centroids'], [-0.9833333, 1.0],
                             rtol=1e-6)
  np.testing.assert_array_equal(state['w']['indices'], [[0, 0, 1], [1, 0, 1]])
  dense = comp.apply(params, state)['w']
  np.testing.assert_array_equal(
      dense, np.asarray(params['w']['centroids'])[[[0, 0, 1], [1, 0, 1]]])
  upstream = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  grads = jax.grad(lambda p: jnp.sum(upstream * comp.apply(p, state)['w']))(
      params)
  # Cluster 0 holds (0,0), (0,1), (1,1); cluster 1 the rest.
  np.testing.assert_array_equal(grads['w']['centroids'], [8.0, 13.0])


def test_pruned_zeros_stay_exactly_zero():
  w = np.array([[0.0, 0.3, -0.7, 0.0], [0.5, 0.0, -0.2, 0.9]], np.float32)
  comp = km.make(km.config(clusters=4, regex='w'))
  params, state = comp.init({'w': jnp.asarray(w)})
  assert bool(state['w']['zero_cluster'])
  zeros = w == 0
  np.testing.assert_array_equal(np.asarray(state['w']['indices'])[zeros], 0)
  assert np.all(np.asarray(state['w']['indices'])[~zeros] > 0)
  grads = jax.grad(lambda p: jnp.sum(comp.apply(p, state)['w']))(params)
  assert float(grads['w']['centroids'][0]) == 0.0  # The zero cluster is frozen.
  # Even if an optimizer moved centroid 0, the zeros stay exact.
  moved = {'w': {'centroids': params['w']['centroids'] + 0.5}}
  dense = np.asarray(comp.apply(moved, state)['w'])
  np.testing.assert_array_equal(dense[zeros], 0.0)
  assert np.all(dense[~zeros] != 0.0)


def test_no_zero_cluster_without_zeros():
  w = jnp.asarray(np.linspace(-1, 1, 12).reshape(3, 4) + 0.01, jnp.float32)
  comp = km.make(km.config(clusters=4, regex='w'))
  params, state = comp.init({'w': w})
  assert not bool(state['w']['zero_cluster'])
  assert len(np.unique(np.asarray(state['w']['indices']))) == 4


@pytest.mark.parametrize('clusters, bits', [(16, 4), (4, 2), (5, 3), (256, 8)])
def test_decode_of_export_equals_apply_exactly(clusters, bits):
  rng = np.random.default_rng(clusters)
  w = rng.standard_normal((20, 13)).astype(np.float32)
  w[rng.random(w.shape) < 0.3] = 0.0  # Partly pruned.
  params = {'rnn': {'kernel': jnp.asarray(w), 'bias': jnp.zeros(13)}}
  comp = km.make(km.config(clusters=clusters))
  p, s = comp.init(params)
  p = jax.tree.map(lambda x: x * 1.1, p)  # As after some fine-tuning.
  dense = np.asarray(comp.apply(p, s)['rnn']['kernel'])
  entry = comp.export(p, s)['rnn/kernel']
  book = entry.codebook
  assert book.bits == bits
  assert book.index.size == w.size and book.index.max() < 2 ** bits
  assert accounting.pack_bits(book.index, bits).size == -(-w.size * bits // 8)
  assert book.codebook.dtype == np.float32
  assert book.codebook.shape == (clusters,)
  np.testing.assert_array_equal(accounting.rebuild([entry], w.shape), dense)
  np.testing.assert_array_equal(dense[w == 0], 0.0)


@pytest.mark.parametrize('field, value, match', [
    ('clusters', 1, r'^compression.kmeans.clusters: 1 outside 2..256$'),
    ('clusters', 300, r'compression.kmeans.clusters: 300 outside 2..256'),
    ('iterations', 0, r'compression.kmeans.iterations'),
])
def test_bad_values_are_one_line_errors(field, value, match):
  section = km.config()
  section[field] = value
  with pytest.raises(InputError, match=match):
    km.make(section)


def test_registered_and_regex_errors():
  cfg = ml_collections.ConfigDict({
      'methods': 'kmeans', 'kmeans': km.config(clusters=4, regex='.*kernal')})
  comp = compression.make(cfg)
  with pytest.raises(InputError, match='compression.kmeans.regex'):
    comp.init({'head': {'kernel': jnp.ones((2, 2))}})
