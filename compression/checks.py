"""Value checks shared by every config section and dataset keyword.

Two families, one place:

* checks of a method's options (`one_of`, `in_range`, `at_least`,
  `type_error`): functions `value -> error text or None` that
  `compression.core.Options` runs and prefixes with the option's field;
* checks of dataset keyword arguments (`integer`, `fraction`, `boolean`,
  `choice`, `string`), which raise one `InputError` line naming
  `data.kwargs.<name>`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from compression.errors import InputError


def one_of(*choices: str) -> Callable[[Any], str | None]:
  """A check: the value is one of `choices`."""
  return lambda v: None if v in choices else (
      f'unknown {v!r}; valid: ' + ', '.join(choices))


def in_range(lo: float, hi: float, lo_open: bool = False,
             hi_open: bool = False) -> Callable[[Any], str | None]:
  """A check: lo <= value <= hi (either end open)."""
  def check(v):
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return None if ok else (f"{v} outside {'(' if lo_open else '['}{lo:g}, "
                            f"{hi:g}{')' if hi_open else ']'}")
  return check


def at_least(lo: float) -> Callable[[Any], str | None]:
  """A check: value >= lo."""
  return lambda v: None if v >= lo else f'must be >= {lo:g}, got {v!r}'


def type_error(value: Any, default: Any) -> str | None:
  """Why `value` does not have the type of `default`, or None."""
  kind = type(default)
  if kind is bool:
    return None if isinstance(value, bool) else f'must be true or false, got {value!r}'
  if kind is int:
    return None if isinstance(value, int) and not isinstance(value, bool) else (
        f'must be an integer, got {value!r}')
  if kind is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if ok and math.isfinite(value) else (
        f'must be a finite number, got {value!r}')
  if kind is str:
    return None if isinstance(value, str) else f'must be a string, got {value!r}'
  return None


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
