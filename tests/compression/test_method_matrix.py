"""Every method on every cell: RNN, LSTM and GRU, one and two layers.

Each case builds the run as train.py does (`train.build`, `init_state`, the
jitted `make_train_step`), trains three steps on a tiny synthetic problem,
then checks that the compression really happened (codes on the grid, the
sparsity reached, the rank, the shrunk width, the quantized state) and that
the artifact written from the trained state rebuilds the same predictions.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compression
from compression import export as export_lib
from compression.errors import InputError
from configs import common
import data
import models
import train

CELLS = ('rnn', 'lstm', 'gru')
LAYERS = (1, 2)
H = 8
STEPS = 3

# name -> (compression.methods, {section: {key: value}}).
CASES = {
    'qat_symmetric': ('quantize', {'quantize': dict(bits=4)}),
    'qat_asymmetric': ('quantize', {'quantize': dict(
        bits=4, scheme='asymmetric', scale='minmax')}),
    'qat_learned': ('quantize', {'quantize': dict(bits=4, scale='learned')}),
    'ptq': ('quantize', {'quantize': dict(bits=3, scale='percentile')}),
    'kmeans': ('kmeans', {'kmeans': dict(clusters=4, iterations=5)}),
    'prune': ('prune', {'prune': dict(sparsity=0.5, schedule='oneshot')}),
    'prune_block': ('prune', {'prune': dict(
        sparsity=0.5, schedule='oneshot', granularity='block', block='1x4')}),
    'prune_unit': ('prune', {'prune': dict(
        sparsity=0.5, schedule='oneshot', granularity='unit')}),
    'lowrank': ('lowrank', {'lowrank': dict(rank=2, regex='.*kernel')}),
    'dct': ('dct', {'dct': dict(keep=0.5, block=0, regex='.*kernel')}),
    'hidden_state': ('', {}),
    'distill': ('', {}),
}


def _config(cell: str, layers: int, case: str):
  c = common.base_config()
  c.name = f'matrix_{case}'
  c.seed = 0
  c.data.name = 'synthetic_classification'
  c.data.kwargs.num_train = 32
  c.data.kwargs.num_test = 16
  c.data.kwargs.min_len = 4
  c.data.kwargs.max_len = 8
  c.data.kwargs.features = 3
  c.data.kwargs.num_classes = 3
  c.data.batch_size = 16
  c.data.eval_batch_size = 16
  c.model.cell = cell
  c.model.hidden = H
  c.model.layers = layers
  c.model.pooling = 'attention' if case == 'distill' else 'last'
  c.train.steps = STEPS
  c.optimizer.warmup_steps = 0
  methods, sections = CASES[case]
  c.compression.methods = methods
  for name, values in sections.items():
    for key, value in values.items():
      c.compression[name][key] = value
  if case == 'ptq':
    c.compression.calibration_batches = 2
  if case == 'hidden_state':
    c.compression.hidden_state.bits = 4
    if cell == 'lstm':
      c.compression.hidden_state.cell_bits = 6
  if case == 'distill':
    c.distill.alpha = 0.5
    c.distill.feature_weight = 1.0
    c.distill.attention_weight = 1.0
  return c


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, x, lengths):
  """The model's output; models that compare equal share one compile."""
  return model.apply({'params': params}, x, lengths)


def _teacher(config, setup) -> train.Teacher:
  """A random attention-pooling teacher, wider than the student."""
  t_cfg = config.model.copy_and_resolve_references()
  t_cfg.hidden = 12
  model = models.make(t_cfg, setup.dataset.task, setup.dataset.info)
  example = setup.dataset.train
  params = model.init(jax.random.PRNGKey(7), example['x'][:2],
                      example['lengths'][:2])['params']
  return train.Teacher(model, params, 12, {})


def _kernels(tree, pattern='kernel'):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {compression.core.path_str(p): np.asarray(v) for p, v in flat
          if pattern in compression.core.path_str(p)}


