"""Tests of the recurrent layers against Flax's GRUCell and a loop reference."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from models import cells
from tests.models import reference

B, T, F, H = 3, 6, 4, 5
LENGTHS = np.array([6, 2, 4], np.int32)


def _inputs(seed: int = 0) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).standard_normal((B, T, F)),
                     jnp.float32)


def _random_params(cell: str, seed: int = 1) -> dict:
  """Layer parameters with every leaf random (biases too), so none hides."""
  layer = cells.RecurrentLayer(cell=cell, hidden=H)
  shapes = jax.eval_shape(layer.init, jax.random.key(0), _inputs())['params']
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), jnp.float32),
      shapes)


@pytest.mark.parametrize('cell', cells.CELLS)
def test_matches_loop_reference_with_padding(cell):
  params = _random_params(cell)
  x = _inputs()
  outputs, carry = cells.RecurrentLayer(cell=cell, hidden=H).apply(
      {'params': params}, x, jnp.asarray(LENGTHS))
  np_params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                                     params)
  for b, n in enumerate(LENGTHS):
    ref_out, ref_final = reference.run(cell, np_params,
                                       np.asarray(x[b, :n], np.float64))
    np.testing.assert_allclose(outputs[b, :n], ref_out, atol=1e-5)
    # Padded steps emit zeros and leave the carry alone.
    np.testing.assert_array_equal(outputs[b, n:], 0.0)
    for got, want in zip(jax.tree_util.tree_leaves(carry),
                         jax.tree_util.tree_leaves(ref_final)):
      np.testing.assert_allclose(got[b], want, atol=1e-5)


def test_gru_equals_flax_gru_cell():
  x = _inputs()
  flax_rnn = nn.RNN(nn.GRUCell(H))
  fp = flax_rnn.init(jax.random.key(0), x)['params']['cell']
  # Flax initialises its biases to zero; randomise them so the mapping of
  # every bias is checked.
  rng = np.random.default_rng(3)
  fp = jax.tree_util.tree_map(
      lambda a: a + jnp.asarray(0.3 * rng.standard_normal(a.shape),
                                jnp.float32), fp)
  ours = {
      'input_kernel': jnp.concatenate(
          [fp[g]['kernel'] for g in ('ir', 'iz', 'in')], axis=-1),
      'bias': jnp.concatenate([fp[g]['bias'] for g in ('ir', 'iz', 'in')]),
      'recurrent_kernel': jnp.concatenate(
          [fp[g]['kernel'] for g in ('hr', 'hz', 'hn')], axis=-1),
      'recurrent_bias': fp['hn']['bias'],
  }
  want = flax_rnn.apply({'params': {'cell': fp}}, x)
  got, carry = cells.RecurrentLayer(cell='gru', hidden=H).apply(
      {'params': ours}, x)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(carry, want[:, -1], atol=1e-5)


def _randomized(fp, seed):
  """Flax zero-initialises biases; randomise every leaf so each is checked."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda a: a + jnp.asarray(0.3 * rng.standard_normal(a.shape),
                                jnp.float32), fp)


def test_lstm_equals_flax_lstm_cell():
  x = _inputs()
  flax_rnn = nn.RNN(nn.LSTMCell(H))
  fp = _randomized(flax_rnn.init(jax.random.key(0), x)['params']['cell'], 4)
  gates = ('i', 'f', 'g', 'o')  # Our gate order in the 4H columns.
  ours = {
      'input_kernel': jnp.concatenate([fp['i' + g]['kernel'] for g in gates],
                                      axis=-1),
      # Flax puts the gate biases on the hidden-side products.
      'bias': jnp.concatenate([fp['h' + g]['bias'] for g in gates]),
      'recurrent_kernel': jnp.concatenate(
          [fp['h' + g]['kernel'] for g in gates], axis=-1),
  }
  want = flax_rnn.apply({'params': {'cell': fp}}, x)
  got, carry = cells.RecurrentLayer(cell='lstm', hidden=H).apply(
      {'params': ours}, x)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(cells.final_hidden(carry), want[:, -1],
                             atol=1e-5)


def test_rnn_equals_flax_simple_cell():
  x = _inputs()
  flax_rnn = nn.RNN(nn.SimpleCell(H))
  fp = _randomized(flax_rnn.init(jax.random.key(0), x)['params']['cell'], 5)
  ours = {'input_kernel': fp['i']['kernel'], 'bias': fp['i']['bias'],
          'recurrent_kernel': fp['h']['kernel']}
  want = flax_rnn.apply({'params': {'cell': fp}}, x)
  got, carry = cells.RecurrentLayer(cell='rnn', hidden=H).apply(
      {'params': ours}, x)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(cells.final_hidden(carry), want[:, -1],
                             atol=1e-5)


