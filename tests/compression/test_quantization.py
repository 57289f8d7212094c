"""Tests of fake quantization: exact grids, gradients, PTQ, export, h_t grid."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import compression
import models
from compression import accounting
from compression import quantization as q
from compression.errors import InputError


def _params(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  f32 = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  return {'rnn': {'layer_0': {'input_kernel': f32(3, 12),
                              'recurrent_kernel': f32(4, 12),
                              'bias': f32(12)}},
          'head': {'kernel': f32(4, 5), 'bias': f32(5)}}


def _codes(x, bits, scheme, granularity):
  """(codes, scale, zero point) through the public building blocks."""
  sym = scheme == 'symmetric'
  method = 'absmax' if sym else 'minmax'
  lo, hi = q.value_range(x, method, granularity == 'per_channel', 99.9, sym)
  scale, zero = q.scale_and_zero_point(lo, hi, bits, sym)
  qmin, qmax = q.int_range(bits, sym)
  return q.quantize_codes(x, scale, zero, qmin, qmax), scale, zero


def test_integer_ranges():
  assert q.int_range(8, True) == (-127, 127)
  assert q.int_range(4, True) == (-7, 7)
  assert q.int_range(2, True) == (-1, 1)
  assert q.int_range(8, False) == (0, 255)
  assert q.int_range(2, False) == (0, 3)


@pytest.mark.parametrize('scheme, granularity, x, codes, scale, zero', [
    # 3-bit symmetric, absmax 3 -> step 1; -2.5 and 0.5 round half to even.
    ('symmetric', 'per_tensor', [[-2.5, 0.5], [1.4, 3.0]],
     [[-2, 0], [1, 3]], 1.0, 0.0),
    # Per column: absmax 3 and 6 -> steps 1 and 2; 5 / 2 = 2.5 -> 2.
    ('symmetric', 'per_channel', [[-2.5, 5.0], [3.0, -6.0]],
     [[-2, 2], [3, -3]], [1.0, 2.0], [0.0, 0.0]),
])
def test_exact_symmetric_grid_3_bits(scheme, granularity, x, codes, scale,
                                     zero):
  got, s, z = _codes(jnp.asarray(x), 3, scheme, granularity)
  np.testing.assert_array_equal(got, codes)
  np.testing.assert_array_equal(s, scale)
  np.testing.assert_array_equal(z, zero)


@pytest.mark.parametrize('granularity, x, codes, scale, zero', [
    # 2-bit unsigned [0, 3]: range [-1, 2], step 1, zero point 1; 0.5 -> 0+1.
    ('per_tensor', [[-1.0, 0.5], [1.0, 2.0]], [[0, 1], [2, 3]], 1.0, 1.0),
    # Column 1 is [3, 6]: widened to [0, 6] so zero stays exact, step 2.
    ('per_channel', [[-1.0, 3.0], [2.0, 6.0]], [[0, 2], [3, 3]], [1.0, 2.0],
     [1.0, 0.0]),
])
def test_exact_asymmetric_grid_2_bits(granularity, x, codes, scale, zero):
  got, s, z = _codes(jnp.asarray(x), 2, 'asymmetric', granularity)
  np.testing.assert_array_equal(got, codes)
  np.testing.assert_array_equal(s, scale)
  np.testing.assert_array_equal(z, zero)


def test_compressor_apply_and_export_give_the_hand_grid():
  x = jnp.asarray([[-2.5, 5.0], [3.0, -6.0]])
  comp = q.make(q.config(bits=3, regex='w'))
  params, state = comp.init({'w': x})
  np.testing.assert_array_equal(comp.apply(params, state)['w'],
                                [[-2.0, 4.0], [3.0, -6.0]])
  codes = comp.export(params, state)['w'].codes
  # Unsigned codes u = q + 3 of a 3-bit symmetric grid (zero point implied).
  np.testing.assert_array_equal(codes.u.reshape(-1), [1, 5, 6, 0])
  assert codes.bits == 3 and codes.zero_point is None
  # Accounting packs them 3 bits each, LSB first: 1 | 5 << 3 | 6 << 6 = 425
  # = bytes 169, 1 (the last code is 0).
  packed = accounting.pack_bits(codes.u, 3)
  np.testing.assert_array_equal(packed, [169, 1])
  assert packed.dtype == np.uint8 and packed.size == 2


@pytest.mark.parametrize('bits', [2, 4, 8])
@pytest.mark.parametrize('scheme', ['symmetric', 'asymmetric'])
@pytest.mark.parametrize('granularity', ['per_tensor', 'per_channel'])
def test_error_at_most_half_a_step(bits, scheme, granularity):
  x = jnp.asarray(np.random.default_rng(bits).standard_normal((16, 6)),
                  jnp.float32)
  codes, scale, zero = _codes(x, bits, scheme, granularity)
  qmin, qmax = q.int_range(bits, scheme == 'symmetric')
  out = q.fake_quant(x, scale, zero, qmin, qmax, 1.0)
  err = jnp.abs(out - x)
  assert bool(jnp.all(err <= scale / 2 * (1 + 1e-6)))
  assert bool(jnp.all((codes >= qmin) & (codes <= qmax)))
  # Zero is exactly representable.
  np.testing.assert_array_equal(
      q.fake_quant(jnp.zeros_like(x), scale, zero, qmin, qmax, 1.0), 0.0)


def test_straight_through_gradient_is_one_where_the_rounded_code_is_in_range():
  # 3-bit symmetric, step 1: codes -3..3. -3.2 and 3.1 round to the ends
  # (represented: gradient 1); -3.5 and 3.5 round half to even to -4 and 4
  # (clipped: 0); -3.49 rounds to -3.
  x = jnp.asarray([-5.0, -3.5, -3.49, -3.2, -3.0, -1.2, 0.3, 2.5, 3.0, 3.1,
                   3.5, 7.0])
  grad = jax.grad(lambda x: jnp.sum(q.fake_quant(
      x, jnp.float32(1.0), jnp.float32(0.0), -3, 3, 1.0)))(x)
  np.testing.assert_array_equal(grad, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
  # Asymmetric 2-bit, step 0.5, zero point 1: codes 0..3 = [-0.5, 1.0];
  # -0.6 (code 0) and 1.2 (code 3) are represented, -0.8 (code -1) and
  # 1.3 (code 4) are clipped.
  x = jnp.asarray([-0.8, -0.6, -0.5, 0.2, 1.0, 1.2, 1.3])
  grad = jax.grad(lambda x: jnp.sum(q.fake_quant(
      x, jnp.float32(0.5), jnp.float32(1.0), 0, 3, 1.0)))(x)
  np.testing.assert_array_equal(grad, [0, 1, 1, 1, 1, 1, 0])


@pytest.mark.parametrize('bits', [8, 4])
@pytest.mark.parametrize('overrides', [
    dict(scheme='asymmetric', scale='minmax'),  # The rounded zero point.
    dict(),  # Symmetric absmax: float rounding at the column maximum.
])
def test_every_weight_of_a_kernel_trains_including_its_range_ends(
    bits, overrides):
  # The grid covers each column's [min, max]; every weight is represented, so
  # every one gets gradient 1, the extremes included. (Testing the continuous
  # value w / s + z instead, the asymmetric grid left 17 of these 384 weights
  # at 8 bits, 21 at 4 bits, without gradient.)
  w = jnp.asarray(np.random.default_rng(0).standard_normal((24, 16)),
                  jnp.float32)
  comp = q.make(q.config(bits=bits, regex='w', **overrides))
  p, s = comp.init({'w': w})
  grad = jax.grad(lambda p: jnp.sum(comp.apply(p, s)['w']))(p)['w']
  np.testing.assert_array_equal(grad, np.ones(w.shape))
  sym = not overrides
  qmin, qmax = q.int_range(bits, sym)
  lo, hi = q.value_range(w, 'minmax', True, symmetric=sym)
  # The extremes really sit beyond the grid's continuous ends, so a mask on
  # w / s + z would fail them: the case is not vacuous (symmetric 4-bit
  # happens to have no such column maximum in this kernel).
  scale, zero = q.scale_and_zero_point(lo, hi, bits, sym)
  v = w * (1.0 / scale) + zero
  beyond = int(jnp.sum((v < qmin) | (v > qmax)))
  assert beyond > 0 or (sym and bits == 4)
  # With the range halved (a PTQ clipping factor), weights whose rounded code
  # falls outside are clipped and get no gradient; the rest get 1.
  halved = jax.tree.map(lambda c: c * 0.5, s)
  grad = jax.grad(lambda p: jnp.sum(comp.apply(p, halved)['w']))(p)['w']
  scale, zero = q.scale_and_zero_point(lo * 0.5, hi * 0.5, bits, sym)
  code = np.round(np.asarray(w) * np.asarray(1.0 / scale)) + np.asarray(zero)
  want = (code >= qmin) & (code <= qmax)
  assert want.any() and not want.all()
  np.testing.assert_array_equal(grad, want.astype(np.float32))


def test_qat_apply_passes_gradients_to_master_weights():
  params = _params()
  comp = q.make(q.config(bits=4))
  p, s = comp.init(params)
  grads = jax.jit(jax.grad(lambda p: sum(
      jnp.sum(l) for l in jax.tree.leaves(comp.apply(p, s)))))(p)
  # Absmax scales cover every weight: all inside the range.
  for leaf in jax.tree.leaves(grads):
    np.testing.assert_array_equal(leaf, 1.0)


def test_learned_step_gradient_matches_finite_differences():
  """LSQ's step gradient is the derivative of the straight-through surrogate.

  The surrogate holds each element's rounding residual round(v) - v at its
  value for the current step (the straight-through assumption) and is exact
  at the clipped ends, where the output is qmin * s or qmax * s. The chain
  rule through log_step and LSQ's gradient scale 1/sqrt(n * qmax) apply.
  """
  w = jnp.asarray([[0.9, -0.2, 0.05], [-1.3, 0.4, 0.7], [0.25, -0.6, 2.0],
                   [0.1, 0.33, -0.8]], jnp.float32)
  comp = q.make(q.config(bits=3, regex='w', scale='learned',
                         granularity='per_tensor'))
  params, state = comp.init({'w': w})
  # Shrink the step so some weights are clipped.
  log_s0 = params['_quantize']['w']['log_step'] - 0.4
  params['_quantize']['w']['log_step'] = log_s0
  c = jnp.asarray(np.random.default_rng(0).standard_normal(w.shape),
                  jnp.float32)
  loss = lambda p: jnp.sum(c * comp.apply(p, state)['w'])
  got = float(jax.grad(loss)(params)['_quantize']['w']['log_step'])

  wn, cn = np.asarray(w, np.float64), np.asarray(c, np.float64)
  s0 = float(np.exp(np.float64(log_s0)))
  v0 = wn / s0
  # Represented: the rounded code is in range (the straight-through mask).
  inside = np.abs(np.round(v0)) <= 3
  assert inside.any() and not inside.all()
  residual = np.where(inside, np.round(v0) - v0, 0.0)

  def surrogate(log_s):
    s = np.exp(log_s)
    return np.sum(cn * s * np.where(inside, wn / s + residual,
                                    np.clip(wn / s, -3, 3)))

  eps = 1e-4
  fd = (surrogate(float(log_s0) + eps) - surrogate(float(log_s0) - eps)) / (
      2 * eps)
  expected = fd / np.sqrt(w.size * 3)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  assert abs(got) > 1e-3


def test_learned_step_is_a_parameter_leaf_and_apply_strips_it():
  params = _params()
  comp = q.make(q.config(bits=4, scale='learned'))
  p, s = comp.init(params)
  assert set(p) == {'rnn', 'head', '_quantize'}
  assert compression.param_paths(p['_quantize']) == [
      'head/kernel/log_step', 'rnn/layer_0/input_kernel/log_step',
      'rnn/layer_0/recurrent_kernel/log_step']
  assert p['_quantize']['head']['kernel']['log_step'].shape == (5,)
  dense = comp.apply(p, s)
  assert jax.tree.structure(dense) == jax.tree.structure(params)


@pytest.mark.parametrize('overrides', [
    dict(bits=8), dict(bits=4, scheme='asymmetric'),
    dict(bits=3, granularity='per_tensor', scheme='asymmetric'),
    dict(bits=4, scale='learned'), dict(bits=5, scale='percentile'),
    dict(bits=2, scale='learned', scheme='asymmetric'),
])
def test_decode_of_export_equals_apply_exactly(overrides):
  params = _params(1)
  comp = q.make(q.config(**overrides))
  p, s = comp.init(params)
  eager = comp.apply(p, s)
  jitted = jax.jit(comp.apply)(p, s)
  exported = comp.export(p, s)
  assert sorted(exported) == ['head/kernel', 'rnn/layer_0/input_kernel',
                              'rnn/layer_0/recurrent_kernel']
  for path, entry in exported.items():
    keys = path.split('/')
    want = np.asarray(eager[keys[0]][keys[1]][keys[2]] if len(keys) == 3
                      else eager[keys[0]][keys[1]])
    got = accounting.rebuild([entry], want.shape)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    jit_leaf = jitted
    for k in keys:
      jit_leaf = jit_leaf[k]
    np.testing.assert_array_equal(got, np.asarray(jit_leaf))
    bits = overrides['bits']
    assert entry.codes.u.dtype == np.uint8 and entry.codes.u.size == want.size
    assert entry.codes.u.max() < 2 ** bits
    assert accounting.pack_bits(entry.codes.u, bits).size == -(
        -want.size * bits // 8)
    if overrides.get('scheme') == 'asymmetric':
      assert entry.codes.zero_point.dtype == np.uint8
    else:
      assert entry.codes.zero_point is None


def test_pack_bits_by_hand_and_round_trip():
  np.testing.assert_array_equal(accounting.pack_bits([1, 2, 15, 0], 4), [0x21, 0x0F])
  # 2-bit: 1 | 2 << 2 | 3 << 4 | 0 << 6 = 57; the fifth code starts byte 2.
  np.testing.assert_array_equal(accounting.pack_bits([1, 2, 3, 0, 3], 2), [57, 3])
  rng = np.random.default_rng(0)
  for bits in (1, 2, 3, 4, 5, 8):
    for count in (1, 7, 33):
      codes = rng.integers(0, 2 ** bits, count).astype(np.uint8)
      packed = accounting.pack_bits(codes, bits)
      assert packed.dtype == np.uint8 and packed.size == -(-count * bits // 8)
      np.testing.assert_array_equal(accounting.unpack_bits(packed, bits, count), codes)
  with pytest.raises(InputError):
    accounting.pack_bits([4], 2)
  with pytest.raises(InputError):
    accounting.unpack_bits(np.zeros(1, np.uint8), 4, 3)


def test_calibrate_picks_the_lowest_loss_clipping():
  # One outlier stretches the absmax range; a percentile or MSE clip wins.
  w = np.linspace(-1.0, 1.0, 1000).astype(np.float32)
  w[5] = 20.0
  w = w.reshape(40, 25)
  params = {'w': jnp.asarray(w)}
  comp = q.make(q.config(bits=3, regex='w', granularity='per_tensor'))
  p, s = comp.init(params)
  # The loss ignores the outlier, so resolution on the rest is what counts.
  keep = jnp.asarray(w != 20.0)
  loss_fn = lambda dense: float(jnp.sum(jnp.where(
      keep, jnp.square(dense['w'] - params['w']), 0.0)))
  before = loss_fn(comp.apply(p, s))
  tuned = comp.calibrate(p, s, loss_fn)
  after = loss_fn(comp.apply(p, tuned))
  assert after < 0.5 * before
  assert float(tuned['w']['clip']) < 1.0
  assert jax.tree.map(jnp.shape, tuned) == jax.tree.map(jnp.shape, s)
  candidates = [loss_fn(comp.apply(p, {'w': {'clip': f}}))
                for f in q.candidate_clips(params['w'], q.parse(
                    q.config(bits=3, regex='w', granularity='per_tensor')))]
  assert after == min(candidates)


@pytest.mark.parametrize('field, value, match', [
    ('bits', 9, r'^compression.quantize.bits: 9 outside 2..8$'),
    ('bits', 1, r'compression.quantize.bits: 1 outside 2..8'),
    ('scheme', 'signed', r'compression.quantize.scheme: unknown .signed.'),
    ('granularity', 'per_row', r'compression.quantize.granularity: unknown'),
    ('scale', 'max', r'compression.quantize.scale: unknown .max.; valid: '
     r'absmax, learned, minmax, percentile'),
    ('percentile', 30.0, r'compression.quantize.percentile'),
])
def test_bad_values_are_one_line_errors(field, value, match):
  section = q.config()
  section[field] = value
  with pytest.raises(InputError, match=match) as e:
    q.make(section)
  assert '\n' not in str(e.value)


def test_regex_matching_nothing_is_an_error():
  comp = q.make(q.config(regex='.*kernal'))
  with pytest.raises(InputError, match='compression.quantize.regex'):
    comp.init(_params())
  with pytest.raises(InputError, match='compression.quantize.foo: unknown'):
    q.config(foo=1)


def test_registered_and_built_by_make():
  cfg = ml_collections.ConfigDict({
      'methods': 'quantize', 'quantize': q.config(bits=4)})
  comp = compression.make(cfg)
  p, s = comp.init(_params())
  out = comp.apply(p, s)
  assert out['rnn']['layer_0']['bias'] is p['rnn']['layer_0']['bias']


def _hidden_section(bits, cell_bits=0, cell_clip=4.0):
  return ml_collections.ConfigDict(
      {'bits': bits, 'cell_bits': cell_bits, 'cell_clip': cell_clip})


# The Elman cell's h' = tanh(.) is the simplest case of the same hook.
@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_hidden_state_lies_on_the_grid(cell):
  state_fn, cell_fn = q.state_quantizers(_hidden_section(3, 3, 2.0))
  model = models.make(
      ml_collections.ConfigDict(dict(
          cell=cell, hidden=6, layers=1, pooling='last', embed_dim=4,
          dtype='float32', unroll=1)),
      'classification', {'num_classes': 3},
      state_fn=state_fn, cell_state_fn=cell_fn)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 3)) * 3,
                  jnp.float32)
  lengths = jnp.asarray([5, 3], jnp.int32)
  variables = jax.jit(model.init)(jax.random.key(0), x, lengths)
  _, inter = jax.jit(functools.partial(model.apply, mutable=['intermediates']))(
      variables, x, lengths)
  for h in inter['intermediates']['hidden_states']:
    scaled = np.asarray(h) * 3  # 3-bit grid over [-1, 1]: step 1/3.
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-5)
    assert len(np.unique(np.round(scaled))) > 1
  # Straight-through: gradients reach every kernel and stay finite.
  grads = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, x, lengths))))(
      variables)
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf))
  assert float(jnp.abs(grads['params']['rnn']['layer_0']['input_kernel']).sum()
               ) > 0


def test_cell_state_grid_and_clipping():
  _, cell_fn = q.state_quantizers(_hidden_section(4, 3, 1.5))
  c = jnp.asarray([-2.0, -0.7, 0.2, 1.5, 3.0])
  # Step 0.5 over [-1.5, 1.5]; -0.7 -> -1 step, 0.2 -> 0.
  np.testing.assert_array_equal(cell_fn(c), [-1.5, -0.5, 0.0, 1.5, 1.5])
  grad = jax.grad(lambda c: jnp.sum(cell_fn(c)))(c)
  np.testing.assert_array_equal(grad, [0, 1, 1, 1, 0])
  off, off_cell = q.state_quantizers(_hidden_section(0, 0))
  assert off is None and off_cell is None


@pytest.mark.parametrize('section, match', [
    (_hidden_section(9), r'compression.hidden_state.bits: 9 outside 2..8'),
    (_hidden_section(4, 1), r'compression.hidden_state.cell_bits: 1 outside'),
    (_hidden_section(4, 4, 0.0), r'compression.hidden_state.cell_clip'),
])
def test_hidden_state_bad_values(section, match):
  with pytest.raises(InputError, match=match):
    q.state_quantizers(section)
