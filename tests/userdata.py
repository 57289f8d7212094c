"""Data files the project does not ship, written as a user would bring them.

`write_ts` writes a UEA-style multivariate `.ts` pair (train and test) of a
3-class problem with string labels and unequal lengths; `write_forecast_npz`
writes a forecasting `.npz`. Both are learnable in a few dozen steps.
"""

from __future__ import annotations

import os

import numpy as np

LABELS = ('low', 'mid', 'high')


def _series(rng: np.random.Generator, n: int, channels: int = 3):
  rows = []
  for _ in range(n):
    label = int(rng.integers(len(LABELS)))
    length = int(rng.integers(10, 21))
    t = np.arange(length)
    freq = (0.08, 0.2, 0.35)[label]
    x = 0.3 * rng.standard_normal((channels, length))
    x[int(rng.integers(channels))] += np.sin(2 * np.pi * freq * t
                                             + rng.uniform(0, 6.3))
    rows.append((x, LABELS[label]))
  return rows


def _ts_text(rows) -> str:
  lines = ['# A user-made problem.', '@problemName Toy3', '@timeStamps false',
           '@missing false', '@univariate false',
           f'@dimensions {rows[0][0].shape[0]}', '@equalLength false',
           '@classLabel true ' + ' '.join(LABELS), '@data']
  for x, label in rows:
    dims = [','.join(f'{v:.4f}' for v in ch) for ch in x]
    lines.append(':'.join(dims) + ':' + label)
  return '\n'.join(lines) + '\n'


def write_ts(directory: str, n_train: int = 96, n_test: int = 60,
             seed: int = 7) -> tuple[str, str]:
  """Writes TOY3_TRAIN.ts and TOY3_TEST.ts; returns their paths."""
  rng = np.random.default_rng(seed)
  paths = []
  for name, n in (('TOY3_TRAIN.ts', n_train), ('TOY3_TEST.ts', n_test)):
    path = os.path.join(directory, name)
    with open(path, 'w') as f:
      f.write(_ts_text(_series(rng, n)))
    paths.append(path)
  return paths[0], paths[1]


def write_forecast_npz(directory: str, n: int = 240, window: int = 16,
                       horizon: int = 4, seed: int = 3) -> str:
  """Writes a (window -> horizon) forecasting .npz of a noisy sine."""
  rng = np.random.default_rng(seed)
  t = np.arange(n + window + horizon)
  series = 10 * np.sin(2 * np.pi * t / 23) + rng.standard_normal(t.size)
  x = np.stack([series[i:i + window] for i in range(n)])[..., None]
  y = np.stack([series[i + window:i + window + horizon] for i in range(n)])
  path = os.path.join(directory, 'toy_forecast.npz')
  np.savez(path, x=x.astype(np.float32), y=y.astype(np.float32))
  return path
