"""Distillation losses: exact values, gradients against T, and the KD run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import distillation
from compression.errors import InputError


def test_kl_of_identical_distributions_is_zero():
  logits = jnp.array([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]])
  np.testing.assert_allclose(
      distillation.kl_divergence(logits, logits, 3.0), 0.0, atol=1e-7)
  # And positive for different ones: KL([.5,.5] || [.8,.2]) by hand.
  p = jnp.log(jnp.array([0.5, 0.5]))
  q = jnp.log(jnp.array([0.8, 0.2]))
  expected = 0.5 * np.log(0.5 / 0.8) + 0.5 * np.log(0.5 / 0.2)
  np.testing.assert_allclose(distillation.kl_divergence(p, q), expected, rtol=1e-6)


@pytest.mark.parametrize('temperature', [1.0, 2.0, 4.0, 10.0])
def test_soft_loss_gradient_scales_with_temperature(temperature):
  # With alpha = 0 the loss is T^2 KL(p_T || q_T); its gradient with respect
  # to the student's logits is exactly T (softmax(s/T) - softmax(t/T)).
  s = jnp.array([0.3, -1.2, 2.0, 0.1])
  t = jnp.array([1.0, 0.5, -0.5, 0.2])
  grad = jax.grad(lambda x: distillation.soft_label_loss(
      x, t, jnp.array(0), temperature, 0.0))(s)
  expected = temperature * (jax.nn.softmax(s / temperature)
                            - jax.nn.softmax(t / temperature))
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_soft_loss_gradient_keeps_its_size_at_high_temperature():
  # Hinton et al.: for T much larger than the logits, the gradient of
  # T^2 KL approaches (s - t) / K for zero-mean logits, whatever T is; the
  # T^2 factor is what stops it from vanishing as 1/T.
  s = jnp.array([0.3, -1.2, 2.0, 0.1])
  t = jnp.array([1.0, 0.5, -0.5, 0.2])
  sc, tc = s - s.mean(), t - t.mean()
  for temperature in (100.0, 1000.0):
    grad = jax.grad(lambda x: distillation.soft_label_loss(
        x, t, jnp.array(0), temperature, 0.0))(s)
    np.testing.assert_allclose(grad, (sc - tc) / 4, atol=20 / temperature**1.5)


def test_soft_loss_with_alpha_one_is_cross_entropy_and_teacher_gets_no_gradient():
  s = jnp.array([[0.3, -1.2, 2.0]])
  t = jnp.array([[1.0, 0.5, -0.5]])
  y = jnp.array([2])
  ce = -jax.nn.log_softmax(s)[0, 2]
  np.testing.assert_allclose(
      distillation.soft_label_loss(s, t, y, 4.0, 1.0)[0], ce, rtol=1e-6)
  g_t = jax.grad(lambda tt: distillation.soft_label_loss(s, tt, y, 4.0, 0.5).sum())(t)
  np.testing.assert_array_equal(g_t, 0.0)


def test_projection_shapes_and_feature_loss():
  proj = distillation.init_projection(jax.random.PRNGKey(0), 4, 10)
  assert proj['kernel'].shape == (4, 10) and proj['bias'].shape == (10,)
  s = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 4))
  t = s @ proj['kernel'] + proj['bias']
  mask = distillation.valid_mask(jnp.array([5, 2]), 5)
  np.testing.assert_allclose(distillation.feature_loss(s, t, proj, mask), 0.0, atol=1e-6)
  # Padded steps do not count: garbage there changes nothing.
  t_bad = t.at[1, 3:].set(100.0)
  np.testing.assert_allclose(distillation.feature_loss(s, t_bad, proj, mask), 0.0, atol=1e-6)


def test_attention_loss_zero_for_identical_and_positive_otherwise():
  w = jnp.array([[0.2, 0.3, 0.5, 0.0]])
  mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
  np.testing.assert_allclose(distillation.attention_loss(w, w, mask), 0.0, atol=1e-6)
  other = jnp.array([[0.5, 0.3, 0.2, 0.0]])
  expected = 0.2 * np.log(0.2 / 0.5) + 0.5 * np.log(0.5 / 0.2)
  np.testing.assert_allclose(distillation.attention_loss(other, w, mask), expected, rtol=1e-4)


@pytest.mark.parametrize('field, value, match', [
    ('alpha', 1.5, r'distill.alpha: 1.5 outside \[0, 1\]'),
    ('temperature', 0.0, r'distill.temperature: must be > 0'),
    ('feature_weight', -1.0, r'distill.feature_weight: must be >= 0'),
])
def test_bad_distill_values(field, value, match):
  cfg = distillation.config(**{field: value})
  with pytest.raises(InputError, match=match):
    distillation.validate(cfg)


def test_kd_smoke_trains_teacher_then_student_and_scratch(tmp_path):
  import train
  from configs import gru_kd
  config = gru_kd.get_config('smoke')
  results = train.train_and_evaluate(config, str(tmp_path))
  for key in ('teacher_test_accuracy', 'scratch_test_accuracy', 'test_accuracy',
              'teacher_dense_bytes', 'dense_bytes', 'compressed_bytes'):
    assert key in results, key
  assert os.path.exists(tmp_path / 'teacher' / 'results.json')
  assert os.path.exists(tmp_path / 'scratch' / 'results.json')
  teacher = json.load(open(tmp_path / 'teacher' / 'results.json'))
  assert results['teacher_dense_bytes'] == teacher['dense_bytes'] > results['dense_bytes']
  # The projection trains beside the student but is not part of the model:
  # the student's size is its own parameters only.
  setup = train.build(config)
  init = setup.model.init(jax.random.PRNGKey(0), setup.dataset.train['x'][:2],
                          setup.dataset.train['lengths'][:2])['params']
  n = sum(np.size(x) for x in jax.tree.leaves(init))
  assert results['params_total'] == n
  import checkpoints  # pylint: disable=g-import-not-at-top
  mngr = checkpoints.checkpoint_manager(str(tmp_path), config, read_only=True)
  setup = setup._replace(teacher=train.prepare_teacher(config, setup, str(tmp_path)))
  state = checkpoints.restore_latest(mngr, train.init_state(config, setup), str(tmp_path))
  proj = state.aux['projection']
  assert proj['kernel'].shape == (config.model.hidden, 16)


def test_teacher_that_does_not_fit_is_one_line(tmp_path):
  import train
  from configs import gru_kd
  train.train_and_evaluate(gru_kd.get_config('teacher,smoke'),
                           str(tmp_path / 'teacher'))
  config = gru_kd.get_config('smoke')
  config.teacher.workdir = str(tmp_path / 'teacher')
  # The workdir's config.json is the truth about the teacher's model (the
  # recipe named in teacher.config is not); one that no longer describes
  # the checkpoint beside it cannot restore it.
  path = tmp_path / 'teacher' / 'config.json'
  saved = json.loads(path.read_text())
  saved['model']['hidden'] = 4
  path.write_text(json.dumps(saved))
  with pytest.raises(InputError, match=r'^teacher: checkpoint .* cannot be restored') as e:
    train.train_and_evaluate(config, str(tmp_path / 'again'))
  assert '\n' not in str(e.value)
