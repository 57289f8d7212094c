"""Activation quantization: the grids, the input step, runs and artifacts.

Hand-computed grids (the input's int8 codes at the range ends, the fixed
Q12 / Q15 / Q4.11 / 1/127 formats, the per-step dynamic step), the
straight-through gradient at the range ends, LSQ's gradient of the learned
step, the calibration, the model hooks on every cell, a short run of each
mode written as an artifact whose header and rebuilt model match the run,
the header's validation, the recipe's args, and eval.py --runtime=int on a
run's artifact as a user types it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import compression
from compression import activations as act
from compression import export
from compression.errors import InputError
from configs import common
import data
from deploy import integer
import models
import train

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')


def _section(**kw):
  return act.config(**kw)


# ----------------------------------------------------------------------------
# Calibration and grids


def test_calibrate_input_by_hand():
  # Two sequences, the second one step long: its padded steps (100) are
  # not data and must not set the range.
  x = np.array([[[1.0, -2.54], [0.5, 0.0], [2.0, 1.0]],
                [[-1.5, 0.25], [100.0, 100.0], [100.0, -100.0]]], np.float32)
  lengths = np.array([3, 1])
  top = float(np.float32(2.54))
  assert act.calibrate_input(x, lengths) == [top / 127]
  assert act.calibrate_input(x, lengths, bits=4) == [top / 7]
  valid = np.abs(np.concatenate([x[0].ravel(), x[1, :1].ravel()]))
  assert act.calibrate_input(x, lengths, method='percentile',
                             percentile=60.0) == [
                                 float(np.percentile(valid, 60.0)) / 127]
  # At 8 bits the integer runtimes' calibration is the same number.
  assert act.calibrate_input(np.zeros((2, 3, 2), np.float32)) == [1.0]
  assert act.calibrate_input(np.ones((2, 3), np.int32)) == []  # Tokens.


def test_fixed_grids_of_state_gates_and_cell():
  hooks = act.hooks(_section(bits=8), [0.125])
  h = jnp.asarray([0.5, -1.2, 0.3, 1.0])
  # Step 1/127: 63.5 rounds half to even to 64; -1.2 clips at -127.
  np.testing.assert_allclose(hooks['state_fn'](h) * 127, [64, -127, 38, 127],
                             atol=1e-4)
  assert hooks['features_fn'] is hooks['state_fn']  # The head reads h's grid.
  # Gates: the pre-activation on Q12 (saturating at 32767 / 4096), the
  # output on Q15.
  a = jnp.asarray([10.0, -10.0, 0.0, 1.0 / 8192, 3.0 / 8192])
  got = np.asarray(hooks['gate_fn'](a, jax.nn.sigmoid), np.float64)
  pre = np.clip(np.round(np.asarray(a, np.float64) * 4096), -32767, 32767)
  want = np.round(1 / (1 + np.exp(-pre / 4096)) * 32768) / 32768
  np.testing.assert_allclose(got, want, atol=1e-7)
  np.testing.assert_allclose(got * 32768, np.round(got * 32768), atol=1e-3)
  tanh = np.asarray(hooks['gate_fn'](jnp.asarray([9.0, -0.3]), jnp.tanh))
  np.testing.assert_allclose(
      tanh, np.round(np.tanh([32767 / 4096, -1229 / 4096]) * 32768) / 32768,
      atol=1e-7)
  # The LSTM cell state: Q4.11, int16 (-32768..32767).
  c = jnp.asarray([20.0, -20.0, 1.0 / 4096 * 3, 0.7])
  np.testing.assert_allclose(hooks['cell_state_fn'](c),
                             [32767 / 2048, -16.0, 2 / 2048, 1434 / 2048],
                             atol=1e-7)
  # Off: no hooks at all.
  assert act.hooks(_section(bits=0)) == {}


def test_static_input_codes_and_straight_through_gradient_at_the_ends():
  input_fn = act.hooks(_section(bits=8), [0.125])['input_fn']
  # Step 1/8, codes -127..127 = [-15.875, 15.875]. 15.9 (code 127.2) and
  # -15.93 round onto the ends: represented, gradient 1. 15.9375 is code
  # 127.5, which rounds half to even to 128: clipped, 0; so is 16.5.
  x = jnp.asarray([15.875, 15.9, 15.9375, 16.5, -15.93, 0.0625, 0.1875])
  np.testing.assert_array_equal(
      input_fn(x, None), [15.875, 15.875, 15.875, 15.875, -15.875, 0.0, 0.25])
  grad = jax.grad(lambda x: jnp.sum(input_fn(x, None)))(x)
  np.testing.assert_array_equal(grad, [1, 1, 0, 0, 1, 1, 1])


def test_dynamic_input_has_a_step_per_sequence_and_time_step():
  hooks = act.hooks(_section(bits=8, mode='dynamic'))
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 3, 4)).astype(np.float32)
  x[0, 1] *= 40.0  # One loud step does not coarsen the others.
  x[1, 2] = 0.0  # An all-zero step stays zero (step 1).
  got = np.asarray(hooks['input_fn'](jnp.asarray(x), None))
  top = np.max(np.abs(x), axis=-1, keepdims=True)
  step = np.where(top > 0, top * np.float32(1 / 127), 1).astype(np.float32)
  want = np.round(x * (np.float32(1) / step)) * step
  np.testing.assert_array_equal(got, want)
  # Each step's largest |x| is exactly representable (code +-127).
  np.testing.assert_allclose(np.max(np.abs(got), -1), top[..., 0], rtol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(hooks['input_fn'](v, None)))(
      jnp.asarray(x))
  np.testing.assert_array_equal(grad, np.ones_like(x))


def test_learned_step_gets_lsq_gradient():
  """d loss / d gain = (LSQ's d loss / d step) * step, summed."""
  bits, base = 4, 0.3
  input_fn = act.hooks(_section(bits=bits, scale='learned'),
                       [base])['input_fn']
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((3, 5, 2)) * 1.5, jnp.float32)
  c = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  gain = jnp.float32(0.1)
  loss = lambda g: jnp.sum(c * input_fn(x, {act.GAIN: g}))
  got = float(jax.grad(loss)(gain))

  s = float(np.float32(base) * np.exp(np.float32(0.1)))
  v = np.asarray(x, np.float64) / s
  code = np.round(v)
  inside = np.abs(code) <= 7
  assert inside.any() and not inside.all()
  q = np.clip(code, -7, 7)
  ds = np.where(inside, q - v, q)
  want = np.sum(np.asarray(c) * ds) / math.sqrt(10 * 7) * s
  np.testing.assert_allclose(got, want, rtol=1e-3)
  # The model reads the gain from the parameter entry the compressor adds.
  assert act.LEARNED_KEY == models.cells.LEARNED_ACTIVATIONS
  # The gain really moves the step (the output changes with it).
  assert not np.array_equal(input_fn(x, {act.GAIN: jnp.float32(0.0)}),
                            input_fn(x, {act.GAIN: jnp.float32(0.5)}))


