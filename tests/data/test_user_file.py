"""The `file` dataset: the user's .npz or .ts files, good and bad."""

import numpy as np
import pytest

import data
from compression.errors import InputError
from data import transforms


def _npz(tmp_path, name='d.npz', **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return str(path)


def _load(**kwargs):
  return data.load({'name': 'file', 'kwargs': kwargs})


def _good(n=10, t=5, f=3, classes=3):
  rng = np.random.default_rng(0)
  return {'x': rng.standard_normal((n, t, f)).astype(np.float32),
          'y': np.arange(n) % classes,
          'lengths': 1 + np.arange(n) % t}


def test_classification_npz_split(tmp_path):
  arrays = _good()
  ds = _load(path=_npz(tmp_path, **arrays))
  assert ds.task == 'classification'
  assert len(ds.train['y']) == 8 and len(ds.test['y']) == 2
  assert ds.info == {'input_dim': 3, 'max_len': 5, 'num_classes': 3}
  assert ds.train['x'].dtype == np.float32 and ds.train['y'].dtype == np.int32
  # Every row lands in exactly one split, unchanged except for padding.
  both = np.concatenate([ds.train['x'], ds.test['x']])
  lengths = np.concatenate([ds.train['lengths'], ds.test['lengths']])
  assert np.all(both[~transforms.step_mask(lengths, 5)] == 0)
  expected = transforms.zero_padding(arrays['x'], arrays['lengths'])
  assert sorted(map(bytes, both)) == sorted(map(bytes, expected))
  # The split is deterministic.
  again = _load(path=_npz(tmp_path, **arrays))
  np.testing.assert_array_equal(again.test['x'], ds.test['x'])


def test_two_dimensional_x_and_default_lengths(tmp_path):
  path = _npz(tmp_path, x=np.ones((6, 4)), y=np.array([0, 1] * 3, np.float64))
  test_path = _npz(tmp_path, 't.npz', x=np.ones((2, 7)), y=np.array([1, 0]),
                   num_classes=np.int64(4))
  ds = _load(path=path, test_path=test_path, normalize=True)
  assert ds.train['x'].shape == (6, 7, 1)  # Padded to the longer file.
  np.testing.assert_array_equal(ds.train['lengths'], 4)
  np.testing.assert_array_equal(ds.test['lengths'], 7)
  assert ds.info['num_classes'] == 4


def test_nan_padding_beyond_lengths_is_allowed(tmp_path):
  x = np.full((4, 3, 1), np.nan)
  x[:, 0] = 1.0
  # Both classes land in the train split (rows 0 and 2).
  ds = _load(path=_npz(tmp_path, x=x, y=np.array([0, 0, 1, 1]),
                       lengths=np.ones(4, np.int32)), test_fraction=0.5)
  assert np.all(np.isfinite(ds.train['x']))
  assert np.all(ds.train['x'][:, 1:] == 0)


def test_forecasting_npz(tmp_path):
  rng = np.random.default_rng(1)
  x = 10 + 3 * rng.standard_normal((20, 6, 2))
  y = 10 + 3 * rng.standard_normal((20, 2))
  ds = _load(path=_npz(tmp_path, x=x, y=y), task='forecasting',
             test_fraction=0.25)
  assert ds.task == 'forecasting'
  assert ds.train['x'].shape == (15, 6, 2) and ds.test['y'].shape == (5, 2)
  mean, std = x[:15, :, 0].mean(), x[:15, :, 0].std()
  assert ds.info['mean'] == pytest.approx(mean)
  assert ds.info['std'] == pytest.approx(std)
  assert ds.info['horizon'] == 2 and ds.info['max_len'] == 6
  naive = np.sqrt(np.mean((y[15:] - x[15:, -1:, 0]) ** 2))
  assert ds.info['naive_rmse'] == pytest.approx(naive, rel=1e-6)
  np.testing.assert_allclose(ds.test['y'], (y[15:] - mean) / std, rtol=1e-5)


def test_ts_file_with_separate_test_file(tmp_path):
  header = '@problemName T\n@dimensions 1\n@classLabel true x y\n@data\n'
  (tmp_path / 'a.ts').write_text(header + '1,2:y\n3:x\n4,5,6:x\n')
  (tmp_path / 'b.ts').write_text(header + '1,2,3,4:y\n')
  ds = _load(path=str(tmp_path / 'a.ts'), test_path=str(tmp_path / 'b.ts'))
  np.testing.assert_array_equal(ds.train['y'], [1, 0, 0])
  np.testing.assert_array_equal(ds.test['y'], [1])
  assert ds.info == {'input_dim': 1, 'max_len': 4, 'num_classes': 2}


@pytest.mark.parametrize('arrays, match', [
    ({'y': np.zeros(3)}, r"missing array 'x'; found: y"),
    ({'x': np.zeros((3, 2, 1))}, r"missing array 'y'; found: x"),
    ({'x': np.zeros(3), 'y': np.zeros(3)},
     r"'x' must have shape \(N, T, F\) or \(N, T\) with N, T, F >= 1; got "
     r'\(3,\)'),
    ({'x': np.zeros((3, 2, 1)), 'y': np.zeros(4)},
     r"'y' has 4 rows but 'x' has 3"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.zeros((3, 2))},
     r"'y' must have shape \(3,\) for classification"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.zeros(3), 'lengths': np.ones(2)},
     r"'lengths' must have shape \(3,\)"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.zeros(3),
      'lengths': np.array([1, 3, 2])},
     r"'lengths' has value 3 outside \[1, 2\]"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.zeros(3),
      'lengths': np.array([1, 0, 2])},
     r"'lengths' has value 0 outside \[1, 2\]"),
    ({'x': np.array([[[np.nan]], [[0.]], [[0.]]]), 'y': np.zeros(3)},
     r"'x' contains NaN or inf"),
    ({'x': np.array([[[np.inf]], [[0.]], [[0.]]]), 'y': np.zeros(3)},
     r"'x' contains NaN or inf"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.array([0, 1.5, 1])},
     r"'y' must hold integer class labels, found 1.5"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.array(['a', 'b', 'c'])},
     r"'y' must be numeric, got dtype <U1"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.array([0, -1, 1])},
     r"'y' has negative label -1"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.array([0, 12, 1]),
      'num_classes': np.int64(9)},
     r"'y' has label 12 outside \[0, 9\)"),
    ({'x': np.zeros((3, 2, 1)), 'y': np.zeros(3),
      'num_classes': np.array([2, 3])},
     r"'num_classes' must be a positive integer scalar"),
])
def test_bad_npz(tmp_path, arrays, match):
  path = _npz(tmp_path, 'bad.npz', **arrays)
  with pytest.raises(InputError, match=r'^data file .*bad.npz: ' + match):
    _load(path=path)


