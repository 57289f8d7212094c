"""The `file` dataset: the user's own data from a .npz or UEA/UCR .ts file.

A `.npz` holds `x` (N, T, F) or (N, T), `y`, and optionally `lengths` (N,)
(default: all T) and `num_classes` (a scalar; default: largest label + 1).
For classification `y` is (N,) integer labels; for forecasting `y` is
(N, horizon) or (N,), the future of channel 0 of `x` in the same units. A `.ts`
file is read by `data.ts_format` (classification only).

Every problem with a file is reported as one `InputError` line that names the
file: missing or empty file, unknown extension, a file that is not a zip of
.npy arrays, a member that is not a plain .npy array (a pickle is never
loaded), an array header declaring more data than its member holds (or more
than `MAX_ARRAY_BYTES`), wrong shapes, row counts that disagree, lengths
outside [1, T], NaN or inf, labels that are not integers or lie out of range.

Classes: the count is the file's declaration (a `.ts` `@classLabel` list, an
`.npz` `num_classes`) and every label must lie below it; without one it is the
largest label + 1, which may not exceed the number of training rows (a stray
label of 10^6 would otherwise build a million-class model). A class that
appears in the test split but never in training is refused, named.
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import Any, NamedTuple, Optional

import numpy as np

from compression.errors import InputError
from data import checks
from data import transforms
from data import ts_format
from data.dataset import Dataset

TASKS = ('classification', 'forecasting')
EXTENSIONS = ('.npz', '.ts')
# The fixed seed of the random train/test split when no test file is given.
SPLIT_SEED = 0
# The largest array a .npz member may declare (its header is checked before
# anything is allocated).
MAX_ARRAY_BYTES = 1 << 34
_ZIP_MAGIC = b'PK'
_NPY_MAGIC = b'\x93NUMPY'


class _Arrays(NamedTuple):
  x: np.ndarray  # float32 (N, T, F), zero after each length.
  lengths: np.ndarray  # int32 (N,)
  y: np.ndarray  # int32 (N,) or float32 (N, H)
  num_classes: Optional[int]  # Declared by the file, if it does.
  class_labels: tuple[str, ...]  # .ts label names, () for .npz.


def _reason(e: BaseException) -> str:
  """An exception's text for a message, without numpy's pickle advice."""
  text = ' '.join(str(e).split())[:200]
  return type(e).__name__ if 'pickle' in text.lower() or not text else text


def _check_member(f: Any, key: str, where: str) -> None:
  """Checks an .npz member's .npy header before numpy allocates the array.

  Raises:
    InputError: the member is not a .npy array (e.g. a raw pickle), holds
      objects, or declares more bytes than it holds or `MAX_ARRAY_BYTES`.
  """
  member = key + '.npy'
  try:
    info = f.zip.getinfo(member)
    with f.zip.open(member) as m:
      if m.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
        raise InputError(f'{where}: {key!r} is not a .npy array (a pickle or '
                         'other data); save plain numeric arrays with '
                         'np.savez')
      version = tuple(m.read(2))
      m.seek(0)
      np.lib.format.read_magic(m)
      if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(m)
      elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(m)
      else:
        raise InputError(f'{where}: {key!r} has .npy format version '
                         f'{version}; re-save it with np.savez')
      header_bytes = m.tell()
  except InputError:
    raise
  except (KeyError, zipfile.BadZipFile, EOFError, OSError, ValueError,
          SyntaxError, TypeError) as e:
    raise InputError(f'{where}: array {key!r} is corrupt ({_reason(e)})'
                     ) from None
  if dtype.hasobject:
    raise InputError(f'{where}: {key!r} is an object array; only plain '
                     'numeric arrays are read (never pickle)')
  declared = math.prod(shape) * dtype.itemsize
  held = info.file_size - header_bytes
  if declared > held or declared > MAX_ARRAY_BYTES:
    raise InputError(
        f'{where}: {key!r} declares shape {tuple(shape)} of {dtype} '
        f'({declared} bytes) but holds {max(held, 0)} bytes (limit '
        f'{MAX_ARRAY_BYTES}); the file is damaged')


def _npz_array(f: Any, key: str, where: str) -> np.ndarray:
  _check_member(f, key, where)
  try:
    a = f[key]
  except (zipfile.BadZipFile, EOFError, OSError, MemoryError) as e:
    raise InputError(f'{where}: array {key!r} is corrupt ({_reason(e)})'
                     ) from None
  except ValueError as e:
    if 'allow_pickle' in str(e):
      # np.load refuses object arrays when allow_pickle=False.
      raise InputError(f'{where}: {key!r} is an object array; only plain '
                       'numeric arrays are read (never pickle)') from None
    raise InputError(f'{where}: array {key!r} is corrupt ({_reason(e)})'
                     ) from None
  if not isinstance(a, np.ndarray):
    raise InputError(f'{where}: {key!r} is not a .npy array')
  if a.dtype.kind not in 'biuf':
    raise InputError(f'{where}: {key!r} must be numeric, got dtype {a.dtype}')
  return a


def _read_npz(path: str, where: str, task: str) -> _Arrays:
  """Reads and checks one .npz file."""
  try:
    with open(path, 'rb') as head:
      magic = head.read(len(_NPY_MAGIC))
  except OSError as e:
    raise InputError(f'{where}: cannot be read ({e.strerror})') from None
  if magic.startswith(_NPY_MAGIC):
    raise InputError(f'{where}: holds a single .npy array, not an .npz '
                     "archive with 'x' and 'y'")
  if not magic.startswith(_ZIP_MAGIC):
    raise InputError(f'{where}: not a readable .npz archive (not a zip of '
                     '.npy arrays; write it with np.savez)')
  try:
    f = np.load(path, allow_pickle=False)
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    raise InputError(f'{where}: not a readable .npz archive ({_reason(e)})'
                     ) from None
  if not isinstance(f, np.lib.npyio.NpzFile):
    raise InputError(f'{where}: holds a single .npy array, not an .npz '
                     "archive with 'x' and 'y'")
  with f:
    keys = set(f.files)
    for key in ('x', 'y'):
      if key not in keys:
        raise InputError(f'{where}: missing array {key!r}; found: '
                         f'{", ".join(sorted(keys)) or "none"}')
    x = _npz_array(f, 'x', where)
    y = _npz_array(f, 'y', where)
    lengths = _npz_array(f, 'lengths', where) if 'lengths' in keys else None
    num_classes = (_npz_array(f, 'num_classes', where)
                   if 'num_classes' in keys else None)

  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or 0 in x.shape:
    raise InputError(f"{where}: 'x' must have shape (N, T, F) or (N, T) with "
                     f'N, T, F >= 1; got {x.shape}')
  n, t = x.shape[:2]
  if y.ndim == 0 or len(y) != n:
    raise InputError(f"{where}: 'y' has {y.shape[0] if y.ndim else 0} rows "
                     f"but 'x' has {n}")

  if lengths is None:
    lengths = np.full(n, t, np.int32)
  else:
    if lengths.shape != (n,):
      raise InputError(f"{where}: 'lengths' must have shape ({n},) to match "
                       f"'x', got {lengths.shape}")
    lengths = checks.integer_labels(lengths, where, 'lengths')
    bad = lengths[(lengths < 1) | (lengths > t)]
    if bad.size:
      raise InputError(f"{where}: 'lengths' has value {int(bad[0])} outside "
                       f'[1, {t}] (T = {t})')
  # Only valid steps must be finite: padding may be NaN in exported files.
  mask = transforms.step_mask(lengths, t)
  checks.finite(x[mask], where, 'x')
  x = transforms.zero_padding(x.astype(np.float32), lengths)

  if task == 'classification':
    if y.ndim != 1:
      raise InputError(f"{where}: 'y' must have shape ({n},) for "
                       f'classification, got {y.shape}')
    y = checks.integer_labels(y, where)
    if num_classes is not None:
      if num_classes.shape != () or num_classes.dtype.kind not in 'iu' or (
          num_classes < 1):
        raise InputError(f"{where}: 'num_classes' must be a positive integer "
                         f'scalar, got {num_classes!r}')
      num_classes = int(num_classes)
      checks.labels_in_range(y, num_classes, where)
    elif np.any(y < 0):
      raise InputError(f"{where}: 'y' has negative label {int(y.min())}; "
                       'labels must be 0..num_classes-1')
  else:
    if y.ndim == 1:
      y = y[:, None]
    if y.ndim != 2 or y.shape[1] < 1:
      raise InputError(f"{where}: 'y' must have shape ({n}, horizon) or "
                       f'({n},) for forecasting, got {y.shape}')
    checks.finite(y, where, 'y')
    y = y.astype(np.float32)
    if np.any(lengths != t):
      raise InputError(f"{where}: forecasting needs full windows, but "
                       f"'lengths' has values below T = {t}")
  return _Arrays(x, lengths, y, num_classes, ())


def _read_ts(path: str, where: str, task: str) -> _Arrays:
  """Reads one .ts file (classification only)."""
  if task != 'classification':
    raise InputError(f'{where}: .ts files hold classification data; use a '
                     '.npz for forecasting')
  d = ts_format.read_ts(path)
  if d.y is None:
    raise InputError(f'{where}: has no class labels (@classLabel false); '
                     'classification needs them')
  return _Arrays(d.x, d.lengths, d.y, len(d.class_labels), d.class_labels)


def _read(path: str, task: str) -> _Arrays:
  where = f'data file {path}'
  if not os.path.isfile(path):
    raise InputError(f'{where}: not found')
  if os.path.getsize(path) == 0:
    raise InputError(f'{where}: file is empty')
  ext = os.path.splitext(path)[1].lower()
  if ext == '.npz':
    return _read_npz(path, where, task)
  if ext == '.ts':
    return _read_ts(path, where, task)
  raise InputError(f'{where}: unknown extension {ext!r}; valid: '
                   f'{", ".join(EXTENSIONS)}')


def _rows(a: _Arrays, rows: np.ndarray) -> _Arrays:
  return a._replace(x=a.x[rows], lengths=a.lengths[rows], y=a.y[rows])


def _split(a: _Arrays, path: str, task: str,
           test_fraction: float) -> tuple[_Arrays, _Arrays]:
  """Splits one file into train and test rows, deterministically."""
  n = len(a.y)
  n_test = int(round(n * test_fraction))
  if not 1 <= n_test <= n - 1:
    raise InputError(f'data.kwargs.test_fraction: {test_fraction} of the {n} '
                     f'rows of {path} leaves an empty train or test split')
  if task == 'forecasting':
    # Rows are windows in time order; a random split would leak the future.
    order = np.arange(n)
  else:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
  # Sorting keeps the file's row order within each split.
  return (_rows(a, np.sort(order[:n - n_test])),
          _rows(a, np.sort(order[n - n_test:])))


def _classification(train: _Arrays, test: _Arrays, train_where: str,
                    test_where: str, normalize: bool) -> tuple[dict[str, np.ndarray],
                                              dict[str, np.ndarray],
                                              dict[str, Any]]:
  """Reconciles classes and lengths of the two splits and packs them."""
  if train.class_labels and test.class_labels and (
      train.class_labels != test.class_labels):
    raise InputError(f'{test_where}: @classLabel lists '
                     f'{" ".join(test.class_labels)} but the train file lists '
                     f'{" ".join(train.class_labels)}')
  if (train.num_classes is not None and test.num_classes is not None
      and train.num_classes != test.num_classes):
    raise InputError(f'{test_where}: declares {test.num_classes} classes but '
                     f'the train file declares {train.num_classes}')
  num_classes = train.num_classes or test.num_classes
  if num_classes is None:
    num_classes = int(max(train.y.max(), test.y.max())) + 1
    if num_classes > len(train.y):
      where = train_where if train.y.max() + 1 == num_classes else test_where
      raise InputError(
          f'{where}: label {num_classes - 1} implies {num_classes} classes, '
          f'more than the {len(train.y)} training rows; labels must be '
          "0..K-1 (or declare 'num_classes' in the .npz)")
  checks.labels_in_range(test.y, num_classes, test_where)
  unseen = np.setdiff1d(test.y, train.y)
  if unseen.size:
    names = train.class_labels or test.class_labels
    c = int(unseen[0])
    name = repr(names[c]) if c < len(names) else str(c)
    raise InputError(
        f'{test_where}: class {name} is in the test split but never in '
        'training, so the model cannot learn it; add training examples of it'
        + ('' if train_where != test_where else
           ' or change data.kwargs.test_fraction'))
  if num_classes < 2:
    raise InputError(f'{test_where}: classification needs at least 2 '
                     f'classes, found {num_classes}')
  # A common T, so training and evaluation see the same shapes.
  max_len = max(train.x.shape[1], test.x.shape[1])
  x_tr = transforms.pad_time(train.x, max_len)
  x_te = transforms.pad_time(test.x, max_len)
  if normalize:
    mean, std = transforms.channel_stats(x_tr, train.lengths)
    x_tr = transforms.standardize(x_tr, train.lengths, mean, std)
    x_te = transforms.standardize(x_te, test.lengths, mean, std)
  info = {'input_dim': int(x_tr.shape[2]), 'max_len': int(max_len),
          'num_classes': int(num_classes)}
  return (transforms.classification_split(x_tr, train.lengths, train.y),
          transforms.classification_split(x_te, test.lengths, test.y), info)


def _forecasting(train: _Arrays, test: _Arrays, test_where: str) -> tuple[
    dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
  """Standardises windows with train statistics and packs them."""
  if train.x.shape[1] != test.x.shape[1] or train.y.shape[1] != test.y.shape[1]:
    raise InputError(f'{test_where}: windows are {test.x.shape[1]} -> '
                     f'{test.y.shape[1]} steps but the train file has '
                     f'{train.x.shape[1]} -> {train.y.shape[1]}')
  mean, std = transforms.channel_stats(train.x, train.lengths)
  naive_rmse = float(np.sqrt(np.mean(
      (test.y.astype(np.float64) - test.x[:, -1:, 0]) ** 2)))

  def pack(a: _Arrays) -> dict[str, np.ndarray]:
    return {'x': ((a.x - mean) / std).astype(np.float32),
            'y': ((a.y - mean[0]) / std[0]).astype(np.float32),
            'lengths': a.lengths.astype(np.int32)}

  window, horizon = train.x.shape[1], train.y.shape[1]
  info = {'input_dim': int(train.x.shape[2]), 'max_len': int(window),
          'horizon': int(horizon), 'mean': float(mean[0]),
          'std': float(std[0]), 'naive_rmse': naive_rmse}
  return pack(train), pack(test), info


def load(path: str = '', test_path: str = '', test_fraction: float = 0.2,
         task: str = 'classification', normalize: bool = False) -> Dataset:
  """Loads the user's data file(s).

  Args:
    path: the .npz or .ts file (the train split, or all data when test_path
      is '').
    test_path: a separate test file of the same kind, or '' to split `path`.
    test_fraction: the share of `path`'s rows that become the test split when
      test_path is ''; a fixed-seed random split for classification, the last
      rows (taken to be in time order) for forecasting.
    task: 'classification' or 'forecasting'.
    normalize: classification only: standardise each channel with the train
      split's mean and std over valid steps. Forecasting data is always
      standardised (channel-wise; y with channel 0's statistics).

  Returns:
    A Dataset following the conventions of `data.load`.
  """
  path = checks.string(path, 'path')
  test_path = checks.string(test_path, 'test_path')
  task = checks.choice(task, 'task', TASKS)
  normalize = checks.boolean(normalize, 'normalize')
  test_fraction = checks.fraction(test_fraction, 'test_fraction')
  if not path:
    raise InputError('data.kwargs.path: must name a .npz or .ts file, got ""')
  train = _read(path, task)
  if test_path:
    test = _read(test_path, task)
    if test.x.shape[2] != train.x.shape[2]:
      raise InputError(f'data file {test_path}: has {test.x.shape[2]} '
                       f'features per step but {path} has {train.x.shape[2]}')
  else:
    train, test = _split(train, path, task, test_fraction)
  test_where = f'data file {test_path or path}'
  if task == 'classification':
    train_split, test_split, info = _classification(
        train, test, f'data file {path}', test_where, normalize)
  else:
    train_split, test_split, info = _forecasting(train, test, test_where)
  return Dataset(name='file', task=task, train=train_split, test=test_split,
                 info=info)
