"""Early exit over time (compression/early_exit.py): weights, exits, the
threshold, the per-step head, and a compressed run through its artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from compression import early_exit as ee
from compression import export
from compression.errors import InputError
from configs import common
import models
import train

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')


def test_step_weights_grow_linearly_over_valid_steps():
  w = ee.step_weights(jnp.array([3, 2]), 4, 1.0)
  np.testing.assert_allclose(w, [[1 / 6, 2 / 6, 3 / 6, 0], [1 / 3, 2 / 3, 0, 0]],
                             rtol=1e-6)
  np.testing.assert_allclose(ee.step_weights(jnp.array([4]), 4, 0.0),
                             [[0.25] * 4])


def test_step_loss_is_the_weighted_cross_entropy():
  logits = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4)),
                       jnp.float32)
  labels, lengths = jnp.array([1, 3]), jnp.array([3, 1])
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.array([[1] * 3, [3] * 3]))
  want = ((ce[0, 0] + 2 * ce[0, 1] + 3 * ce[0, 2]) / 6 + ce[1, 0]) / 2
  np.testing.assert_allclose(ee.step_loss(logits, labels, lengths, 1.0), want,
                             rtol=1e-6)


def _outputs():
  # Three sequences: confidences per step, predictions, lengths, labels.
  conf = np.array([[0.5, 0.8, 0.95, 0.99],
                   [0.9, 0.6, 0.7, 0.0],     # Length 3: step 3 is padding.
                   [0.4, 0.5, 0.6, 0.97]])
  pred = np.array([[0, 1, 1, 1], [2, 2, 2, 0], [0, 0, 1, 1]])
  return ee.StepOutputs(conf, pred, np.array([4, 3, 4]), np.array([1, 2, 1]))


def test_exit_at_the_first_step_over_the_threshold():
  out = _outputs()
  idx = ee.exit_steps(out, np.array([0.3, 0.85, 0.96, 1.0]))
  np.testing.assert_array_equal(idx, [[0, 0, 0], [2, 0, 3], [3, 2, 3],
                                      [3, 2, 3]])
  acc, frac = ee.exit_metrics(out, np.array([0.85, 1.0]))
  # tau 0.85: sequence 0 exits at step 2 (pred 1, right), 1 at step 0 (2,
  # right), 2 at step 3 (1, right); tau 1: every sequence read to its end.
  np.testing.assert_allclose(acc, [1.0, 1.0])
  np.testing.assert_allclose(frac, [(3 / 4 + 1 / 3 + 4 / 4) / 3, 1.0])
  assert ee.full_read_accuracy(out) == 1.0
  acc, _ = ee.exit_metrics(out, np.array([0.3]))
  np.testing.assert_allclose(acc, [1 / 3])  # Only sequence 1 is right.


def test_threshold_is_the_smallest_meeting_accuracy_and_confidence():
  out = _outputs()
  # tau 0.5: every exit is right (steps 1, 0, 2), mean confidence 0.767.
  assert ee.choose_threshold(out, 0.5) == 0.5
  np.testing.assert_allclose(ee.exit_confidence(out, np.array([0.5])),
                             [(0.8 + 0.9 + 0.6) / 3])
  # At 0.9 accuracy alone still allows 0.5; the confidence at exit reaches
  # 0.9 first at tau 0.8 (exits at 0.95, 0.9, 0.97).
  assert ee.choose_threshold(out, 0.9) == 0.8
  np.testing.assert_allclose(ee.exit_confidence(out, np.array([0.7, 0.8])),
                             [(0.8 + 0.9 + 0.97) / 3, (0.95 + 0.9 + 0.97) / 3])
  # Sequence 1 never gets past 0.9 again, so no threshold reaches 0.95.
  assert ee.choose_threshold(out, 0.95) == 1.0


def test_report_curves():
  fields = ee.report(_outputs(), 0.85)
  assert fields['early_exit_threshold'] == 0.85
  assert 0.85 in fields['early_exit_curve']['threshold']
  assert fields['prefix_curve']['steps_fraction'][-1] == 1.0
  assert fields['prefix_curve']['accuracy'][-1] == fields['full_read_accuracy']
  assert ee.plot_png(fields).startswith(b'\x89PNG')


def test_step_logits_at_the_last_step_are_the_classifier_output():
  mc = common.base_config().model
  mc.hidden = 6
  model = models.make(mc, 'classification', {'num_classes': 3})
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 2))
  lengths = jnp.array([5, 2, 4])
  params = model.init(jax.random.PRNGKey(1), x, lengths)['params']
  out = model.apply({'params': params}, x, lengths)
  steps = ee.step_logits_fn(model, params)(x, lengths)
  assert steps.shape == (3, 5, 3)
  np.testing.assert_allclose(steps[jnp.arange(3), lengths - 1], out,
                             rtol=1e-6, atol=1e-6)
  # Early exit adds no parameter: the head reads every step.
  assert set(params) == {'rnn', 'head'}


@pytest.mark.parametrize('field, value, match', [
    ('threshold', 0.0, r'^early_exit.threshold: 0.0 outside \(0, 1\]$'),
    ('threshold', 1.5, r'^early_exit.threshold: 1.5 outside \(0, 1\]$'),
    ('target', -0.1, r'^early_exit.target: -0.1 outside \[0, 1\]$'),
])
def test_bad_early_exit_options_are_one_line(field, value, match):
  c = train.load_recipe('gru_early_exit.py:smoke', 'config')
  c.early_exit[field] = value
  with pytest.raises(InputError, match=match):
    train.check(c)


def test_early_exit_needs_last_state_pooling():
  c = train.load_recipe('gru_early_exit.py:smoke', 'config')
  c.model.pooling = 'mean'
  with pytest.raises(InputError, match=r"^early_exit.enabled: needs "
                     r"model.pooling = 'last'"):
    train.check(c)


@pytest.fixture(scope='module')
def quantized_run(tmp_path_factory):
  """README's 4-bit early-exit command (as :smoke), run as typed."""
  workdir = str(tmp_path_factory.mktemp('early_exit') / 'q4')
  proc = subprocess.run(
      [sys.executable, 'train.py',
       '--config=configs/gru_early_exit.py:bits=4,smoke',
       f'--workdir={workdir}'], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(os.path.join(workdir, 'results.json')) as f:
    return workdir, json.load(f)


def test_compressed_run_reports_early_exit_and_its_artifact_the_same(
    quantized_run):
  workdir, results = quantized_run
  for key in ('early_exit_threshold', 'early_exit_accuracy',
              'mean_steps_fraction', 'early_exit_curve', 'prefix_curve'):
    assert key in results
  assert 0 < results['early_exit_threshold'] <= 1
  assert 0 < results['mean_steps_fraction'] <= 1
  assert results['prefix_curve']['accuracy'][-1] == pytest.approx(
      results['test_accuracy'])
  with open(os.path.join(workdir, 'early_exit.png'), 'rb') as f:
    assert f.read(4) == b'\x89PNG'
  artifact = os.path.join(workdir, 'model.rnnc')
  proc = subprocess.run(
      [sys.executable, 'eval.py', f'--artifact={artifact}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(f'{artifact}.eval.jax.json') as f:
    report = json.load(f)
  for key in ('early_exit_threshold', 'early_exit_accuracy',
              'mean_steps_fraction', 'early_exit_curve', 'prefix_curve',
              'test_accuracy'):
    assert report[key] == results[key], key
  # The artifact is the 4-bit model, with the chosen threshold in its header.
  art = export.read(artifact)
  assert art.header['early_exit'] == {
      'threshold': results['early_exit_threshold']}
  assert any('quantize' in leaf['encoding'].split('+')
             for leaf in art.header['leaves'])


@pytest.mark.parametrize('entry, match', [
    ({'threshold': 1.5}, r'early_exit.threshold 1.5 is not in \(0, 1\]'),
    ({'threshold': 0.0}, r'early_exit.threshold 0.0 is not in \(0, 1\]'),
    ({}, r'early_exit.threshold None is not in \(0, 1\]'),
])
def test_an_artifact_with_a_bad_threshold_is_refused(quantized_run, entry,
                                                     match):
  workdir, _ = quantized_run
  with open(os.path.join(workdir, 'model.rnnc'), 'rb') as f:
    header, payload = export.split(f.read())
  blob = export.assemble({**header, 'early_exit': entry}, payload)
  with pytest.raises(InputError, match=match):
    export.parse(blob, 'model.rnnc')