@pytest.mark.parametrize('cell', cells.CELLS)
def test_gradients_match_reference(cell):
  params = _random_params(cell)
  x = _inputs()
  weights = jnp.asarray(np.random.default_rng(5).standard_normal((B, T, H)),
                        jnp.float32)
  layer = cells.RecurrentLayer(cell=cell, hidden=H)

  def loss(p, x):
    out, carry = layer.apply({'params': p}, x, jnp.asarray(LENGTHS))
    return jnp.sum(out * weights) + jnp.sum(cells.final_hidden(carry) ** 2)

  def ref_loss(p, x):
    total = 0.0
    for b, n in enumerate(LENGTHS):
      out, final = reference.run(cell, p, x[b, :n], xp=jnp)
      h = final[0] if cell == 'lstm' else final
      total += jnp.sum(out * weights[b, :n]) + jnp.sum(h ** 2)
    return total

  # Compiled: eager dispatch of the reference's many small ops is slower.
  got = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  want = jax.jit(jax.grad(ref_loss, argnums=(0, 1)))(params, x)
  for g, w in zip(jax.tree_util.tree_leaves(got),
                  jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
  # Padded inputs get no gradient.
  np.testing.assert_array_equal(got[1][1, LENGTHS[1]:], 0.0)


def test_gru_gradient_against_finite_differences():
  params = _random_params('gru')
  x = _inputs()[:, :3]
  layer = cells.RecurrentLayer(cell='gru', hidden=H)

  @jax.jit
  def loss(p):
    out, _ = layer.apply({'params': p}, x, jnp.asarray([3, 1, 2], jnp.int32))
    return jnp.sum(jnp.sin(out))

  jtu.check_grads(loss, (params,), order=1, modes=['rev'], eps=1e-2,
                  atol=2e-2, rtol=2e-2)


def test_hoisted_input_projection_is_the_same_function():
  params = _random_params('lstm')
  lengths = jnp.asarray(LENGTHS)
  a = cells.RecurrentLayer(cell='lstm', hidden=H, hoist_input=False).apply(
      {'params': params}, _inputs(), lengths)
  b = cells.RecurrentLayer(cell='lstm', hidden=H, hoist_input=True,
                           unroll=2).apply({'params': params}, _inputs(),
                                           lengths)
  for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(u, v, atol=1e-6)


def test_state_fn_hooks_act_inside_the_scan():
  params = _random_params('lstm')
  quantize = lambda h: jnp.round(h * 4.0) / 4.0
  out, _ = cells.RecurrentLayer(cell='lstm', hidden=H, state_fn=quantize
                                ).apply({'params': params}, _inputs())
  np.testing.assert_array_equal(out * 4.0, jnp.round(out * 4.0))
  # A zero cell state makes h = o * tanh(0) = 0 at every step.
  out, _ = cells.RecurrentLayer(cell='lstm', hidden=H,
                                cell_state_fn=jnp.zeros_like).apply(
                                    {'params': params}, _inputs())
  np.testing.assert_array_equal(out, 0.0)


def test_bfloat16_compute_keeps_float32_params_and_is_close():
  x = _inputs()
  f32 = cells.RecurrentLayer(cell='gru', hidden=H)
  params = f32.init(jax.random.key(0), x)['params']
  bf16 = cells.RecurrentLayer(cell='gru', hidden=H, dtype='bfloat16')
  assert all(p.dtype == jnp.float32
             for p in jax.tree_util.tree_leaves(
                 bf16.init(jax.random.key(0), x)))
  out, _ = bf16.apply({'params': params}, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, f32.apply({'params': params}, x)[0],
                             atol=5e-2)


def test_init_shapes_and_lstm_forget_bias():
  params = cells.RecurrentLayer(cell='lstm', hidden=H).init(
      jax.random.key(0), _inputs())['params']
  assert params['input_kernel'].shape == (F, 4 * H)
  assert params['recurrent_kernel'].shape == (H, 4 * H)
  want = np.zeros(4 * H)
  want[H:2 * H] = 1.0
  np.testing.assert_array_equal(params['bias'], want)


def test_stack_feeds_each_layer_the_previous_outputs():
  x = _inputs()
  lengths = jnp.asarray(LENGTHS)
  stack = cells.RecurrentStack(cell='rnn', hidden=H, layers=2)
  layer = cells.RecurrentLayer(cell='rnn', hidden=H)

  @jax.jit
  def run(x, lengths):
    params = stack.init(jax.random.key(0), x, lengths)['params']
    first, _ = layer.apply({'params': params['layer_0']}, x, lengths)
    return (stack.apply({'params': params}, x, lengths), first,
            layer.apply({'params': params['layer_1']}, first, lengths))

  (outputs, carries), first, (second, carry) = run(x, lengths)
  np.testing.assert_allclose(outputs[0], first, atol=1e-6)
  np.testing.assert_allclose(outputs[1], second, atol=1e-6)
  np.testing.assert_allclose(carries[1], carry, atol=1e-6)


def test_lengths_are_traced_not_static():
  layer = cells.RecurrentLayer(cell='gru', hidden=H)
  params = layer.init(jax.random.key(0), _inputs())['params']
  traces = []

  @jax.jit
  def run(p, x, lengths):
    traces.append(1)
    return layer.apply({'params': p}, x, lengths)

  run(params, _inputs(), jnp.asarray(LENGTHS))
  run(params, _inputs(1), jnp.asarray([1, 1, 1], jnp.int32))
  assert len(traces) == 1


@pytest.mark.parametrize('dtype, atol', [(jnp.float32, 1e-5),
                                         (jnp.bfloat16, 0.1)])
def test_matmul_through_factor_dict(dtype, atol):
  # (x U) V with U (4, 2), V (2, 3): the same product as x (U V).
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((2, 3, 4)), dtype)
  u = jnp.asarray(rng.standard_normal((4, 2)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
  got = cells.matmul(x, {'u': u, 'v': v})
  assert got.shape == (2, 3, 3) and got.dtype == jnp.float32
  want = np.asarray(x, np.float64) @ (np.asarray(u, np.float64) @ np.asarray(
      v, np.float64))
  np.testing.assert_allclose(got, want, atol=atol, rtol=0.02)
