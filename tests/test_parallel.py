"""Speed and scale: the fast recurrent backward, data parallel, bf16, retracing.

* The hand-written VJP of `models.cells.fast_sequence` gives the same values
  and gradients as `jax.grad` of the generic scan (padding, an initial carry,
  unroll, hoisted input, bfloat16).
* Data parallel: `configs/gru_baseline.py:smoke` on 4 forced host devices,
  and through `train.py --cpu_devices=2`, follows the 1-device loss
  trajectory (each run in a subprocess, since the device count is fixed when
  jax initialises).
* Mixed precision: `model.dtype='bfloat16'` trains, keeps float32 parameters
  and optimizer state, and stays close to float32.
* Compile once: the train step is traced exactly once over a run with
  evaluations and checkpoints between steps.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gru_baseline
import data
from models import cells
import train

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
B, T, F, H = 3, 7, 4, 5
LENGTHS = np.array([7, 2, 5], np.int32)


def _random_params(cell: str, seed: int = 1) -> dict:
  """Layer parameters with every leaf random, biases included."""
  layer = cells.RecurrentLayer(cell=cell, hidden=H)
  x = jnp.zeros((B, T, F), jnp.float32)
  shapes = jax.eval_shape(layer.init, jax.random.key(0), x)['params']
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), jnp.float32),
      shapes)


def _layer_grads(cell: str, custom_grad: bool, **kw):
  """Outputs, carry and gradients (params, x, initial carry) of a loss."""
  params = _random_params(cell)
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.standard_normal((B, T, F)), jnp.float32)
  weights = jnp.asarray(rng.standard_normal((B, T, H)), jnp.float32)
  h0 = jnp.asarray(rng.standard_normal((B, H)), jnp.float32)
  carry0 = (h0, 0.5 * h0) if cell == 'lstm' else h0
  layer = cells.RecurrentLayer(cell=cell, hidden=H, custom_grad=custom_grad,
                               **kw)

  def loss(p, x, c0):
    out, carry = layer.apply({'params': p}, x, jnp.asarray(LENGTHS), c0)
    # Every part of the output reaches the loss: all steps' outputs and
    # both parts of an LSTM carry.
    total = jnp.sum(out * weights)
    for leaf in jax.tree_util.tree_leaves(carry):
      total += jnp.sum(jnp.sin(leaf))
    return total, (out, carry)

  grads, (out, carry) = jax.jit(jax.grad(loss, argnums=(0, 1, 2),
                                         has_aux=True))(params, x, carry0)
  return out, carry, grads


@pytest.mark.parametrize('cell', cells.CELLS)
@pytest.mark.parametrize('kw', [{}, {'unroll': 2, 'hoist_input': True}])
def test_custom_vjp_matches_autodiff_of_the_scan(cell, kw):
  out, carry, grads = _layer_grads(cell, True, **kw)
  ref_out, ref_carry, ref_grads = _layer_grads(cell, False, **kw)
  np.testing.assert_allclose(out, ref_out, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(carry),
                  jax.tree_util.tree_leaves(ref_carry)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  flat = jax.tree_util.tree_leaves_with_path(grads)
  ref_flat = dict(jax.tree_util.tree_leaves_with_path(ref_grads))
  assert len(flat) == len(ref_flat)
  for path, g in flat:
    np.testing.assert_allclose(g, ref_flat[path], rtol=1e-5, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))
  # Padded inputs get no gradient; every parameter gets a nonzero one.
  np.testing.assert_array_equal(grads[1][1, LENGTHS[1]:], 0.0)
  assert all(np.abs(g).max() > 0 for g in jax.tree_util.tree_leaves(grads[0]))


def test_custom_vjp_in_bfloat16_is_close_to_autodiff():
  out, _, grads = _layer_grads('gru', True, dtype='bfloat16')
  ref_out, _, ref_grads = _layer_grads('gru', False, dtype='bfloat16')
  np.testing.assert_allclose(out, ref_out, atol=2e-2)
  for g, r in zip(jax.tree_util.tree_leaves(grads),
                  jax.tree_util.tree_leaves(ref_grads)):
    assert g.dtype == r.dtype
    np.testing.assert_allclose(g, r, rtol=5e-2, atol=5e-2)


def test_fast_path_is_skipped_where_it_cannot_apply():
  # A state hook must act inside the scan, which the fast path has no room
  # for: with it, the layer must use the generic scan (h quantized).
  params = _random_params('gru')
  x = jnp.asarray(np.random.default_rng(0).standard_normal((B, T, F)),
                  jnp.float32)
  quantize = lambda h: jnp.round(h * 4.0) / 4.0
  out, _ = cells.RecurrentLayer(cell='gru', hidden=H, state_fn=quantize
                                ).apply({'params': params}, x)
  np.testing.assert_array_equal(out * 4.0, jnp.round(out * 4.0))


def _train_losses(workdir) -> list[float]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [r['loss'] for r in rows if r['split'] == 'train']


_RUN = """
import json, sys
import jax
import train
from configs import gru_baseline
config = gru_baseline.get_config('smoke')
config.data.batch_size = 16
config.train.steps = 6
config.train.eval_every = 0
config.train.checkpoint_every = 6
assert jax.device_count() == {devices}, jax.devices()
results = train.train_and_evaluate(config, sys.argv[1])
print(json.dumps({{'devices': jax.device_count(),
                  'accuracy': results['test_accuracy']}}))