def test_object_array_is_never_unpickled(tmp_path):
  path = _npz(tmp_path, 'bad.npz', x=np.zeros((3, 2)),
              y=np.array([0, 'a', None], dtype=object))
  with pytest.raises(InputError, match=r"bad.npz: 'y' is an object array"):
    _load(path=path)


def test_bad_forecasting_npz(tmp_path):
  path = _npz(tmp_path, 'bad.npz', x=np.zeros((4, 3)),
              y=np.array([[0.], [np.nan], [0.], [0.]]))
  with pytest.raises(InputError, match=r"bad.npz: 'y' contains NaN or inf"):
    _load(path=path, task='forecasting')
  path = _npz(tmp_path, 'short.npz', x=np.zeros((4, 3)), y=np.zeros(4),
              lengths=np.array([3, 3, 2, 3]))
  with pytest.raises(InputError, match=r'short.npz: forecasting needs full '
                     r"windows, but 'lengths' has values below T = 3"):
    _load(path=path, task='forecasting')


def test_bad_test_file(tmp_path):
  train = _npz(tmp_path, 'train.npz', x=np.zeros((4, 3, 2)),
               y=np.array([0, 1, 0, 1]), num_classes=np.int64(2))
  test = _npz(tmp_path, 'test.npz', x=np.zeros((2, 3, 2)), y=np.array([0, 5]))
  with pytest.raises(InputError, match=r"data file .*test.npz: 'y' has label "
                     r'5 outside \[0, 2\)'):
    _load(path=train, test_path=test)
  test = _npz(tmp_path, 'test3.npz', x=np.zeros((2, 3, 3)), y=np.zeros(2))
  with pytest.raises(InputError, match=r'data file .*test3.npz: has 3 '
                     r'features per step but .*train.npz has 2'):
    _load(path=train, test_path=test)


def test_missing_empty_and_unknown_files(tmp_path):
  with pytest.raises(InputError, match=r'^data file .*nope.npz: not found$'):
    _load(path=str(tmp_path / 'nope.npz'))
  (tmp_path / 'empty.npz').write_bytes(b'')
  with pytest.raises(InputError, match=r'^data file .*empty.npz: file is '
                     r'empty$'):
    _load(path=str(tmp_path / 'empty.npz'))
  (tmp_path / 'd.csv').write_text('1,2\n')
  with pytest.raises(InputError, match=r"^data file .*d.csv: unknown "
                     r"extension '.csv'; valid: .npz, .ts$"):
    _load(path=str(tmp_path / 'd.csv'))
  (tmp_path / 'junk.npz').write_bytes(b'not a zip at all')
  with pytest.raises(InputError, match=r'^data file .*junk.npz: not a '
                     r'readable .npz archive'):
    _load(path=str(tmp_path / 'junk.npz'))
  with pytest.raises(InputError, match=r'^data.kwargs.path: must name a .npz '
                     r'or .ts file'):
    _load()


def test_bad_kwargs_and_split(tmp_path):
  path = _npz(tmp_path, **_good(n=3))
  with pytest.raises(InputError, match=r"data.kwargs.task: unknown value "
                     r"'regression'; valid: classification, forecasting"):
    _load(path=path, task='regression')
  with pytest.raises(InputError, match=r'data.kwargs.test_fraction: 0.1 of '
                     r'the 3 rows of .*d.npz leaves an empty train or test'):
    _load(path=path, test_fraction=0.1)
  (tmp_path / 'u.ts').write_text('@classLabel false\n@data\n1,2\n')
  with pytest.raises(InputError, match=r'u.ts: has no class labels'):
    _load(path=str(tmp_path / 'u.ts'))
  with pytest.raises(InputError, match=r'u.ts: .ts files hold classification '
                     r'data; use a .npz for forecasting'):
    _load(path=str(tmp_path / 'u.ts'), task='forecasting')
