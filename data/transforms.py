"""Pure numpy steps shared by the loaders: padding, standardisation, windows.

Each task's array conventions (see `data.load`) are produced here once, so the
real and synthetic datasets of a task cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compression.errors import InputError

Split = dict[str, np.ndarray]


def step_mask(lengths: np.ndarray, max_len: int) -> np.ndarray:
  """Boolean (N, max_len): True at the valid steps of each sequence."""
  return np.arange(max_len)[None, :] < lengths[:, None]


def pad_time(x: np.ndarray, max_len: int) -> np.ndarray:
  """Zero-pads (N, T, F) on the time axis to (N, max_len, F)."""
  if x.shape[1] == max_len:
    return x
  return np.pad(x, ((0, 0), (0, max_len - x.shape[1]), (0, 0)))


def zero_padding(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Returns x with every step at or beyond its sequence's length set to 0."""
  return np.where(step_mask(lengths, x.shape[1])[..., None], x, 0).astype(
      x.dtype)


def channel_stats(x: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray,
                                                               np.ndarray]:
  """Per-channel mean and std over the valid steps only.

  Args:
    x: (N, T, F) padded sequences.
    lengths: (N,) valid steps per sequence.

  Returns:
    float64 mean and std, each (F,); a constant channel gets std 1 so that
    dividing by it is harmless.
  """
  valid = x[step_mask(lengths, x.shape[1])].astype(np.float64)  # (steps, F)
  mean = valid.mean(axis=0)
  std = valid.std(axis=0)
  return mean, np.where(std > 0, std, 1.0)


def standardize(x: np.ndarray, lengths: np.ndarray, mean: np.ndarray,
                std: np.ndarray) -> np.ndarray:
  """(x - mean) / std on the valid steps; padding stays exactly 0."""
  z = ((x - mean) / std).astype(np.float32)
  return zero_padding(z, lengths)


def classification_split(x: np.ndarray, lengths: np.ndarray,
                         y: np.ndarray) -> Split:
  """Packs classification arrays with the agreed dtypes."""
  return {'x': np.ascontiguousarray(x, np.float32),
          'y': np.asarray(y, np.int32),
          'lengths': np.asarray(lengths, np.int32)}


