"""Shapes, dtypes and task conventions of every registered dataset."""

import json

import ml_collections
import numpy as np
import pytest

import data
from compression.errors import InputError
from data import transforms

SMALL_KWARGS = {
    'asv_bible': {'max_train_chars': 20_000},
    'synthetic_classification': {'num_train': 40, 'num_test': 10},
}


def _load(name, **kwargs):
  cfg = ml_collections.ConfigDict(
      {'name': name, 'kwargs': {**SMALL_KWARGS.get(name, {}), **kwargs}})
  return data.load(cfg)


@pytest.mark.parametrize('name', sorted(set(data.DATASETS) - {'file'}))
def test_conventions(name):
  ds = _load(name)
  assert ds.name == name
  assert ds.task in data.TASKS
  json.dumps(ds.info)  # Must be JSON-serialisable.
  for split in (ds.train, ds.test):
    assert set(split) == {'x', 'y', 'lengths'}
    n = len(split['y'])
    assert n > 0 and len(split['x']) == n
    assert split['lengths'].dtype == np.int32
    assert split['lengths'].shape == (n,)
    assert split['x'].shape[1] == ds.info['max_len']
    if ds.task == 'classification':
      assert split['x'].dtype == np.float32
      assert split['x'].shape[2] == ds.info['input_dim']
      assert split['y'].dtype == np.int32 and split['y'].shape == (n,)
      assert split['y'].min() >= 0
      assert split['y'].max() < ds.info['num_classes']
      mask = transforms.step_mask(split['lengths'], split['x'].shape[1])
      assert np.all(split['x'][~mask] == 0)
      assert split['lengths'].min() >= 1
    elif ds.task == 'forecasting':
      assert split['x'].dtype == np.float32
      assert split['x'].shape[2] == ds.info['input_dim'] == 1
      assert split['y'].dtype == np.float32
      assert split['y'].shape == (n, ds.info['horizon'])
      assert np.all(split['lengths'] == ds.info['max_len'])
    else:
      assert split['x'].dtype == split['y'].dtype == np.int32
      assert split['x'].shape == split['y'].shape
      assert split['x'].max() < ds.info['vocab_size'] == ds.info['input_dim']
      assert len(ds.info['vocab']) == ds.info['vocab_size']
      assert np.all(split['lengths'] == ds.info['max_len'])


def test_config_accepts_plain_object_and_mapping():
  class Cfg:
    name = 'synthetic_lm'
    kwargs = {'seq_len': 8}
  assert data.load(Cfg()).info['max_len'] == 8
  assert data.load({'name': 'synthetic_lm', 'kwargs': None}).info[
      'max_len'] == 32


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(InputError,
                     match=r"data.name: unknown dataset 'foo'; valid: "
                     r'asv_bible, file, japanese_vowels'):
    data.load({'name': 'foo', 'kwargs': {}})


def test_unknown_keyword():
  with pytest.raises(InputError, match=r"data.kwargs.windw: unknown keyword "
                     r"for dataset 'sunspots'; valid: series, window"):
    _load('sunspots', windw=3)


@pytest.mark.parametrize('name, kwargs, match', [
    ('sunspots', {'series': 'daily'},
     r"data.kwargs.series: unknown value 'daily'; valid: monthly, yearly"),
    ('sunspots', {'window': 0}, r'data.kwargs.window: must be an integer >= 1'),
    ('sunspots', {'window': 4.0}, r'data.kwargs.window: must be an integer'),
    ('sunspots', {'test_fraction': 1.5},
     r'data.kwargs.test_fraction: must be a number in \(0, 1\)'),
    ('sunspots', {'series': 'yearly', 'window': 300},
     r'data.kwargs.window: window 300 \+ horizon 6 does not fit'),
    ('japanese_vowels', {'normalize': 'yes'},
     r'data.kwargs.normalize: must be True or False'),
    ('synthetic_classification', {'min_len': 9, 'max_len': 4},
     r'data.kwargs.max_len: must be >= min_len \(9\)'),
    ('asv_bible', {'max_test_sequences': -1},
     r'data.kwargs.max_test_sequences: must be an integer >= 0'),
])
def test_bad_keyword_values(name, kwargs, match):
  with pytest.raises(InputError, match=match):
    _load(name, **kwargs)


