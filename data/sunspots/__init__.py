"""Sunspot numbers, monthly 1749-2008 and yearly 1700-2008 (shipped as .npz).

A classic univariate forecasting benchmark with an ~11-year cycle. Public
domain, from NOAA's National Geophysical Data Center via statsmodels; see
README.md here.
"""

from __future__ import annotations

import os

import numpy as np

from data import checks
from data import transforms
from data.dataset import Dataset

NPZ_PATH = os.path.join(os.path.dirname(__file__), 'sunspots.npz')
SERIES = ('monthly', 'yearly')


def load(series: str = 'monthly', window: int = 48, horizon: int = 6,
         test_fraction: float = 0.2) -> Dataset:
  """Loads a sunspot series as (window -> horizon) forecasting examples.

  Args:
    series: 'monthly' (3120 points) or 'yearly' (309 points).
    window: input steps per example.
    horizon: steps to forecast.
    test_fraction: the last part of the series, in time, that the test
      targets come from; test inputs may reach back into the train part.

  Returns:
    A forecasting Dataset (see `transforms.forecast_windows`), standardised
    with the train part's mean and std; info also has 'series' and
    'start_year'.
  """
  series = checks.choice(series, 'series', SERIES)
  window = checks.integer(window, 'window', 1)
  horizon = checks.integer(horizon, 'horizon', 1)
  test_fraction = checks.fraction(test_fraction, 'test_fraction')
  with np.load(NPZ_PATH, allow_pickle=False) as f:
    values = f[series]
    start = int(f[f'{series}_start'])
  train, test, info = transforms.forecast_windows(values, window, horizon,
                                                  test_fraction)
  info.update(series=series, start_year=start)
  return Dataset(name='sunspots', task='forecasting', train=train, test=test,
                 info=info)
