"""Precision options of the model config: float16 compute with dynamic loss
scaling (train.loss_scaled) and the matmul precision (model.matmul_precision).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from compression.errors import InputError
from configs import gru_baseline
import data
import models
from models import cells
import train

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')


def _steps(config, n=3):
  """Losses of n train steps, and the final state."""
  setup = train.build(config)
  state = train.init_state(config, setup)
  step = train.make_train_step(setup, config)
  losses = []
  for i in range(n):
    batch = data.train_batch(setup.dataset.train, config.data.batch_size,
                             config.seed, i)
    state, m = step(state, batch, {})
    losses.append(float(m['loss']))
  return losses, state, m


@pytest.fixture(scope='module')
def float32_run():
  """The losses and final state of 3 float32 steps of the smoke baseline."""
  losses, state, _ = _steps(gru_baseline.get_config('smoke'))
  return losses, state


def test_float16_trains_float32_weights_with_a_loss_scale_close_to_float32(
    float32_run):
  ref, ref_state = float32_run
  config = gru_baseline.get_config('smoke')
  config.model.dtype = 'float16'
  config.optimizer.loss_scale_period = 2
  losses, state, m = _steps(config)
  np.testing.assert_allclose(losses, ref, rtol=2e-3)
  for leaf in jax.tree.leaves(state.params):
    assert leaf.dtype == jnp.float32
  assert isinstance(state.opt_state, train.LossScaleState)
  for a, b in zip(jax.tree.leaves(state.params),
                  jax.tree.leaves(ref_state.params)):
    np.testing.assert_allclose(a, b, atol=5e-3)
  # Three finite steps with a period of 2: doubled once, one step counted.
  assert float(m['loss_scale']) == 2.0**15 * 2  # The scale the last step used.
  assert float(state.opt_state.scale) == 2.0**16
  assert int(state.opt_state.good_steps) == 1


def test_overflowing_gradients_skip_the_step_and_lower_the_scale():
  tx = train.loss_scaled(optax.sgd(1.0),
                         ml_collections.ConfigDict(
                             {'loss_scale': 8.0, 'loss_scale_period': 2}))
  params = {'w': jnp.array([1.0, 2.0])}
  state = tx.init(params)
  bad = {'w': jnp.array([jnp.inf, 1.0])}
  updates, state = tx.update(bad, state, params)
  np.testing.assert_array_equal(updates['w'], [0.0, 0.0])
  assert float(state.scale) == 4.0 and int(state.good_steps) == 0
  good = {'w': jnp.array([0.5, 0.5])}
  updates, state = tx.update(good, state, params)
  np.testing.assert_array_equal(updates['w'], [-0.5, -0.5])
  assert float(state.scale) == 4.0 and int(state.good_steps) == 1
  _, state = tx.update(good, state, params)
  assert float(state.scale) == 8.0 and int(state.good_steps) == 0
  for _ in range(5):  # Never below 1.
    _, state = tx.update({'w': jnp.array([jnp.nan, 0.0])}, state, params)
  assert float(state.scale) == 1.0


def test_a_skipped_float16_step_keeps_the_parameters_and_does_not_stop():
  config = gru_baseline.get_config('smoke')
  config.model.dtype = 'float16'
  config.optimizer.loss_scale_period = 2  # The program of the test above.
  # float16 holds at most 65504: a scale of 2^100 overflows every gradient.
  config.optimizer.loss_scale = 2.0**100
  losses, state, _ = _steps(config, n=2)
  assert np.all(np.isfinite(losses))
  assert int(state.bad_step) == -1  # Not the NaN guard: skipped steps.
  assert float(state.opt_state.scale) == 2.0**98
  setup = train.build(config)
  fresh = train.init_state(config, setup)
  for a, b in zip(jax.tree.leaves(state.params),
                  jax.tree.leaves(fresh.params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('field, value, match', [
    ('loss_scale', 0.0, r'^optimizer.loss_scale: must be a finite number > 0'),
    ('loss_scale', -2.0, r'^optimizer.loss_scale: must be a finite number > 0'),
    ('loss_scale_period', 0,
     r'^optimizer.loss_scale_period: must be an integer >= 1, got 0$'),
])
def test_bad_loss_scale_is_one_line(field, value, match):
  config = gru_baseline.get_config('smoke')
  config.model.dtype = 'float16'
  config.optimizer[field] = value
  with pytest.raises(InputError, match=match):
    train.build(config)


def _dot_precisions(jaxpr_text: str) -> list[str]:
  """The precision of every dot_general in a printed jaxpr ('' if none)."""
  out = []
  # The parameters end at the bracket that closes the line they start on.
  for m in re.finditer(r'dot_general\[(.*?)\n\s*\]', jaxpr_text, re.DOTALL):
    p = re.search(r'precision=\(Precision\.(\w+)', m.group(1))
    out.append(p.group(1) if p else '')
  return out


def test_matmul_precision_reaches_every_product_of_the_train_step():
  config = gru_baseline.get_config('smoke')
  config.model.matmul_precision = 'highest'
  setup = train.build(config)
  state = train.init_state(config, setup)
  batch = data.train_batch(setup.dataset.train, config.data.batch_size, 0, 0)
  text = str(jax.make_jaxpr(train.make_train_step(setup, config))(
      state, batch, {}))
  precisions = _dot_precisions(text)
  # Forward, the hand-written backward and the weight gradients alike.
  assert len(precisions) >= 8
  assert set(precisions) == {'HIGHEST'}
  # The same results, within float32 rounding (XLA:CPU's float32 products
  # are full float32 whatever the setting).
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 12))
  lengths = jnp.array([7, 3, 5])
  params = setup.model.init(jax.random.PRNGKey(1), x, lengths)
  config.model.matmul_precision = 'default'
  ref = train.build(config).model.apply(params, x, lengths)
  np.testing.assert_allclose(setup.model.apply(params, x, lengths), ref,
                             rtol=1e-5, atol=1e-6)


def test_model_config_without_the_precision_field_still_builds():
  # Artifacts and config.json files written before the option existed.
  mc = ml_collections.ConfigDict(dict(
      cell='gru', hidden=4, layers=1, pooling='last', embed_dim=8,
      dtype='float32', unroll=1))
  model = models.make(mc, 'classification', {'num_classes': 2})
  assert model.matmul_precision == 'default'
  with pytest.raises(InputError, match=r"^model.matmul_precision: unknown "
                     r"matmul_precision 'fast'; valid: default, high"):
    mc.matmul_precision = 'fast'
    models.make(mc, 'classification', {'num_classes': 2})


def test_float16_layer_output_is_close_to_float32():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 3))
  layer = cells.RecurrentLayer(cell='gru', hidden=5)
  params = layer.init(jax.random.PRNGKey(1), x)
  ref, _ = layer.apply(params, x)
  out, _ = cells.RecurrentLayer(cell='gru', hidden=5, dtype='float16').apply(
      params, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=5e-3)


def test_readme_float16_command_runs(tmp_path):
  # README's command, as :smoke.
  workdir = tmp_path / 'f16'
  proc = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/gru_baseline.py:smoke',
       f'--workdir={workdir}', '--config.model.dtype=float16',
       '--config.model.matmul_precision=highest'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  scales = [r['loss_scale'] for r in rows if r['split'] == 'train']
  assert scales and all(s == 2.0**15 for s in scales)
  saved = json.load(open(workdir / 'config.json'))['model']
  assert (saved['dtype'], saved['matmul_precision']) == ('float16', 'highest')
  assert np.isfinite(json.load(open(workdir / 'results.json'))['test_loss'])