def test_default_kwargs():
  assert data.default_kwargs('sunspots') == {
      'series': 'monthly', 'window': 48, 'horizon': 6, 'test_fraction': 0.2,
      'features': 1}


def test_sunspots_features_per_step():
  one = _load('sunspots', window=20, horizon=5)
  ten = _load('sunspots', window=20, horizon=5, features=10)
  assert ten.test['x'].shape == (len(one.test['x']), 2, 10)
  assert ten.info['input_dim'] == 10 and ten.info['max_len'] == 2
  assert (ten.test['lengths'] == 2).all()
  # Step 1 holds months 11..20 of the window, in order.
  np.testing.assert_array_equal(ten.test['x'][:, 1], one.test['x'][:, 10:, 0])
  np.testing.assert_array_equal(ten.test['y'], one.test['y'])
  with pytest.raises(InputError, match='data.kwargs.features: 7 does not '
                     'divide window 20'):
    _load('sunspots', window=20, features=7)


def test_japanese_vowels_counts():
  ds = _load('japanese_vowels', normalize=False)
  assert ds.train['x'].shape == (270, 29, 12)
  assert ds.test['x'].shape == (370, 29, 12)
  assert ds.info == {'input_dim': 12, 'max_len': 29, 'num_classes': 9}
  for split in (ds.train, ds.test):
    assert 7 <= split['lengths'].min() and split['lengths'].max() <= 29
    assert set(np.unique(split['y'])) == set(range(9))
    mask = transforms.step_mask(split['lengths'], 29)
    assert np.all(split['x'][~mask] == 0)
    # Raw LPC values are non-zero at every valid step.
    assert np.all(np.any(split['x'] != 0, axis=2) == mask)
  np.testing.assert_array_equal(np.bincount(ds.train['y']), [30] * 9)
  assert ds.test['lengths'].max() == 29
  # First value of the first train case in JapaneseVowels_TRAIN.ts.
  assert ds.train['x'][0, 0, 0] == np.float32(1.860936)