"""


def _run_on_devices(devices: int, workdir: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  proc = subprocess.run(
      [sys.executable, '-c', _RUN.format(devices=devices), workdir],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def one_device_run(tmp_path_factory):
  """The 1-device reference run of `_RUN` (workdir, printed summary)."""
  workdir = tmp_path_factory.mktemp('one')
  return workdir, _run_on_devices(1, str(workdir))


def test_data_parallel_on_four_devices_matches_one(one_device_run, tmp_path):
  one_dir, one = one_device_run
  four = _run_on_devices(4, str(tmp_path / 'four'))
  assert (one['devices'], four['devices']) == (1, 4)
  losses_1 = _train_losses(one_dir)
  losses_4 = _train_losses(tmp_path / 'four')
  assert len(losses_1) == len(losses_4) == 6
  # Same batches and updates; only the order of the cross-device sums
  # differs, so the trajectories agree to float32 rounding.
  np.testing.assert_allclose(losses_4, losses_1, rtol=1e-4, atol=1e-5)
  assert abs(one['accuracy'] - four['accuracy']) <= 1e-6
  with open(tmp_path / 'four' / 'results.json') as f:
    assert json.load(f)['devices'] == 4


def test_cpu_devices_flag_trains_data_parallel(one_device_run, tmp_path):
  # train.py --cpu_devices=2 splits the host into two JAX devices (no
  # XLA_FLAGS) and follows the 1-device trajectory of the same config.
  one_dir, _ = one_device_run
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  workdir = tmp_path / 'two'
  proc = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/gru_baseline.py:smoke',
       '--cpu_devices=2', f'--workdir={workdir}',
       '--config.data.batch_size=16', '--config.train.steps=6',
       '--config.train.eval_every=0', '--config.train.checkpoint_every=6'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(workdir / 'results.json') as f:
    results = json.load(f)
  assert (results['devices'], results['platform']) == (2, 'cpu')
  np.testing.assert_allclose(_train_losses(workdir), _train_losses(one_dir),
                             rtol=1e-4, atol=1e-5)


def test_cpu_devices_flag_rejects_a_negative_count(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/gru_baseline.py:smoke',
       '--cpu_devices=-1', f'--workdir={tmp_path / "w"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: --cpu_devices: must be >= 0 (0 = one per core), got -1')
  assert not (tmp_path / 'w').exists()


def test_bfloat16_trains_with_float32_params_and_close_loss(tmp_path):
  config = gru_baseline.get_config('smoke')
  config.model.dtype = 'bfloat16'
  setup = train.build(config)
  state = train.init_state(config, setup)
  step = train.make_train_step(setup, config)
  for i in range(3):
    batch = data.train_batch(setup.dataset.train, config.data.batch_size,
                             config.seed, i)
    state, metrics = step(state, batch, {})
    assert np.isfinite(float(metrics['loss']))
  assert int(state.bad_step) == -1
  for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32

  train.train_and_evaluate(config, str(tmp_path / 'bf16'))
  f32 = gru_baseline.get_config('smoke')
  train.train_and_evaluate(f32, str(tmp_path / 'f32'))
  bf16_losses = _train_losses(tmp_path / 'bf16')
  f32_losses = _train_losses(tmp_path / 'f32')
  # bfloat16 keeps 8 bits of mantissa: a few 1e-3 relative per product.
  np.testing.assert_allclose(bf16_losses, f32_losses, rtol=2e-2, atol=2e-2)
  assert bf16_losses != f32_losses  # The bf16 run really computed in bf16.


def test_train_step_is_traced_once(tmp_path, monkeypatch):
  traces = []
  real_jit = jax.jit

  def counting_jit(fun, *args, **kwargs):
    if getattr(fun, '__name__', '') == 'step_fn':
      @functools.wraps(fun)
      def counted(*a, **k):
        traces.append(1)
        return fun(*a, **k)
      return real_jit(counted, *args, **kwargs)
    return real_jit(fun, *args, **kwargs)

  monkeypatch.setattr(jax, 'jit', counting_jit)
  config = gru_baseline.get_config('smoke')
  config.train.steps = 6  # Evaluations and checkpoints at steps 2 and 4.
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 6
  assert len(traces) == 1
