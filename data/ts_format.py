"""A reader for the UEA/UCR `.ts` time-series classification format.

The format (https://www.timeseriesclassification.com) is a text file: `#`
comment lines, then `@key value` header lines ending with `@data`, then one
case per line. A case lists its dimensions separated by `:`, each dimension's
values separated by `,`, and, when `@classLabel true`, the class label last:

  @problemName Toy
  @univariate false
  @dimensions 2
  @equalLength false
  @classLabel true a b
  @data
  1.0,2.0,3.0:4.0,5.0,6.0:b
  7.0,8.0:9.0,10.0:a

We read only what classification needs: time stamps, regression targets and
missing values (`?`) are refused with a clear error rather than guessed at.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import numpy as np

from compression.errors import InputError


class TsData(NamedTuple):
  """The cases of one `.ts` file.

  Attributes:
    x: float32 (N, T, F), zero after each case's length; T is the longest case.
    lengths: int32 (N,), the number of steps of each case.
    y: int32 (N,) class ids in [0, len(class_labels)), in the order the
      `@classLabel` line lists the labels; None when the file has no labels.
    class_labels: the label strings, index = class id.
    problem_name: the `@problemName`, or '' when absent.
  """
  x: np.ndarray
  lengths: np.ndarray
  y: Optional[np.ndarray]
  class_labels: tuple[str, ...]
  problem_name: str


def _true_false(value: str, where: str, key: str) -> bool:
  if value.lower() not in ('true', 'false'):
    raise InputError(f'{where}: @{key} must be true or false, got {value!r}')
  return value.lower() == 'true'


def _parse_case(line: str, lineno: int, where: str, num_dims: Optional[int],
                has_label: bool) -> tuple[np.ndarray, Optional[str]]:
  """Parses one data line into a (T, F) float64 array and its label."""
  parts = line.split(':')
  label = None
  if has_label:
    if len(parts) < 2:
      raise InputError(f'{where}: line {lineno}: expected dimensions and a '
                       'class label separated by ":"')
    label = parts.pop().strip()
  if num_dims is not None and len(parts) != num_dims:
    raise InputError(f'{where}: line {lineno}: has {len(parts)} dimensions, '
                     f'expected {num_dims}')
  dims = []
  for d, part in enumerate(parts):
    tokens = [t.strip() for t in part.split(',')]
    if '?' in tokens:
      raise InputError(f'{where}: line {lineno}: missing value "?" in '
                       f'dimension {d}; missing values are not supported')
    if tokens == ['']:
      raise InputError(f'{where}: line {lineno}: dimension {d} is empty')
    try:
      dims.append(np.array(tokens, dtype=np.float64))
    except ValueError:
      bad = next(t for t in tokens if not _is_float(t))
      raise InputError(f'{where}: line {lineno}: dimension {d} has '
                       f'non-numeric value {bad!r}') from None
  if len({len(v) for v in dims}) != 1:
    raise InputError(f'{where}: line {lineno}: dimensions have different '
                     f'lengths {[len(v) for v in dims]}')
  return np.stack(dims, axis=-1), label


def _is_float(token: str) -> bool:
  try:
    float(token)
  except ValueError:
    return False
  return True


def read_ts(path: str) -> TsData:
  """Reads a `.ts` classification file.

  Args:
    path: the file.

  Returns:
    The parsed cases, zero-padded to the longest one.

  Raises:
    InputError: unreadable file, unsupported header, malformed case, missing
      value, or a label the `@classLabel` line does not list.
  """
  where = f'data file {path}'
  if not os.path.isfile(path):
    raise InputError(f'{where}: not found')
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(f'{where}: cannot be read as UTF-8 text ({e})') from None
  if not any(line.strip() for line in lines):
    raise InputError(f'{where}: file is empty')

  header: dict[str, str] = {}
  class_labels: tuple[str, ...] = ()
  has_label = False
  num_dims = None
  cases, labels, case_lines = [], [], []
  in_data = False
  for lineno, raw in enumerate(lines, start=1):
    line = raw.strip()
    if not line or line.startswith('#'):
      continue
    if not in_data:
      if not line.startswith('@'):
        raise InputError(f'{where}: line {lineno}: expected a "@key value" '
                         'header line or @data before the first case')
      key, _, value = line[1:].partition(' ')
      key, value = key.lower(), value.strip()
      if key == 'data':
        in_data = True
      elif key == 'classlabel':
        words = value.split()
        has_label = bool(words) and _true_false(words[0], where, 'classLabel')
        class_labels = tuple(words[1:]) if has_label else ()
        if has_label and not class_labels:
          raise InputError(f'{where}: @classLabel true lists no labels')
        if len(set(class_labels)) != len(class_labels):
          twice = next(c for c in class_labels if class_labels.count(c) > 1)
          raise InputError(f'{where}: @classLabel lists {twice!r} twice')
      elif key == 'timestamps':
        if _true_false(value, where, 'timeStamps'):
          raise InputError(f'{where}: @timeStamps true is not supported')
      elif key == 'targetlabel':
        if _true_false(value.split()[0] if value else '', where, 'targetLabel'):
          raise InputError(f'{where}: @targetLabel true (regression) is not '
                           'supported; only classification .ts files are read')
      elif key == 'dimensions':
        try:
          num_dims = int(value)
        except ValueError:
          num_dims = 0
        if num_dims < 1:
          raise InputError(f'{where}: @dimensions must be a positive integer, '
                           f'got {value!r}')
      header[key] = value
      continue
    case, label = _parse_case(line, lineno, where, num_dims, has_label)
    # Later cases must match the first one's dimension count.
    num_dims = case.shape[1]
    cases.append(case)
    labels.append(label)
    case_lines.append(lineno)

  if not in_data:
    raise InputError(f'{where}: no @data line')
  if not cases:
    raise InputError(f'{where}: no cases after @data')
  if 'univariate' in header and _true_false(
      header['univariate'], where, 'univariate') and num_dims != 1:
    raise InputError(f'{where}: @univariate true but cases have {num_dims} '
                     'dimensions')

  lengths = np.array([len(c) for c in cases], dtype=np.int32)
  if 'equallength' in header and _true_false(
      header['equallength'], where, 'equalLength'):
    odd = np.flatnonzero(lengths != lengths[0])
    if odd.size:
      raise InputError(f'{where}: line {case_lines[odd[0]]}: length '
                       f'{lengths[odd[0]]} differs from {lengths[0]} although '
                       '@equalLength true')

  x = np.zeros((len(cases), int(lengths.max()), num_dims), np.float32)
  for i, case in enumerate(cases):
    x[i, :len(case)] = case
  if not np.all(np.isfinite(x)):
    row = int(np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))[0])
    raise InputError(f'{where}: line {case_lines[row]}: contains NaN or inf '
                     '(or a value too large for float32)')

  y = None
  if has_label:
    ids = {label: i for i, label in enumerate(class_labels)}
    for label, lineno in zip(labels, case_lines):
      if label not in ids:
        raise InputError(f'{where}: line {lineno}: class label {label!r} is '
                         f'not listed by @classLabel; valid: '
                         f'{", ".join(class_labels)}')
    y = np.array([ids[label] for label in labels], dtype=np.int32)
  return TsData(x=x, lengths=lengths, y=y, class_labels=class_labels,
                problem_name=header.get('problemname', ''))
