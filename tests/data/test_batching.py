"""Determinism and coverage of train_batch and eval_batches."""

import numpy as np
import pytest

import data
from compression.errors import InputError


def _split(n=10):
  return {'x': np.arange(n * 6, dtype=np.float32).reshape(n, 3, 2),
          'y': np.arange(n, dtype=np.int32),
          'lengths': np.full(n, 3, np.int32)}


def test_same_seed_and_step_give_identical_batch():
  split = _split()
  a = data.train_batch(split, 4, seed=7, step=5)
  b = data.train_batch(split, 4, seed=7, step=5)
  assert set(a) == {'x', 'y', 'lengths'}
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert a['x'].shape == (4, 3, 2)
  # Rows stay aligned across keys.
  np.testing.assert_array_equal(a['x'][:, 0, 0], a['y'] * 6)


def test_epoch_permutation_is_the_documented_one():
  split = _split(10)
  # 10 rows, batch 3: 3 steps per epoch; step 4 is epoch 1, batch 1.
  perm = np.random.default_rng((7, 1)).permutation(10)
  np.testing.assert_array_equal(
      data.train_batch(split, 3, seed=7, step=4)['y'], perm[3:6])


def test_steps_of_an_epoch_cover_rows_without_repeats():
  split = _split(10)
  assert data.num_train_steps_per_epoch(split, 3) == 3
  for epoch in range(3):
    rows = np.concatenate([data.train_batch(split, 3, 0, epoch * 3 + i)['y']
                           for i in range(3)])
    assert len(set(rows.tolist())) == 9  # The last partial batch is dropped.
  exact = np.concatenate([data.train_batch(split, 5, 1, s)['y']
                          for s in range(2)])
  assert sorted(exact.tolist()) == list(range(10))


def test_epochs_and_seeds_differ():
  split = _split(50)
  first = data.train_batch(split, 10, seed=0, step=0)['y']
  assert not np.array_equal(first, data.train_batch(split, 10, 0, 5)['y'])
  assert not np.array_equal(first, data.train_batch(split, 10, 1, 0)['y'])


@pytest.mark.parametrize('batch_size', [0, 11])
def test_bad_batch_size(batch_size):
  with pytest.raises(InputError, match=r'batch_size: must be in \[1, 10\]'):
    data.train_batch(_split(10), batch_size, 0, 0)


@pytest.mark.parametrize('n, batch_size', [(10, 4), (8, 4), (3, 8), (1, 1)])
def test_eval_batches_cover_every_row_once(n, batch_size):
  split = _split(n)
  batches = list(data.eval_batches(split, batch_size))
  assert len(batches) == -(-n // batch_size)
  seen = np.zeros(n)
  for b in batches:
    assert set(b) == {'x', 'y', 'lengths', 'weight'}
    assert b['weight'].dtype == np.float32
    for k in ('x', 'y', 'lengths', 'weight'):
      assert len(b[k]) == batch_size
    np.add.at(seen, b['y'], b['weight'])
    # Padding repeats row 0.
    pad = b['weight'] == 0
    np.testing.assert_array_equal(b['y'][pad], 0)
    np.testing.assert_array_equal(b['x'][pad], np.broadcast_to(
        split['x'][0], b['x'][pad].shape))
  np.testing.assert_array_equal(seen, np.ones(n))
  order = np.concatenate([b['y'][b['weight'] == 1] for b in batches])
  np.testing.assert_array_equal(order, np.arange(n))
