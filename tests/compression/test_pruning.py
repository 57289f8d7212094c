"""Tests of compression.pruning: exact masks, schedules, training, shrink, export."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from compression import core
from compression import accounting
from compression import pruning
from compression.errors import InputError
import models

# A hand-made 4x4 kernel; |w| ranks 0.1 < 0.2 < 0.3 < 0.5 < 1 < 2 < ... < 12.
W = np.array([[1., -2., 3., -4.],
              [5., -6., 7., -8.],
              [.5, .1, -.2, .3],
              [9., -10., 11., -12.]], np.float32)


def one_kernel(w=W):
  return {'rnn': {'layer_0': {'recurrent_kernel': jnp.asarray(w)}}}


def masks_of(params, **cfg):
  cfg = dict(dict(schedule='oneshot', regex='rnn/.*'), **cfg)
  _, state = pruning.make(pruning.config(**cfg)).init(params)
  return jax.tree.map(np.asarray, state['masks'])


def test_unstructured_magnitude_mask_of_4x4():
  m = masks_of(one_kernel(), sparsity=0.375)['rnn']['layer_0']['recurrent_kernel']
  # The 6 smallest |w|: 0.1, 0.2, 0.3, 0.5, 1, 2.
  np.testing.assert_array_equal(m, [[0, 0, 1, 1], [1, 1, 1, 1],
                                    [0, 0, 0, 0], [1, 1, 1, 1]])


@pytest.mark.parametrize('block, reduce, expected', [
    # 2x2 tiles, L2: TL 8.1, TR 11.7, BL 13.5, BR 16.3 -> drop TL and TR.
    ('2x2', 'l2', [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]),
    # 1x2 stripes, mean |w|: row 2 (.3, .25) then (1.5) of row 0 go first.
    ('1x2', 'mean', [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]),
    # 4x1 columns, mean |w|: 3.9, 4.525, 5.3, 6.075 -> drop the first two.
    ('4x1', 'mean', [[0, 0, 1, 1]] * 4),
])
def test_block_masks_of_4x4(block, reduce, expected):
  m = masks_of(one_kernel(), sparsity=0.5 if block != '1x2' else 0.375,
               granularity='block', block=block, reduce=reduce)
  np.testing.assert_array_equal(
      m['rnn']['layer_0']['recurrent_kernel'], expected)


def test_block_l2_and_mean_differ():
  # Tile A = (3, 0): L2 3, mean 1.5; tile B = (2, 2): L2 2.83, mean 2.
  w = np.array([[3., 0., 2., 2.]], np.float32)
  l2 = masks_of(one_kernel(w), sparsity=0.5, granularity='block', block='1x2',
                reduce='l2')['rnn']['layer_0']['recurrent_kernel']
  mean = masks_of(one_kernel(w), sparsity=0.5, granularity='block',
                  block='1x2', reduce='mean')['rnn']['layer_0']['recurrent_kernel']
  np.testing.assert_array_equal(l2, [[1, 1, 0, 0]])
  np.testing.assert_array_equal(mean, [[0, 0, 1, 1]])


def test_taylor_mask_uses_weight_times_gradient():
  params = one_kernel()
  g = np.ones((4, 4), np.float32)
  g[3] = 0.01  # Row 3 has the largest |w| but tiny |w * g| (<= 0.12).
  comp = pruning.make(pruning.config(score='taylor', schedule='oneshot',
                                      sparsity=0.625, taylor_decay=0.0,
                                      regex='rnn/.*'))
  params, state = comp.init(params)
  grads = {'rnn': {'layer_0': {'recurrent_kernel': jnp.asarray(g)}}}
  new, state = comp.update(params, state, grads, 0)
  m = np.asarray(state['masks']['rnn']['layer_0']['recurrent_kernel'])
  # |w*g|: row 2 (.5,.1,.2,.3), row 3 (.09..0.12), then 1 and 2 of row 0.
  np.testing.assert_array_equal(m, [[0, 0, 1, 1], [1, 1, 1, 1],
                                    [0, 0, 0, 0], [0, 0, 0, 0]])
  w = np.asarray(new['rnn']['layer_0']['recurrent_kernel'])
  np.testing.assert_array_equal(w, np.where(m, W, 0))


def test_l1_penalty_and_magnitude_cut():
  comp = pruning.make(pruning.config(score='l1', l1=0.01, schedule='oneshot',
                                      sparsity=0.375, regex='rnn/.*'))
  params, state = comp.init(one_kernel())
  assert float(comp.penalty(params, state)) == pytest.approx(
      0.01 * np.abs(W).sum())
  np.testing.assert_array_equal(
      state['masks']['rnn']['layer_0']['recurrent_kernel'],
      masks_of(one_kernel(), sparsity=0.375)['rnn']['layer_0']['recurrent_kernel'])


def rnn_params():
  """An Elman RNN (G=1) with H=4: the 4x4 recurrent kernel is W."""
  return {
      'rnn': {'layer_0': {
          'input_kernel': jnp.asarray([[1., 1., 1., 1.], [1., 1., 1., 1.]]),
          'recurrent_kernel': jnp.asarray(W),
          'bias': jnp.asarray([1., 1., 1., 1.])}},
      'head': {'kernel': jnp.ones((4, 3)), 'bias': jnp.ones((3,))}}


def test_unit_mask_of_4x4_removes_rows_and_columns():
  # Unit k's group: input column k, recurrent column k and row k, bias k, head
  # row k. Squared sums (ones elsewhere: 2 + 1 + 3 = 6): unit 0: 6 + col
  # (1+25+.25+81) + row (1+4+9+16) - W00^2 1 = 142.25; unit 1: 6 + 140.01 +
  # 174 - 36 = 284.01; unit 2: 6 + 179.04 + .39 - .04 = 185.39; unit 3: 6 +
  # 224.09 + 446 - 144 = 532.09. Half the units: 0 and 2 go.
  m = masks_of(rnn_params(), sparsity=0.5, granularity='unit',
               regex='rnn/.*_kernel')
  keep = np.array([0, 1, 0, 1], bool)
  np.testing.assert_array_equal(m['rnn']['layer_0']['recurrent_kernel'],
                                keep[:, None] & keep[None, :])
  np.testing.assert_array_equal(m['rnn']['layer_0']['input_kernel'],
                                np.broadcast_to(keep, (2, 4)))
  np.testing.assert_array_equal(m['rnn']['layer_0']['bias'], keep)
  np.testing.assert_array_equal(m['head']['kernel'],
                                np.broadcast_to(keep[:, None], (4, 3)))
  assert m['head']['bias'].shape == ()  # Not part of any unit.


def test_group_lasso_equals_explicit_group_norms():
  params = rnn_params()
  sums = [142.25, 284.01, 185.39, 532.09]  # See the test above.
  comp = pruning.make(pruning.config(granularity='unit', group_lasso=0.1,
                                      schedule='oneshot', sparsity=0.0))
  p, state = comp.init(params)
  assert float(comp.penalty(p, state)) == pytest.approx(
      0.1 * np.sqrt(sums).sum(), rel=1e-5)


@pytest.mark.parametrize('allocation', ['uniform', 'global'])
@pytest.mark.parametrize('granularity', ['unstructured', 'block'])
def test_achieved_sparsity_equals_target(allocation, granularity):
  rng = np.random.default_rng(0)
  params = {'rnn': {'layer_0': {
      'input_kernel': jnp.asarray(rng.normal(size=(12, 192)), jnp.float32),
      'recurrent_kernel': jnp.asarray(0.1 * rng.normal(size=(64, 192)),
                                      jnp.float32)}}}
  m = masks_of(params, sparsity=0.75, allocation=allocation,
               granularity=granularity, block='4x4')['rnn']['layer_0']
  ik, rk = m['input_kernel'], m['recurrent_kernel']
  total = ik.size + rk.size
  assert int((~ik).sum() + (~rk).sum()) == 0.75 * total
  if allocation == 'uniform':
    assert int((~ik).sum()) == 0.75 * ik.size
    assert int((~rk).sum()) == 0.75 * rk.size
  else:
    # One threshold: the 10x smaller recurrent kernel loses more.
    assert (~rk).mean() > 0.75 > (~ik).mean()


def test_gradual_schedule_values_and_update_steps():
  st = pruning.settings(pruning.config(sparsity=0.8, initial_sparsity=0.0,
                                       begin_step=10, end_step=110,
                                       frequency=10))
  values = [float(pruning.target_sparsity(st, t)) for t in (5, 10, 60, 85,
                                                             110, 300)]
  # 0.8 (1 - (1 - 50/100)^3) = 0.7; 0.8 (1 - 0.25^3) = 0.7875.
  np.testing.assert_allclose(values, [0, 0, 0.7, 0.7875, 0.8, 0.8], atol=1e-6)
  updates = [t for t in range(0, 130) if pruning.is_update_step(st, t)]
  assert updates == list(range(10, 111, 10))
  st = pruning.settings(pruning.config(begin_step=0, end_step=25, frequency=10,
                                       initial_sparsity=0.4, sparsity=0.8))
  assert [t for t in range(40) if pruning.is_update_step(st, t)] == [0, 10, 20,
                                                                     25]
  # s_i + (s_f - s_i) (1 - (1 - 10/25)^3) = 0.4 + 0.4 * 0.784.
  assert float(pruning.target_sparsity(st, 10)) == pytest.approx(0.7136)
  once = pruning.settings(pruning.config(schedule='oneshot', begin_step=7))
  assert [t for t in range(20) if pruning.is_update_step(once, t)] == [7]
  assert float(pruning.target_sparsity(once, 6)) == 0.0


def plus_half() -> core.Compressor:
  """A stand-in for quantization: its apply moves 0 away from 0."""
  return core.Compressor(
      init=lambda p: (p, ()),
      apply=lambda p, s: jax.tree.map(lambda w: w + 0.5, p),
      update=lambda p, s, g, step: (p, s),
      penalty=lambda p, s: jnp.zeros(()),
      export=lambda p, s: {})


def test_pruned_weights_stay_zero_through_adam_steps():
  rng = np.random.default_rng(1)
  params = {'rnn': {'layer_0': {'recurrent_kernel': jnp.asarray(
      rng.normal(size=(8, 8)), jnp.float32)}}}
  x = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
  comp = core.chain(
      pruning.make(pruning.config(sparsity=0.75, begin_step=0, end_step=6,
                                   frequency=2, regex='rnn/.*')),
      plus_half())
  tx = optax.adam(0.1)
  params, state = comp.init(params)
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt, t):
    def loss(p):
      w = comp.apply(p, state)['rnn']['layer_0']['recurrent_kernel']
      return jnp.sum((x @ w - 1.0) ** 2)
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    params = optax.apply_updates(params, updates)
    params, state = comp.update(params, state, grads, t)
    return params, state, opt

  for t in range(10):
    params, state, opt = step(params, state, opt, t)
  mask = np.asarray(state[0]['masks']['rnn']['layer_0']['recurrent_kernel'])
  w = np.asarray(params['rnn']['layer_0']['recurrent_kernel'])
  dense = np.asarray(comp.apply(params, state)['rnn']['layer_0'][
      'recurrent_kernel'])
  assert (~mask).sum() == 48  # 75% of 64, reached at step 6.
  assert np.all(w[~mask] == 0) and np.all(dense[~mask] == 0)
  assert np.all(dense[mask] == w[mask] + 0.5)  # mask(later(w)).
  # Adam's momentum is non-zero for weights pruned late, yet they stay 0.
  assert np.abs(np.asarray(opt[0].mu['rnn']['layer_0']['recurrent_kernel'])
                [~mask]).max() > 0


@pytest.mark.parametrize('cell, layers, pooling', [
    ('gru', 2, 'attention'), ('lstm', 1, 'mean')])
def test_shrunk_model_equals_masked_model(cell, layers, pooling):
  cfg = ml_collections.ConfigDict(dict(
      cell=cell, hidden=8, layers=layers, pooling=pooling, embed_dim=4,
      dtype='float32', unroll=1))
  info = {'num_classes': 3}
  model = models.make(cfg, 'classification', info)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(5, 7, 3)), jnp.float32)
  lengths = jnp.asarray([7, 3, 5, 1, 6], jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), x, lengths)['params']
  comp = pruning.make(pruning.config(granularity='unit', schedule='oneshot',
                                      sparsity=0.5))
  params, state = comp.init(params)
  dense = comp.apply(params, state)
  small, kept = pruning.shrink(dense, cell)
  assert kept == 4
  small_cfg = cfg.copy_and_resolve_references()
  small_cfg.hidden = kept
  small_model = models.make(small_cfg, 'classification', info)
  # The shrunk tree has exactly the small model's structure and shapes.
  ref = jax.eval_shape(small_model.init, jax.random.key(0), x, lengths)[
      'params']
  assert (jax.tree.map(np.shape, small) == jax.tree.map(np.shape, ref))
  np.testing.assert_allclose(
      jax.jit(small_model.apply)({'params': small}, x, lengths),
      jax.jit(model.apply)({'params': dense}, x, lengths), atol=1e-5)


def test_shrink_keeps_the_largest_live_count_of_any_layer():
  cfg = ml_collections.ConfigDict(dict(
      cell='rnn', hidden=6, layers=2, pooling='last', embed_dim=4,
      dtype='float32', unroll=1))
  model = models.make(cfg, 'classification', {'num_classes': 2})
  x = jnp.ones((2, 4, 3))
  params = jax.jit(model.init)(jax.random.key(1), x)['params']
  comp = pruning.make(pruning.config(granularity='unit', schedule='oneshot',
                                      sparsity=0.5))
  params, state = comp.init(params)
  dense = comp.apply(params, state)
  # Kill one more unit of layer 1 by hand: still 3 kept in both layers.
  keep = np.asarray(state['masks']['rnn']['layer_1']['bias']).copy()
  keep[np.flatnonzero(keep)[0]] = False
  l1 = dense['rnn']['layer_1']
  l1 = {'input_kernel': l1['input_kernel'] * keep,
        'recurrent_kernel': l1['recurrent_kernel'] * keep * keep[:, None],
        'bias': l1['bias'] * keep}
  dense = {**dense, 'rnn': {**dense['rnn'], 'layer_1': l1},
           'head': {**dense['head'],
                    'kernel': dense['head']['kernel'] * keep[:, None]}}
  small, kept = pruning.shrink(dense, 'rnn')
  assert kept == 3
  cfg.hidden = 3
  small_model = models.make(cfg, 'classification', {'num_classes': 2})
  np.testing.assert_allclose(jax.jit(small_model.apply)({'params': small}, x),
                             jax.jit(model.apply)({'params': dense}, x),
                             atol=1e-5)


@pytest.mark.parametrize('sparsity, fmt', [(0.5, 'bitmap'), (0.995, 'gaps')])
def test_decode_of_export_equals_apply(sparsity, fmt):
  rng = np.random.default_rng(3)
  w = jnp.asarray(rng.normal(size=(64, 192)), jnp.float32)
  params = {'rnn': {'layer_0': {'recurrent_kernel': w}}}
  comp = pruning.make(pruning.config(sparsity=sparsity, schedule='oneshot',
                                     regex='rnn/.*'))
  params, state = comp.init(params)
  dense = np.asarray(comp.apply(params, state)['rnn']['layer_0'][
      'recurrent_kernel'])
  entry = comp.export(params, state)['rnn/layer_0/recurrent_kernel']
  np.testing.assert_array_equal(entry.positions, np.flatnonzero(dense))
  (leaf,) = accounting.plan({'k': dense}, [{'k': entry}], ['prune'], 'fixed')
  # Accounting picks the smaller position format: a bitmap at half density,
  # relative indices when 61 of 12288 are kept (some gaps need escapes).
  assert leaf.node['k'] == 'sparse' and leaf.node['fmt'] == fmt
  assert leaf.node['count'] == entry.positions.size
  np.testing.assert_array_equal(
      accounting.rebuild([entry], dense.shape, dense), dense)


def test_gap_encoding_by_hand():
  # Kept 0, 3, 400 of 600 with 8-bit relative indices: steps 1 and 3, then
  # 397 = 255 (escape symbol 0: move 255, keep nothing) + 142.
  positions = np.array([0, 3, 400])
  sym = accounting.gap_symbols(positions, 8)
  np.testing.assert_array_equal(sym, [1, 3, 0, 142])
  np.testing.assert_array_equal(accounting.gap_positions(sym, 8, 600, 3),
                                positions)


@pytest.mark.parametrize('overrides, match', [
    (dict(sparsity=1.0), r'compression.prune.sparsity: 1.0 outside \[0, 1\)'),
    (dict(sparsity=-0.1), r'compression.prune.sparsity: -0.1 outside'),
    (dict(score='random'), r"compression.prune.score: unknown 'random'; valid"),
    (dict(granularity='row'), r'compression.prune.granularity: unknown'),
    (dict(schedule='cubic'), r'compression.prune.schedule: unknown'),
    (dict(block='4by4'), r"compression.prune.block: '4by4' is not a tile"),
    (dict(score='l1'), r'compression.prune.l1: .* > 0'),
    (dict(group_lasso=0.1), r"compression.prune.group_lasso: needs granularity"),
    (dict(granularity='unit', allocation='global'),
     r"compression.prune.allocation: 'global' is not supported"),
    (dict(end_step=0), r'compression.prune.end_step: 0 must be > begin_step'),
])
def test_bad_config_is_one_line(overrides, match):
  with pytest.raises(InputError, match=match) as e:
    pruning.make(pruning.config(**overrides))
  assert '\n' not in str(e.value)


def test_block_that_does_not_divide_fails_at_init():
  comp = pruning.make(pruning.config(granularity='block', block='3x4',
                                      regex='rnn/.*'))
  with pytest.raises(InputError, match=r'compression.prune.block: 3x4 does '
                     r'not divide rnn/layer_0/recurrent_kernel of shape '
                     r'\(4, 4\)'):
    comp.init(one_kernel())
