"""Validation of dataset keyword arguments and of user-supplied arrays.

Every check raises `InputError` with one line that names the offending field
(`data.kwargs.window`) or file (`data file x.npz`) and says what is allowed, so
a bad config or data file fails before anything is compiled.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from compression.errors import InputError


def _field(name: str) -> str:
  return f'data.kwargs.{name}'


def integer(value: Any, name: str, minimum: int = 0) -> int:
  """Checks that a keyword argument is an integer >= `minimum`.

  Args:
    value: the value from the config.
    name: the keyword's name, used in the error message.
    minimum: the smallest allowed value.

  Returns:
    The value as a Python int.
  """
  # bool is an int subclass, but `window=True` is always a config mistake.
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)):
    raise InputError(
        f'{_field(name)}: must be an integer >= {minimum}, got {value!r}')
  if value < minimum:
    raise InputError(
        f'{_field(name)}: must be an integer >= {minimum}, got {value}')
  return int(value)


def fraction(value: Any, name: str) -> float:
  """Checks that a keyword argument is a number strictly inside (0, 1).

  Args:
    value: the value from the config.
    name: the keyword's name, used in the error message.

  Returns:
    The value as a Python float.
  """
  ok = isinstance(value, (int, float, np.integer, np.floating)) and not (
      isinstance(value, (bool, np.bool_)))
  if not ok or not 0.0 < float(value) < 1.0:
    raise InputError(
        f'{_field(name)}: must be a number in (0, 1), got {value!r}')
  return float(value)


def boolean(value: Any, name: str) -> bool:
  """Checks that a keyword argument is a bool.

  Args:
    value: the value from the config.
    name: the keyword's name, used in the error message.

  Returns:
    The value as a Python bool.
  """
  if not isinstance(value, (bool, np.bool_)):
    raise InputError(f'{_field(name)}: must be True or False, got {value!r}')
  return bool(value)


def choice(value: Any, name: str, choices: Sequence[str]) -> str:
  """Checks that a keyword argument is one of `choices`.

  Args:
    value: the value from the config.
    name: the keyword's name, used in the error message.
    choices: the allowed strings.

  Returns:
    The value.
  """
  if value not in choices:
    raise InputError(
        f'{_field(name)}: unknown value {value!r}; valid: {", ".join(choices)}')
  return value


def string(value: Any, name: str) -> str:
  """Checks that a keyword argument is a string (possibly empty).

  Args:
    value: the value from the config.
    name: the keyword's name, used in the error message.

  Returns:
    The value.
  """
  if not isinstance(value, str):
    raise InputError(f'{_field(name)}: must be a string, got {value!r}')
  return value


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