def _check_compressed(case, config, state, dense, setup, header):
  """Asserts the evidence that `case`'s compression happened."""
  kernels = _kernels(dense)
  encodings = {leaf['path']: leaf['encoding'] for leaf in header['leaves']}
  assert not any('fallback' in e for e in encodings.values()), encodings
  if case.startswith(('qat', 'ptq')):
    bits = config.compression.quantize.bits
    for path, w in kernels.items():
      assert encodings[path] == 'quantize', (path, encodings[path])
      # Per output channel, at most 2^bits distinct values (the grid).
      for col in w.reshape(-1, w.shape[-1]).T:
        assert len(np.unique(col)) <= 2 ** bits, path
  elif case == 'kmeans':
    for path, w in kernels.items():
      assert encodings[path] == 'kmeans'
      assert len(np.unique(w)) <= config.compression.kmeans.clusters, path
  elif case in ('prune', 'prune_block'):
    for path, w in kernels.items():
      if path.startswith('rnn/'):
        assert np.mean(w == 0) >= 0.5 - 1e-6, (path, np.mean(w == 0))
        assert encodings[path].startswith('prune')
        if case == 'prune_block':
          # Whole 1x4 tiles are zero or kept.
          tiles = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
          assert set(np.unique(tiles)) <= {0, 4}, path
  elif case == 'prune_unit':
    assert header['model']['hidden'] == H // 2
  elif case == 'lowrank':
    for path in ('rnn/layer_0/recurrent_kernel', 'head/kernel'):
      node = dense
      for part in path.split('/'):
        node = node[part]
      assert set(node) == {'u', 'v'} and node['u'].shape[1] == 2, path
  elif case == 'dct':
    for path in kernels:
      assert encodings[path] == 'dct', (path, encodings[path])
  elif case == 'hidden_state':
    batch = data.train_batch(setup.dataset.train, 16, 0, 0)
    _, inter = setup.model.apply({'params': dense}, batch['x'],
                                 batch['lengths'], mutable=['intermediates'])
    step = 1.0 / (2 ** 3 - 1)  # 4-bit grid over [-1, 1].
    for h in inter['intermediates']['hidden_states']:
      h = np.asarray(h)
      np.testing.assert_allclose(h / step, np.round(h / step), atol=1e-4)
    assert header['hidden_state']['bits'] == 4
  elif case == 'distill':
    assert set(state.aux) == {'projection'}


def _matrix():
  """(case, cell, layers) triples: every method on every cell, the layer
  count alternating so that each method runs with one and with two layers
  (on different cells) and each cell with both (under different methods).
  Every case compiles its own training step; the full product of the three
  would double the cost for little more coverage."""
  out = []
  for i, case in enumerate(sorted(CASES)):
    for j, cell in enumerate(CELLS):
      out.append((case, cell, LAYERS[(i + j) % 2]))
  return out


@pytest.mark.parametrize('case, cell, layers', _matrix())
def test_method_on_cell(case, cell, layers, tmp_path):
  config = _config(cell, layers, case)
  setup = train.build(config)
  if case == 'distill':
    setup = setup._replace(teacher=_teacher(config, setup))
  state = train.init_state(config, setup)
  state = train.calibrate(config, setup, state)
  step = train.make_train_step(setup, config)
  first = None
  for i in range(STEPS):
    batch = data.train_batch(setup.dataset.train, 16, 0, i)
    state, metrics = step(state, batch, setup.teacher.params
                          if setup.teacher else {})
    if first is None:
      first = metrics
  assert int(state.bad_step) < 0
  if case == 'distill':
    # The objective holds the distillation terms, not only the label loss.
    assert float(first['objective']) != pytest.approx(float(first['loss']))
  dense = jax.device_get(setup.compressor.apply(state.params,
                                                state.comp_state))
  export_lib.write_run(config, setup.dataset.task, setup.dataset.info,
                       setup.compressor, jax.device_get(state.params),
                       jax.device_get(state.comp_state), dense, str(tmp_path))
  art = export_lib.read(os.path.join(tmp_path, export_lib.FILENAME))
  _check_compressed(case, config, state, dense, setup, art.header)
  test = setup.dataset.test
  x, lengths = jnp.asarray(test['x']), jnp.asarray(test['lengths'])
  want = _forward(setup.model, dense, x, lengths)
  got = _forward(art.model, art.params, x, lengths)  # Compiled once if equal.
  np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_cell_state_bits_on_a_cell_without_one_is_refused():
  config = _config('gru', 1, 'hidden_state')
  config.compression.hidden_state.cell_bits = 8
  with pytest.raises(InputError, match='cell_bits: only an lstm'):
    train.build(config)
