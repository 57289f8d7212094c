"""Sunspot numbers, monthly 1749-2008 and yearly 1700-2008 (shipped as .npz).

A classic univariate forecasting benchmark with an ~11-year cycle. Public
domain, from NOAA's National Geophysical Data Center via statsmodels; see
README.md here.
"""

from __future__ import annotations

import os

import numpy as np

from compression.errors import InputError
from data import checks
from data import transforms
from data.dataset import Dataset

NPZ_PATH = os.path.join(os.path.dirname(__file__), 'sunspots.npz')
SERIES = ('monthly', 'yearly')


def load(series: str = 'monthly', window: int = 48, horizon: int = 6,
         test_fraction: float = 0.2, features: int = 1) -> Dataset:
  """Loads a sunspot series as (window -> horizon) forecasting examples.

  Args:
    series: 'monthly' (3120 points) or 'yearly' (309 points).
    window: input steps per example.
    horizon: steps to forecast.
    test_fraction: the last part of the series, in time, that the test
      targets come from; test inputs may reach back into the train part.
    features: consecutive values per step: the `window` input values become
      window / features steps of `features` features each (e.g. 120 months
      as 12 steps of 10 months); must divide `window`.

  Returns:
    A forecasting Dataset (see `transforms.forecast_windows`), standardised
    with the train part's mean and std; info also has 'series' and
    'start_year'.
  """
  series = checks.choice(series, 'series', SERIES)
  window = checks.integer(window, 'window', 1)
  horizon = checks.integer(horizon, 'horizon', 1)
  test_fraction = checks.fraction(test_fraction, 'test_fraction')
  features = checks.integer(features, 'features', 1)
  if window % features:
    raise InputError(f'data.kwargs.features: {features} does not divide '
                     f'window {window}')
  with np.load(NPZ_PATH, allow_pickle=False) as f:
    values = f[series]
    start = int(f[f'{series}_start'])
  train, test, info = transforms.forecast_windows(values, window, horizon,
                                                  test_fraction)
  info.update(series=series, start_year=start)
  if features > 1:
    steps = window // features
    for split in (train, test):
      split['x'] = split['x'].reshape(len(split['x']), steps, features)
      split['lengths'] = np.full(len(split['x']), steps, np.int32)
    info.update(input_dim=features, max_len=steps)
  return Dataset(name='sunspots', task='forecasting', train=train, test=test,
                 info=info)