@pytest.mark.parametrize('field, value, match', [
    ('bits', 9, r'^compression.activations.bits: 9 outside 2..8 \(0 = off\)$'),
    ('bits', 1, r'^compression.activations.bits: 1 outside 2..8'),
    ('mode', 'fast', r"^compression.activations.mode: unknown 'fast'; valid: "
     r'dynamic, static$'),
    ('scale', 'minmax', r"^compression.activations.scale: unknown 'minmax'"),
    ('percentile', 30.0, r'^compression.activations.percentile: 30.0 '
     r'outside \(50, 100\]$'),
])
def test_bad_options_are_one_line_errors(field, value, match):
  section = _section()
  section[field] = value
  with pytest.raises(InputError, match=match):
    act.hooks(section, [1.0])
  cfg = common.base_config().compression
  cfg.activations[field] = value
  with pytest.raises(InputError, match=match):
    compression.make(cfg)  # Before anything is built or trained.


def test_hidden_state_and_activations_together_are_refused():
  cfg = common.base_config().compression
  cfg.activations.bits = 8
  cfg.hidden_state.bits = 4
  with pytest.raises(InputError, match=r'^compression.hidden_state: '
                     r'compression.activations already'):
    compression.model_hooks(cfg, {'x': np.ones((2, 3, 1), np.float32)})
  cfg.hidden_state.bits = 0
  with pytest.raises(InputError, match='calibrated from the training split'):
    compression.model_hooks(cfg)  # Static, and no data to calibrate from.


# ----------------------------------------------------------------------------
# The hooks inside the model


@pytest.mark.parametrize('cell, pooling', [('gru', 'mean'), ('lstm', 'last'),
                                           ('rnn', 'attention')])