def forecast_windows(series: np.ndarray, window: int, horizon: int,
                     test_fraction: float) -> tuple[Split, Split,
                                                    dict[str, Any]]:
  """Cuts a univariate series into (window -> horizon) forecasting examples.

  The last `test_fraction` of the series is the test part. A train example's
  target lies wholly in the train part; a test example's target lies wholly in
  the test part, and its input window may reach back into the train part (the
  past is known at forecast time). Both use stride 1. Values are standardised
  with the train part's mean and std.

  Args:
    series: (L,) values in original units.
    window: input steps per example.
    horizon: target steps per example.
    test_fraction: the share of the series, at its end, that is the test part.

  Returns:
    (train, test, info): splits with x float32 (N, window, 1), y float32
    (N, horizon), lengths int32 all `window`; info with 'input_dim',
    'max_len', 'horizon', 'mean', 'std', 'naive_rmse' (RMSE in original units
    of repeating the last input value over the horizon, on the test split).
  """
  series = np.asarray(series, np.float64)
  n = len(series)
  split = n - int(round(n * test_fraction))
  if split - window - horizon + 1 < 1:
    raise InputError(
        f'data.kwargs.window: window {window} + horizon {horizon} does not fit '
        f'in the train part ({split} of {n} points); lower window/horizon or '
        'test_fraction')
  if n - horizon + 1 - max(split, window) < 1:
    raise InputError(
        f'data.kwargs.test_fraction: the test part ({n - split} of {n} points) '
        f'is shorter than horizon {horizon}; raise test_fraction')
  mean = float(series[:split].mean())
  std = float(series[:split].std()) or 1.0

  def examples(first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    # Target start t runs over [first, last]; input is series[t-window:t].
    starts = np.arange(first, last + 1)
    x = series[starts[:, None] + np.arange(-window, 0)]
    y = series[starts[:, None] + np.arange(horizon)]
    return x, y

  x_tr, y_tr = examples(window, split - horizon)
  x_te, y_te = examples(max(split, window), n - horizon)
  naive_rmse = float(np.sqrt(np.mean((y_te - x_te[:, -1:]) ** 2)))

  def pack(x: np.ndarray, y: np.ndarray) -> Split:
    return {'x': ((x - mean) / std).astype(np.float32)[..., None],
            'y': ((y - mean) / std).astype(np.float32),
            'lengths': np.full(len(x), window, np.int32)}

  info = {'input_dim': 1, 'max_len': window, 'horizon': horizon,
          'mean': mean, 'std': std, 'naive_rmse': naive_rmse,
          'series_length': n, 'test_points': n - split}
  return pack(x_tr, y_tr), pack(x_te, y_te), info


def encode(text: str, vocab: str) -> np.ndarray:
  """Maps characters to ids (their index in `vocab`).

  Args:
    text: the characters to encode; each must occur in `vocab`.
    vocab: sorted distinct characters.

  Returns:
    int32 ids, one per character.
  """
  # UTF-32 gives one code point per character without a Python-level loop,
  # which keeps a 4M-character corpus well under a second.
  points = np.frombuffer(text.encode('utf-32-le'), np.uint32)
  table = np.frombuffer(vocab.encode('utf-32-le'), np.uint32)
  ids = np.searchsorted(table, points).astype(np.int32)
  ids = np.minimum(ids, len(vocab) - 1)
  if not np.array_equal(table[ids], points):
    bad = text[int(np.flatnonzero(table[ids] != points)[0])]
    raise ValueError(f'character {bad!r} is not in the vocabulary')
  return ids


def decode(ids: np.ndarray, vocab: str) -> str:
  """Maps ids back to their characters (inverse of `encode`)."""
  return ''.join(vocab[i] for i in np.asarray(ids).ravel())


def lm_examples(part: np.ndarray, seq_len: int, what: str = 'train') -> Split:
  """Tiles an id stream with next-character examples (see `lm_windows`).

  Args:
    part: int (L,) ids.
    seq_len: steps per example.
    what: the part's name for the error message.

  Returns:
    x, y int32 (N, seq_len) with N = (L - 1) // seq_len, y = x shifted by one;
    lengths int32 all seq_len.
  """
  count = (len(part) - 1) // seq_len
  if count < 1:
    raise InputError(
        f'data.kwargs.seq_len: the {what} part has {len(part)} characters, '
        f'fewer than seq_len + 1 = {seq_len + 1}')
  x = part[:count * seq_len].reshape(count, seq_len)
  y = part[1:count * seq_len + 1].reshape(count, seq_len)
  return {'x': x.astype(np.int32), 'y': y.astype(np.int32),
          'lengths': np.full(count, seq_len, np.int32)}


def lm_windows(ids: np.ndarray, seq_len: int, test_fraction: float,
               max_test_sequences: int = 0,
               max_train_chars: int = 0) -> tuple[Split, Split]:
  """Cuts an id stream into next-character prediction examples.

  The last `test_fraction` of the stream is the test part; train and test
  windows never share a character. Within a part, example i reads
  ids[i*seq_len : (i+1)*seq_len + 1]: x is the first seq_len ids and y the
  last seq_len, so the inputs tile the part without overlap and each
  character after the first is a target exactly once (up to a final partial
  window, which is dropped).

  Args:
    ids: int32 (L,) character ids.
    seq_len: steps per example.
    test_fraction: the share of the stream, at its end, used for testing.
    max_test_sequences: keep this many evenly spaced test windows (0 = all),
      to bound evaluation time.
    max_train_chars: use only the first this many train characters (0 = all).

  Returns:
    (train, test) with x, y int32 (N, seq_len) and lengths int32 all seq_len.
  """
  n = len(ids)
  split = n - int(round(n * test_fraction))
  train_ids = ids[:split]
  if max_train_chars:
    train_ids = train_ids[:max_train_chars]
  test_ids = ids[split:]
  train = lm_examples(train_ids, seq_len, 'train')
  test = lm_examples(test_ids, seq_len, 'test')
  count = len(test['x'])
  if max_test_sequences and count > max_test_sequences:
    keep = np.unique(np.linspace(0, count - 1, max_test_sequences).round()
                     .astype(np.int64))
    test = {k: v[keep] for k, v in test.items()}
  return train, test
