"""Magnitude-threshold pruning (`compression.threshold`) on hand examples."""

import jax.numpy as jnp
import numpy as np
import pytest

import compression
from compression import accounting
from compression import threshold
from compression.errors import InputError

W = np.array([[0.1, -0.5, 2.0, -0.05],
              [1.0, 0.2, -0.3, 0.6],
              [-4.0, 0.0, 0.39, -0.41],
              [0.25, 3.0, -1.2, 0.4]], np.float32)


def _params():
  return {'rnn': {'layer_0': {'recurrent_kernel': jnp.asarray(W),
                              'bias': jnp.ones(4)}},
          'head': {'kernel': jnp.asarray(W)}}


def test_relative_threshold_keeps_the_hand_mask():
  # theta = 0.1 * max|w| = 0.4: keep |w| >= 0.4.
  comp = threshold.make(threshold.config(factor=0.1))
  params, state = comp.init(_params())
  dense = comp.apply(params, state)
  want = np.where(np.abs(W) >= np.float32(0.4), W, 0)
  np.testing.assert_array_equal(dense['rnn']['layer_0']['recurrent_kernel'],
                                want)
  # Only the selected kernels: the head and the bias are untouched.
  np.testing.assert_array_equal(dense['head']['kernel'], W)
  np.testing.assert_array_equal(dense['rnn']['layer_0']['bias'], 1.0)
  assert threshold.report(None, state, dense, None)[
      'threshold_sparsity'] == pytest.approx(7 / 16)


def test_absolute_threshold_and_the_records_it_exports():
  comp = threshold.make(threshold.config(threshold=1.0, regex='.*kernel'))
  params, state = comp.init(_params())
  dense = comp.apply(params, state)
  want = np.where(np.abs(W) >= 1.0, W, 0)
  for path in ('rnn/layer_0/recurrent_kernel', 'head/kernel'):
    rec = comp.export(params, state)[path]
    np.testing.assert_array_equal(rec.positions, np.flatnonzero(want))
    np.testing.assert_array_equal(accounting.rebuild([rec], W.shape, want),
                                  want)
  np.testing.assert_array_equal(dense['head']['kernel'], want)


def test_removed_weights_get_no_gradient_and_stay_zero():
  import jax
  comp = threshold.make(threshold.config(factor=0.1))
  params, state = comp.init(_params())
  grads = jax.grad(lambda p: jnp.sum(comp.apply(p, state)['rnn']['layer_0'][
      'recurrent_kernel'] ** 2))(params)
  g = np.asarray(grads['rnn']['layer_0']['recurrent_kernel'])
  np.testing.assert_array_equal(g[np.abs(W) < 0.4], 0.0)
  assert np.all(g[np.abs(W) >= 0.4] != 0)


def test_registered_and_chainable():
  assert 'threshold' in compression.METHODS
  cfg = compression.default_section('threshold')
  assert cfg.factor == 0.1


@pytest.mark.parametrize('overrides, match', [
    (dict(factor=1.5), r'compression.threshold.factor: 1.5 outside \[0, 1\]'),
    (dict(factor=-0.1), r'compression.threshold.factor: -0.1 outside \[0, 1\]'),
    (dict(factor=0.0), r'compression.threshold: set threshold'),
    (dict(threshold=float('nan')), r'threshold.threshold: must be a finite'),
    (dict(threshold=-1.0), r'threshold.threshold: must be >= 0, got -1.0'),
    (dict(regex='nothing'), r'compression.threshold.regex'),
])
def test_bad_input_is_one_line(overrides, match):
  with pytest.raises(InputError, match=match) as e:
    threshold.make(threshold.config(**overrides)).init(_params())
  assert '\n' not in str(e.value)