def test_every_activation_of_the_model_is_on_its_grid(cell, pooling):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 6, 4)) * 2, jnp.float32)
  lengths = jnp.asarray([6, 4, 1], jnp.int32)
  cfg = common.base_config()
  cfg.compression.activations.bits = 8
  hooks = compression.model_hooks(cfg.compression,
                                  {'x': np.asarray(x), 'lengths': lengths})
  mc = cfg.model
  mc.cell, mc.hidden, mc.pooling = cell, 5, pooling
  mc.layers = 2 if cell == 'gru' else 1
  info = {'num_classes': 3}
  model = models.make(mc, 'classification', info, **hooks)
  plain = models.make(mc, 'classification', info)
  variables = model.init(jax.random.PRNGKey(0), x, lengths)

  @jax.jit
  def everything(v):
    out, inter = model.apply(v, x, lengths, mutable=['intermediates'])
    grads = jax.grad(lambda v: jnp.sum(model.apply(v, x, lengths) ** 2))(v)
    return out, inter['intermediates'], plain.apply(v, x, lengths), grads

  out, inter, float_out, grads = everything(variables)
  for h in inter['hidden_states'] + (inter['features'],):
    scaled = np.asarray(h) * 127
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-3)
    assert len(np.unique(np.round(scaled))) > 2
  # The grids change the outputs, a little.
  diff = np.max(np.abs(np.asarray(out) - np.asarray(float_out)))
  assert 0 < diff < 0.1
  grads = grads['params']
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf))
  assert float(jnp.abs(grads['rnn']['layer_0']['input_kernel']).sum()) > 0


# ----------------------------------------------------------------------------
# Runs and their artifacts


def _run_config(mode: str) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.name = f'act_{mode}'
  c.data.name = 'synthetic_classification'
  for k, v in dict(num_train=32, num_test=16, min_len=3, max_len=6,
                   features=3, num_classes=3).items():
    c.data.kwargs[k] = v
  c.data.batch_size = 16
  c.data.eval_batch_size = 16
  c.model.hidden = 6
  c.optimizer.warmup_steps = 0
  c.optimizer.learning_rate = 0.05
  c.compression.methods = 'quantize'
  if mode == 'learned':
    c.compression.activations = act.config(bits=8, scale='learned')
  elif mode == 'dynamic':
    c.compression.activations = act.config(bits=8, mode='dynamic')
    c.model.cell = 'lstm'
  return c


