"""Deterministic batching: train batches as a pure function of (seed, step).

`train_batch` keeps no iterator state, so a run resumed from a checkpoint at
step s sees exactly the batches an uninterrupted run sees from step s on.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from compression.errors import InputError

Split = dict[str, np.ndarray]


def _num_rows(split: Split) -> int:
  rows = {len(v) for v in split.values()}
  if len(rows) != 1:
    raise ValueError(f'split arrays disagree on the number of rows: '
                     f'{ {k: v.shape for k, v in split.items()} }')
  return rows.pop()


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  # Cached because consecutive steps share an epoch; the result is a pure
  # function of the arguments, so caching cannot change any batch.
  perm = np.random.default_rng((seed, epoch)).permutation(n)
  perm.flags.writeable = False
  return perm


def train_batch(split: Split, batch_size: int, seed: int, step: int) -> Split:
  """The training batch for `step`, identical whenever (seed, step) is.

  Epoch e = step // steps_per_epoch visits the rows in the order of
  `np.random.default_rng((seed, e)).permutation(N)`, batch_size rows per step;
  the last partial batch of each epoch is dropped, so every batch has the
  same shape and no row repeats within an epoch.

  Args:
    split: arrays with a shared first axis of N rows ('x', 'y', 'lengths').
    batch_size: rows per batch, at most N.
    seed: non-negative data seed.
    step: non-negative global training step.

  Returns:
    The same keys as `split`, each with batch_size rows.

  Raises:
    InputError: batch_size outside [1, N], or a negative seed or step.
  """
  n = _num_rows(split)
  if not 1 <= batch_size <= n:
    raise InputError(f'batch_size: must be in [1, {n}] (the train split has '
                     f'{n} rows), got {batch_size}')
  if seed < 0 or step < 0:
    raise InputError(f'train_batch: seed and step must be >= 0, got seed '
                     f'{seed}, step {step}')
  steps_per_epoch = n // batch_size
  epoch, index = divmod(int(step), steps_per_epoch)
  perm = _epoch_permutation(int(seed), epoch, n)
  rows = perm[index * batch_size:(index + 1) * batch_size]
  return {k: v[rows] for k, v in split.items()}


def num_train_steps_per_epoch(split: Split, batch_size: int) -> int:
  """Full batches per epoch (the last partial batch is dropped)."""
  return _num_rows(split) // batch_size


def eval_batches(split: Split, batch_size: int) -> Iterator[Split]:
  """Every row once, in order, in batches of one fixed shape.

  The last batch is filled up by repeating row 0, so a jitted evaluation
  step compiles once; its 'weight' marks which rows count.

  Args:
    split: arrays with a shared first axis of N rows.
    batch_size: rows per batch.

  Yields:
    The keys of `split` with batch_size rows each, plus 'weight' float32
    (batch_size,): 1 for a real row, 0 for padding.
  """
  if batch_size < 1:
    raise InputError(f'batch_size: must be >= 1, got {batch_size}')
  n = _num_rows(split)
  for start in range(0, n, batch_size):
    real = min(batch_size, n - start)
    rows = np.arange(start, start + batch_size)
    rows[real:] = 0
    batch = {k: v[rows] for k, v in split.items()}
    batch['weight'] = (np.arange(batch_size) < real).astype(np.float32)
    yield batch
