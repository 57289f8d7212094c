"""Validation of user-supplied data arrays (and the dataset keyword checks).

The scalar checks of dataset keywords (`integer`, `fraction`, `boolean`,
`choice`, `string`) live with every other value check in
`compression.checks` and are re-exported here.

Every check raises `InputError` with one line that names the offending field
(`data.kwargs.window`) or file (`data file x.npz`) and says what is allowed, so
a bad config or data file fails before anything is compiled.
"""

from __future__ import annotations

import numpy as np

# Re-exported: the dataset loaders call checks.integer(...) and the others.
from compression.checks import boolean, choice, fraction  # noqa: F401
from compression.checks import integer, string  # noqa: F401
from compression.errors import InputError


def finite(x: np.ndarray, where: str, key: str) -> None:
  """Raises if `x` holds a NaN or an infinity.

  Args:
    x: a float array.
    where: the file, for the message (`data file x.npz`).
    key: the array's name in that file.
  """
  if not np.all(np.isfinite(x)):
    raise InputError(f'{where}: {key!r} contains NaN or inf')


def integer_labels(y: np.ndarray, where: str, key: str = 'y') -> np.ndarray:
  """Converts class labels to int32, refusing non-integer values.

  Args:
    y: labels of any numeric dtype; floats must hold whole numbers (as
      exported by MATLAB or pandas).
    where: the file, for the message.
    key: the array's name in that file.

  Returns:
    The labels as int32.
  """
  if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
    return y.astype(np.int32)
  if np.issubdtype(y.dtype, np.floating):
    finite(y, where, key)
    if np.all(y == np.round(y)):
      return y.astype(np.int32)
    bad = y[y != np.round(y)][0]
    raise InputError(
        f'{where}: {key!r} must hold integer class labels, found {bad}')
  raise InputError(
      f'{where}: {key!r} must hold integer class labels, got dtype {y.dtype}')


def labels_in_range(y: np.ndarray, num_classes: int, where: str,
                    key: str = 'y') -> None:
  """Raises if a label lies outside [0, num_classes).

  Args:
    y: int labels.
    num_classes: the number of classes.
    where: the file, for the message.
    key: the array's name in that file.
  """
  bad = y[(y < 0) | (y >= num_classes)]
  if bad.size:
    raise InputError(f'{where}: {key!r} has label {int(bad[0])} outside '
                     f'[0, {num_classes})')
