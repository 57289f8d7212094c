"""Logit-MSE distillation (distill.soft_loss='mse', Ba and Caruana 2014)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from compression import distillation
from compression.errors import InputError


def test_logit_mse_by_hand():
  s = jnp.array([[1.0, 2.0, 0.0]])
  t = jnp.array([[0.0, 4.0, 1.0]])
  y = jnp.array([1])
  ce = optax.softmax_cross_entropy_with_integer_labels(s, y)[0]
  mse = (1.0 + 4.0 + 1.0) / 3
  got = distillation.logit_mse_loss(s, t, y, alpha=0.25)
  np.testing.assert_allclose(got, [0.25 * ce + 0.75 * mse], rtol=1e-6)
  # The teacher is a constant: no gradient reaches it.
  g = jax.grad(lambda t: distillation.logit_mse_loss(s, t, y, 0.0)[0])(t)
  np.testing.assert_array_equal(g, jnp.zeros_like(t))
  # The student's gradient is the regression's: 2 (s - t) / K.
  g = jax.grad(lambda s: distillation.logit_mse_loss(s, t, y, 0.0)[0])(s)
  np.testing.assert_allclose(g, 2 * (s - t) / 3, rtol=1e-6)


def _cfg(soft_loss):
  return distillation.config(soft_loss=soft_loss, alpha=0.5, temperature=2.0)


@pytest.mark.parametrize('task', ['classification', 'language_model'])
def test_the_option_selects_the_loss(task):
  rng = np.random.default_rng(0)
  shape = (3, 4) if task == 'classification' else (3, 5, 4)
  s = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  t = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  y = jnp.asarray(rng.integers(0, 4, shape[:-1]))
  batch = {'y': y, 'lengths': jnp.full((3,), shape[1] if task != 'classification'
                                       else 1)}
  mse = distillation.distillation_loss(task, _cfg('mse'), batch, s, t, None,
                                       None, None)
  kl = distillation.distillation_loss(task, _cfg('kl'), batch, s, t, None,
                                      None, None)
  np.testing.assert_allclose(
      mse, jnp.mean(distillation.logit_mse_loss(s, t, y, 0.5)), rtol=1e-6)
  np.testing.assert_allclose(kl, jnp.mean(distillation.soft_label_loss(
      s, t, y, 2.0, 0.5)), rtol=1e-6)
  assert abs(float(mse) - float(kl)) > 1e-3


def test_a_section_without_the_option_distils_with_the_kl():
  # config.json files written before the option existed.
  old = ml_collections.ConfigDict(dict(alpha=0.5, temperature=2.0,
                                       feature_weight=0.0,
                                       attention_weight=0.0))
  s, t, y = jnp.ones((2, 3)), jnp.zeros((2, 3)), jnp.array([0, 1])
  got = distillation.distillation_loss('classification', old, {'y': y}, s, t,
                                       None, None, None)
  np.testing.assert_allclose(got, jnp.mean(distillation.soft_label_loss(
      s, t, y, 2.0, 0.5)), rtol=1e-6)


def test_unknown_soft_loss_is_one_line():
  with pytest.raises(InputError, match=r"^distill.soft_loss: unknown 'l2'; "
                     r'valid: kl, mse$'):
    distillation.validate(_cfg('l2'))