def _train_and_write(config, workdir, steps):
  setup = train.build(config)
  state = train.init_state(config, setup)
  if steps:
    step = train.make_train_step(setup, config)
  for i in range(steps):
    batch = data.train_batch(setup.dataset.train, 16, 0, i)
    state, _ = step(state, batch, {})
  params = jax.device_get(state.params)
  comp_state = jax.device_get(state.comp_state)
  dense = jax.device_get(setup.compressor.apply(params, comp_state))
  export.write_run(config, setup.dataset.task, setup.dataset.info,
                   setup.compressor, params, comp_state, dense, str(workdir))
  return setup, params, dense


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Each mode's run written as an artifact; only the learned step needs
  training steps (to move it), the others are written at initialization."""
  out = {}
  for mode in ('learned', 'dynamic', 'off'):
    workdir = tmp_path_factory.mktemp(mode)
    setup, params, dense = _train_and_write(_run_config(mode), workdir,
                                            2 if mode == 'learned' else 0)
    out[mode] = dict(setup=setup, params=params, dense=dense,
                     path=os.path.join(workdir, export.FILENAME))
  return out


@pytest.mark.parametrize('mode', ['learned', 'dynamic', 'off'])
def test_artifact_header_and_model_match_the_run(runs, mode):
  run = runs[mode]
  setup, params, dense = run['setup'], run['params'], run['dense']
  art = export.read(run['path'])
  entry = art.header['activations']
  train_x = setup.dataset.train
  calibrated = integer.calibrate_input(train_x['x'], train_x['lengths'])
  assert entry['bits'] == 8
  assert entry['fake_quant'] == (mode != 'off')
  assert entry['mode'] == ('dynamic' if mode == 'dynamic' else 'static')
  if mode == 'learned':
    # Trained away from the calibrated start, and written as the step the
    # model used: calibrated * exp(gain), in float32.
    gain = params[act.LEARNED_KEY][act.GAIN]
    assert float(gain) != 0.0
    assert entry['input_scale'] == [float(np.float32(calibrated[0])
                                          * np.exp(np.float32(gain)))]
    assert act.LEARNED_KEY in dense  # The model reads it from there ...
    assert not any(leaf['path'].startswith(act.LEARNED_KEY)  # ... not stored.
                   for leaf in art.header['leaves'])
  elif mode == 'dynamic':
    assert entry['input_scale'] == []
  else:
    # Calibrated when written, for the integer runtimes only: the float
    # model rebuilt from the file has no quantizer.
    assert entry['input_scale'] == calibrated
    assert art.model.input_fn is None and art.model.gate_fn is None
  test = setup.dataset.test
  x, lengths = jnp.asarray(test['x']), jnp.asarray(test['lengths'])
  want = setup.model.apply({'params': dense}, x, lengths)
  got = export.predict(art, x, lengths)
  np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))
  np.testing.assert_allclose(got, want, atol=1e-5)
  if mode != 'off':
    # The grids are on in the rebuilt model: without them it differs.
    plain = models.make(ml_collections.ConfigDict(art.header['model']),
                        'classification', art.header['info'])
    assert not np.allclose(plain.apply({'params': art.params}, x, lengths),
                           got, atol=1e-6)


@pytest.mark.parametrize('change, match', [
    ({'bits': 1}, r'activations.bits 1 outside 2..16'),
    ({'bits': 17}, r'activations.bits 17 outside 2..16'),
    ({'bits': True}, r'activations.bits True'),
    ({'mode': 'fast'}, r"activations.mode 'fast' is not one of"),
    ({'input_scale': [0.0]}, r'activations.input_scale value 0.0 is not a '
     r'finite positive'),
    ({'input_scale': [-0.5]}, r'activations.input_scale value -0.5'),
    ({'input_scale': [float('inf')]}, r'activations.input_scale value inf'),
    ({'input_scale': ['x']}, r"activations.input_scale value 'x'"),
    ({'input_scale': 0.5}, r'activations.input_scale is not a list'),
    ({'input_scale': [0.5, 0.5]}, r'activations.input_scale has 2 values, '
     r'not 0, 1 or input_dim \(3\)'),
    ({'fake_quant': 'yes'}, r"activations.fake_quant 'yes' is not true"),
    (None, r'activations is not an object'),
])
def test_bad_activations_entry_is_one_line(runs, tmp_path, change, match):
  with open(runs['off']['path'], 'rb') as f:
    blob = f.read()
  header, payload = export.split(blob)
  if change is None:
    header['activations'] = [8]
  else:
    header['activations'] = {**header['activations'], **change}
  path = tmp_path / 'bad.rnnc'
  path.write_bytes(export.assemble(header, payload))
  with pytest.raises(InputError, match=r'^artifact bad.rnnc: malformed \('
                     + match) as e:
    export.read(str(path))
  assert '\n' not in str(e.value)


def test_valid_activations_entries_are_read(runs, tmp_path):
  with open(runs['off']['path'], 'rb') as f:
    blob = f.read()
  header, payload = export.split(blob)
  for entry in ({'bits': 16, 'mode': 'static', 'input_scale': [0.1] * 3},
                {'bits': 2, 'mode': 'dynamic', 'input_scale': []},
                None):  # Per feature; no fake_quant key; older files.
    header['activations'] = entry
    if entry is None:
      del header['activations']
    path = tmp_path / 'ok.rnnc'
    path.write_bytes(export.assemble(header, payload))
    art = export.read(str(path))
    assert art.header.get('activations') == entry
    assert art.model.input_fn is None  # Not trained with them: plain float.


# ----------------------------------------------------------------------------
# The recipe as a user runs it


def test_recipe_args():
  from configs import gru_int8  # pylint: disable=g-import-not-at-top
  c = gru_int8.get_config('weights=4,cell=lstm,dynamic')
  assert (c.name, c.model.cell, c.compression.quantize.bits) == (
      'lstm_int8', 'lstm', 4)
  assert (c.compression.activations.bits, c.compression.activations.mode) == (
      8, 'dynamic')
  assert c.init_config == 'gru_baseline'
  c = gru_int8.get_config('weights=9')
  with pytest.raises(InputError, match='compression.quantize.bits: 9'):
    compression.make(c.compression)


def test_eval_in_integers_from_the_command_line(runs):
  # The README's command on a run's artifact: the integer model is the
  # fake-quant model up to the integer rounding inside a step.
  path = runs['learned']['path']
  proc = subprocess.run(
      [sys.executable, 'eval.py', f'--artifact={path}', '--runtime=int'],
      cwd=ROOT, capture_output=True, text=True,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(path + '.eval.int.json') as f:
    ints = json.load(f)
  assert ints['runtime'] == 'int'
  setup, dense = runs['learned']['setup'], runs['learned']['dense']
  test = setup.dataset.test
  out = setup.model.apply({'params': dense}, test['x'], test['lengths'])
  fake_quant = float(np.mean(np.argmax(out, -1) == test['y']))
  assert abs(ints['test_accuracy'] - fake_quant) <= 1 / 16  # One example.
