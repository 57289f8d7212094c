"""Tests of the task heads, pooling, intermediates, parameter paths, `make`."""

from __future__ import annotations

import itertools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from compression.errors import InputError
from models import sequence

B, T, F, H, C = 2, 5, 3, 4, 3
LENGTHS = jnp.asarray([5, 2], jnp.int32)


def _cfg(**overrides) -> types.SimpleNamespace:
  cfg = dict(cell='gru', hidden=H, layers=2, pooling='last', embed_dim=6,
             dtype='float32', unroll=1)
  cfg.update(overrides)
  return types.SimpleNamespace(**cfg)


def _inputs(seed: int = 0) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).standard_normal((B, T, F)),
                     jnp.float32)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  """{'/'-joined parameter path: shape}."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(k.key for k in path): leaf.shape for path, leaf in flat}


def _paths(tree) -> set[str]:
  return set(_shapes(tree))


@pytest.mark.parametrize('cell,pooling',
                         itertools.product(models.CELLS, models.POOLINGS))
def test_classifier_shapes_padding_and_intermediates(cell, pooling):
  # Two layers where hidden_states must hold both; one elsewhere to keep the
  # compile time of this 9-way matrix down.
  layers = 2 if pooling == 'attention' else 1
  model = models.make(_cfg(cell=cell, pooling=pooling, layers=layers),
                      'classification', {'num_classes': C, 'input_dim': F})
  x = _inputs()

  @jax.jit
  def run(x):
    # One compiled call: compiling dominates at these sizes.
    variables = model.init(jax.random.key(0), x, LENGTHS)
    return (model.apply(variables, x, LENGTHS),
            model.apply(variables, x[1:, :2], LENGTHS[1:]),
            model.apply(variables, x, LENGTHS, mutable=['intermediates']))

  logits, alone, (same, state) = run(x)
  assert logits.shape == (B, C) and logits.dtype == jnp.float32
  # Garbage beyond sequence 1's length changes nothing (same shapes: no
  # recompile), and the logits equal the unpadded sequence's run alone. The
  # parameters do not depend on x's values, so both runs share them.
  padded = run(x.at[1, 2:].set(1e3))[0]
  np.testing.assert_allclose(padded, logits, atol=1e-5)
  np.testing.assert_allclose(alone[0], logits[1], atol=1e-5)
  # Sowing intermediates leaves the result alone (up to XLA fusing the two
  # copies differently).
  np.testing.assert_allclose(same, logits, atol=1e-6)
  inter = state['intermediates']
  assert [h.shape for h in inter['hidden_states']] == [(B, T, H)] * layers
  assert inter['features'].shape == (B, H)
  top = inter['hidden_states'][-1]
  if pooling == 'last':
    np.testing.assert_allclose(inter['features'],
                               top[jnp.arange(B), LENGTHS - 1], atol=1e-6)
  elif pooling == 'mean':
    np.testing.assert_allclose(inter['features'][1], top[1, :2].mean(0),
                               atol=1e-6)
  else:
    weights = inter['attention']['weights']
    assert weights.shape == (B, T)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(weights[1, 2:], 0.0)
    np.testing.assert_allclose(inter['features'],
                               jnp.einsum('bt,bth->bh', weights, top),
                               atol=1e-6)
  if pooling != 'attention':
    assert 'attention' not in inter


@pytest.mark.parametrize('cell', models.CELLS)
def test_forecaster_and_language_model_shapes(cell):
  forecaster = models.make(_cfg(cell=cell, layers=1), 'forecasting',
                           {'horizon': 2})
  lm = models.make(_cfg(cell=cell, layers=1), 'language_model',
                   {'vocab_size': 7})
  x = _inputs()
  tokens = jnp.asarray(np.arange(B * T).reshape(B, T) % 7, jnp.int32)

  @jax.jit
  def run(key, x, tokens):
    f_vars = forecaster.init(key, x)
    lm_vars = lm.init(key, tokens)
    return (forecaster.apply(f_vars, x, mutable=['intermediates']),
            lm.apply(lm_vars, tokens),
            lm.apply(lm_vars, tokens, mutable=['intermediates']))

  (pred, state), logits, (same, lm_state) = run(jax.random.key(0), x, tokens)
  assert pred.shape == (B, 2) and pred.dtype == jnp.float32
  np.testing.assert_allclose(state['intermediates']['features'],
                             state['intermediates']['hidden_states'][0][:, -1],
                             atol=1e-6)
  assert logits.shape == (B, T, 7) and logits.dtype == jnp.float32
  assert lm_state['intermediates']['features'].shape == (B, T, H)
  np.testing.assert_allclose(same, logits, atol=1e-6)


def test_parameter_paths_are_as_documented():
  x = _inputs()
  gru = models.make(_cfg(pooling='attention'), 'classification',
                    {'num_classes': C})
  # Shapes only: eval_shape compiles nothing.
  params = jax.eval_shape(gru.init, jax.random.key(0), x)['params']
  layer = {'input_kernel', 'recurrent_kernel', 'bias', 'recurrent_bias'}
  assert _paths(params) == (
      {f'rnn/layer_0/{n}' for n in layer} | {f'rnn/layer_1/{n}' for n in layer}
      | {'attention/kernel', 'head/kernel', 'head/bias'})
  shapes = _shapes(params)
  assert shapes['rnn/layer_0/input_kernel'] == (F, 3 * H)
  assert shapes['rnn/layer_1/input_kernel'] == (H, 3 * H)
  assert shapes['rnn/layer_1/recurrent_kernel'] == (H, 3 * H)
  assert shapes['rnn/layer_1/bias'] == (3 * H,)
  assert shapes['rnn/layer_1/recurrent_bias'] == (H,)
  assert shapes['attention/kernel'] == (H, 1)
  assert shapes['head/kernel'] == (H, C)

  lstm = models.make(_cfg(cell='lstm', layers=1), 'forecasting',
                     {'horizon': 2})
  assert _paths(jax.eval_shape(lstm.init, jax.random.key(0), x)['params']) == {
      'rnn/layer_0/input_kernel', 'rnn/layer_0/recurrent_kernel',
      'rnn/layer_0/bias', 'head/kernel', 'head/bias'}

  lm = models.make(_cfg(cell='rnn', layers=1), 'language_model',
                   {'vocab_size': 7})
  params = jax.eval_shape(lm.init, jax.random.key(0),
                          jnp.zeros((B, T), jnp.int32))['params']
  assert _paths(params) == {
      'embed/embedding', 'rnn/layer_0/input_kernel',
      'rnn/layer_0/recurrent_kernel', 'rnn/layer_0/bias', 'head/kernel',
      'head/bias'}
  assert params['embed']['embedding'].shape == (7, 6)
  assert params['rnn']['layer_0']['input_kernel'].shape == (6, H)


def test_masked_softmax_and_mean_pool_handle_empty_sequences():
  scores = jnp.asarray([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0]])
  weights = sequence.masked_softmax(scores, jnp.asarray([2, 0]))
  np.testing.assert_allclose(weights[0], [1 / (1 + np.e), np.e / (1 + np.e),
                                          0.0], atol=1e-6)
  np.testing.assert_array_equal(weights[1], 0.0)
  outputs = jnp.asarray([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])[..., None]
  pooled = sequence.mean_pool(outputs, jnp.asarray([2, 0]))
  np.testing.assert_allclose(pooled[:, 0], [2.0, 0.0])


@pytest.mark.parametrize('overrides,task,message', [
    (dict(cell='foo'), 'classification',
     "model.cell: unknown cell 'foo'; valid: gru, lstm, rnn"),
    (dict(pooling='max'), 'classification',
     "model.pooling: unknown pooling 'max'; valid: attention, last, mean"),
    (dict(dtype='float64'), 'classification',
     "model.dtype: unknown dtype 'float64'; valid: float32, bfloat16, "
     'float16'),
    (dict(hidden=0), 'classification', 'model.hidden: must be an integer'),
    (dict(layers=0), 'classification', 'model.layers: must be an integer'),
    (dict(unroll=0), 'classification', 'model.unroll: must be an integer'),
    ({}, 'translation', "task: unknown task 'translation'; valid: "
     'classification, forecasting, language_model'),
    ({}, 'forecasting', "data info: 'horizon' is required"),
])
def test_make_rejects_bad_input_with_one_line(overrides, task, message):
  with pytest.raises(InputError) as err:
    models.make(_cfg(**overrides), task, {'num_classes': C})
  assert str(err.value).startswith(message)
  assert '\n' not in str(err.value)


def test_make_builds_the_module_for_each_task():
  assert isinstance(models.make(_cfg(), 'classification', {'num_classes': C}),
                    models.Classifier)
  assert isinstance(models.make(_cfg(), 'forecasting', {'horizon': 1}),
                    models.Forecaster)
  lm = models.make(_cfg(), 'language_model', {'vocab_size': 9})
  assert isinstance(lm, models.LanguageModel)
  assert (lm.vocab_size, lm.embed_dim, lm.layers) == (9, 6, 2)