def test_japanese_vowels_normalize_uses_valid_train_steps():
  raw = _load('japanese_vowels', normalize=False)
  ds = _load('japanese_vowels')
  mask = transforms.step_mask(ds.train['lengths'], 29)
  valid = ds.train['x'][mask]
  np.testing.assert_allclose(valid.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(valid.std(0), 1, atol=1e-5)
  assert np.all(ds.test['x'][~transforms.step_mask(ds.test['lengths'], 29)]
                == 0)
  raw_valid = raw.train['x'][mask].astype(np.float64)
  expected = (raw.test['x'][0, 0] - raw_valid.mean(0)) / raw_valid.std(0)
  np.testing.assert_allclose(ds.test['x'][0, 0], expected, rtol=1e-5)


@pytest.mark.parametrize('series, length', [('monthly', 3120),
                                            ('yearly', 309)])
def test_sunspots_windows_and_naive_rmse(series, length):
  window, horizon = 24, 3
  ds = _load('sunspots', series=series, window=window, horizon=horizon)
  raw = np.load(data.sunspots.NPZ_PATH)[series].astype(np.float64)
  assert len(raw) == length
  split = length - int(round(0.2 * length))
  assert ds.info['mean'] == pytest.approx(raw[:split].mean())
  assert ds.info['std'] == pytest.approx(raw[:split].std())
  # Test targets start at every point of the test part that has a full
  # horizon after it.
  starts = np.arange(split, length - horizon + 1)
  assert len(ds.test['y']) == len(starts)
  assert len(ds.train['y']) == split - window - horizon + 1
  y = raw[starts[:, None] + np.arange(horizon)]
  last = raw[starts - 1]
  naive = np.sqrt(np.mean((y - last[:, None]) ** 2))
  assert ds.info['naive_rmse'] == pytest.approx(naive, rel=1e-9)
  # Undoing the normalisation recovers the raw windows.
  m, s = ds.info['mean'], ds.info['std']
  np.testing.assert_allclose(ds.test['y'] * s + m, y, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(ds.test['x'][:, -1, 0] * s + m, last,
                             rtol=1e-4, atol=1e-3)
  # The last train target ends where the test part begins.
  np.testing.assert_allclose(ds.train['y'][-1, -1] * s + m, raw[split - 1],
                             rtol=1e-4, atol=1e-3)


def test_sunspots_has_no_missing_values():
  f = np.load(data.sunspots.NPZ_PATH)
  assert int(f['monthly_start']) == 1749 and int(f['yearly_start']) == 1700
  for key in ('monthly', 'yearly'):
    assert np.all(np.isfinite(f[key])) and f[key].min() >= 0


@pytest.mark.parametrize('name', ['asv_bible', 'synthetic_lm'])
def test_lm_targets_are_inputs_shifted_by_one(name):
  ds = _load(name, seq_len=16)
  for split in (ds.train, ds.test):
    np.testing.assert_array_equal(split['x'][:, 1:], split['y'][:, :-1])
  # Consecutive train windows continue each other.
  np.testing.assert_array_equal(ds.train['y'][:-1, -1], ds.train['x'][1:, 0])


def test_asv_bible_text_and_vocab_round_trip():
  ds = _load('asv_bible', seq_len=64)
  vocab = ds.info['vocab']
  assert vocab == ''.join(sorted(set(vocab)))
  text = transforms.decode(ds.train['x'][0], vocab)
  assert text.startswith('In the beginning God created the heavens')
  np.testing.assert_array_equal(transforms.encode(text, vocab),
                                ds.train['x'][0])
  assert len(ds.test['x']) == 256
  assert 'Amen' in transforms.decode(ds.test['y'][-1], vocab)


def test_asv_bible_splits_do_not_overlap():
  ds = _load('asv_bible', seq_len=100, test_fraction=0.5, max_test_sequences=0,
             max_train_chars=0)
  n = len(data.asv_bible._corpus()[1])
  train_chars = len(ds.train['x']) * 100 + 1
  assert train_chars <= n - int(round(n * 0.5))
  assert len(ds.test['x']) == (int(round(n * 0.5)) - 1) // 100


def test_vocab_round_trip_and_unknown_character():
  vocab = 'abc'
  np.testing.assert_array_equal(transforms.encode('cab', vocab), [2, 0, 1])
  assert transforms.decode(np.array([2, 0, 1]), vocab) == 'cab'
  with pytest.raises(ValueError, match="'d' is not in the vocabulary"):
    transforms.encode('abd', vocab)


@pytest.mark.parametrize('name', ['synthetic_classification',
                                  'synthetic_forecast', 'synthetic_lm'])
def test_synthetic_is_deterministic_in_seed(name):
  a, b, c = _load(name, seed=3), _load(name, seed=3), _load(name, seed=4)
  for k in ('x', 'y', 'lengths'):
    np.testing.assert_array_equal(a.train[k], b.train[k])
    np.testing.assert_array_equal(a.test[k], b.test[k])
  assert not np.array_equal(a.train['x'], c.train['x'])


def test_synthetic_classification_sizes():
  ds = _load('synthetic_classification', num_train=7, num_test=5, min_len=3,
             max_len=9, features=2, num_classes=3)
  assert ds.train['x'].shape == (7, 9, 2)
  assert ds.test['x'].shape == (5, 9, 2)
  assert ds.train['lengths'].min() >= 3
  assert ds.info == {'input_dim': 2, 'max_len': 9, 'num_classes': 3}
