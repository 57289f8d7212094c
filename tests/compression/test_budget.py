"""The byte-budget allocator: settings, exact bytes, the program, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import accounting
from compression import budget
from compression import core
from compression.errors import InputError

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')


def _w(shape=(6, 8), seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


SETTINGS = [
    budget.Setting(),
    budget.Setting(0.5),
    budget.Setting(0.0, 4, True),
    budget.Setting(0.75, 3, False),
    budget.Setting(0.5, 2, True),
    budget.Setting(0.0, clusters=4),
    budget.Setting(0.9, clusters=2),
]


@pytest.mark.parametrize('setting', SETTINGS, ids=lambda s: s.label())
def test_every_setting_decodes_exactly_at_its_counted_bytes(setting):
  w = _w()
  rec = budget.state_record(w, setting)
  dense = np.asarray(budget.compress(jnp.asarray(w), rec))
  kept = np.asarray(rec['mask'])
  assert kept.sum() == w.size - round(setting.sparsity * w.size)
  assert np.all(dense[~kept] == 0)
  # The largest magnitudes are the kept ones.
  if setting.sparsity:
    assert np.abs(w[kept]).min() >= np.abs(w[~kept]).max()
  if setting.clusters:
    assert len(np.unique(dense[kept])) <= setting.clusters
  if setting.bits:
    levels = 2 ** (setting.bits - 1) - 1
    axis = 0 if setting.per_channel else None
    step = np.abs(np.where(kept, w, 0)).max(axis=axis) / levels
    np.testing.assert_allclose(dense / step, np.round(dense / step),
                               atol=1e-4)
  r = budget.record(w, rec)
  exports = {} if r is None else {'k': r}
  # check=True: the records must decode to `dense` bit for bit.
  (leaf,) = accounting.plan({'k': dense}, [exports], ['budget'], 'fixed')
  assert budget.leaf_bytes('k', w, rec) == leaf.bytes('fixed')
  assert budget.setting_of(rec)._replace(sparsity=0) == setting._replace(
      sparsity=0)


def test_gradient_reaches_kept_weights_only():
  w = _w()
  rec = budget.state_record(w, budget.Setting(0.5, 3, True))
  g = jax.grad(lambda v: jnp.sum(budget.compress(v, rec) * 2.0))(
      jnp.asarray(w))
  np.testing.assert_array_equal(np.asarray(g),
                                np.where(np.asarray(rec['mask']), 2.0, 0.0))


def test_lloyd_step_moves_centroids_to_their_members_means():
  w = np.array([[-2.0, -1.0, 0.1, 1.0, 3.0]], np.float32)
  rec = budget.state_record(w, budget.Setting(0.0, clusters=2))
  rec = {**rec, 'codebook': rec['codebook'].at[:2].set(
      jnp.array([-0.5, 0.5]))}
  new = budget.lloyd_step(jnp.asarray(w), rec)
  np.testing.assert_allclose(np.asarray(new['codebook'])[:2],
                             [-1.5, (0.1 + 1.0 + 3.0) / 3], rtol=1e-6)
  np.testing.assert_array_equal(new['codebook'][2:], rec['codebook'][2:])


def _cand(path, nbytes, sens):
  return budget.Candidate(path, budget.Setting(), nbytes, sens)


def test_program_finds_the_optimum_that_greedy_misses():
  # Greedy by sensitivity per byte takes a's cheap setting first and then
  # cannot afford b's; the optimum spends the budget the other way round.
  a = [_cand('a', 10, 0.0), _cand('a', 4, 1.0)]
  b = [_cand('b', 10, 0.0), _cand('b', 6, 0.5), _cand('b', 2, 5.0)]
  chosen = budget.choose([a, b], 14)
  assert [c.bytes for c in chosen] == [4, 10]  # cost 1.0 (10+6: 16 > 14)
  chosen = budget.choose([a, b], 16)
  assert [c.bytes for c in chosen] == [10, 6]  # cost 0.5
  assert budget.choose([a, b], 5) is None
  # Equal cost: the finer (larger) setting wins.
  assert budget.choose([[_cand('c', 3, 0.0), _cand('c', 8, -0.1)]],
                       9)[0].bytes == 8


def test_allocation_fits_and_spends_the_budget():
  """On a real loss: the chosen state's file fits, and more budget never
  costs more sensitivity."""
  params = {'a': {'kernel': _w((12, 16), 1)}, 'b': {'kernel': _w((16, 4), 2)}}
  x = jnp.asarray(_w((32, 12), 3))

  def loss_fn(p):
    h = jnp.tanh(x @ p['a']['kernel'])
    return float(jnp.mean(jnp.square(h @ p['b']['kernel'])))

  spec = budget.parse(budget.config(bytes=400))
  _, state = budget.make(budget.config(bytes=400)).init(params)

  def file_bytes(st):  # Payload plus a fixed 50-byte "header".
    total = 50
    for keys, rec in core.tagged(st, 'mask'):
      total += budget.leaf_bytes('/'.join(keys),
                                 np.asarray(core.get_path(params, keys)), rec)
    return total

  costs = []
  for b in (150, 250, 400, 4000):
    spec = spec._replace(bytes=b)
    st, chosen, got = budget.allocate(spec, params, state, loss_fn,
                                      file_bytes, 0, log=lambda s: None)
    assert got == b and file_bytes(st) <= b
    costs.append(sum(max(c.sensitivity, 0) for c in chosen))
  assert costs == sorted(costs, reverse=True)
  assert costs[-1] == 0  # Room for float32 everywhere.
  with pytest.raises(InputError, match='below the smallest file'):
    budget.allocate(spec._replace(bytes=60), params, state, loss_fn,
                    file_bytes, 0, log=lambda s: None)


@pytest.mark.parametrize('overrides, message', [
    ({}, 'set exactly one of bytes'),
    ({'bytes': 100, 'ratio': 4.0}, 'set exactly one of bytes'),
    ({'bytes': -5}, r'compression.budget.bytes: must be > 0'),
    ({'ratio': -2.0}, r'compression.budget.ratio: must be > 0'),
    ({'bytes': 100, 'candidates': 'quantize,lowbit'},
     r'candidates: unknown candidate lowbit; valid: float, quantize, kmeans, '
     'prune'),
    ({'bytes': 100, 'bits': '1,4'}, 'bit widths must be in 2..8'),
    ({'bytes': 100, 'sparsities': '0.5,1.0'}, r'sparsities must be in \[0, 1\)'),
    ({'bytes': 100, 'clusters': '2,32'}, 'codebook sizes must be in 2..16'),
])
def test_bad_sections_are_one_line(overrides, message):
  with pytest.raises(InputError, match=message):
    budget.parse(budget.config(**overrides))


def _train(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'),
                         *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


@pytest.mark.parametrize('arg, message', [
    ('budget=300,smoke', 'compression.budget: 300 bytes is below the smallest '
     'file these candidates allow, about [0-9]+ bytes'),
    ('budget=-1,smoke', 'bytes: must be > 0'),
    ('ratio=1000,smoke', r'ratio 1000 \([0-9]+ bytes\) is below the smallest'),
])
def test_bad_budgets_fail_before_training(arg, message, tmp_path):
  work = tmp_path / 'w'
  proc = _train(f'--config=configs/auto.py:{arg}', f'--workdir={work}')
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  import re  # pylint: disable=g-import-not-at-top
  assert re.search(message, lines[0]), lines[0]
  assert not (work / 'init').exists()  # Nothing trained.


def test_ramp_masks_follow_the_cubic_schedule_to_the_exact_count():
  w = jnp.asarray(_w((10, 10)))
  counts = [int(budget.ramp_mask(w, jnp.float32(0.9), jnp.int32(t), 100).sum())
            for t in (0, 50, 100, 150)]
  # Removed: 0, round(0.9 * (1 - 0.5^3) * 100) = 79, then 90 for good.
  assert counts == [100, 21, 10, 10]
  m = np.asarray(budget.ramp_mask(w, jnp.float32(0.9), jnp.int32(100), 100))
  np.testing.assert_array_equal(m, budget.magnitude_mask(np.asarray(w), 0.9))


def test_update_ramps_masks_only_on_schedule():
  params = {'k': _w((8, 8))}
  comp = budget.make(budget.config(bytes=100, ramp_steps=20, ramp_every=10))
  _, state = comp.init(params)
  state = {'k': budget.state_record(params['k'], budget.Setting(0.5, 4))}
  kept = lambda s: int(np.asarray(s['k']['mask']).sum())
  assert kept(state) == 32
  for step, want in ((0, 64), (5, 64), (10, 36), (20, 32), (30, 32)):
    _, state = comp.update(params, state, None, jnp.int32(step))
    assert kept(state) == want, step
