"""Command-line plumbing shared by train.py, eval.py and sweep.py.

`parse_flags` is the absl flags parser of every entry point
(`app.run(main, flags_parser=cli.parse_flags)`): a `--config.<path>=value`
override naming a field the recipe does not declare becomes one error line
that lists the valid fields at that level (ml_collections would raise a
multi-line traceback), and any other flag error is one line too; both exit
with status 2 before anything is built.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Sequence

from absl import flags

from compression.errors import InputError

CONFIG_PREFIX = '--config.'


def override_keys(argv: Sequence[str]) -> list[str]:
  """The dotted config paths that `--config.<path>=value` flags set."""
  keys = []
  for a in argv:
    if a.startswith(CONFIG_PREFIX):
      keys.append(a[len(CONFIG_PREFIX):].partition('=')[0])
  return keys


def _recipe(argv: Sequence[str]) -> Any:
  """The ConfigDict that `--config=file.py[:arg]` names, or None."""
  spec = None
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      spec = a[len('--config='):]
    elif a == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  if not spec:
    return None
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    return None
  module_spec = importlib.util.spec_from_file_location('_recipe', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def unknown_override(config: Any, keys: Sequence[str]) -> str | None:
  """The first override path that `config` does not declare, as a message.

  Args:
    config: the recipe's ConfigDict.
    keys: dotted paths (`data.kwargs.path`).

  Returns:
    '--config.<path>: unknown field ...; valid: ...', or None when every
    path exists.
  """
  for key in keys:
    node, walked = config, []
    for part in key.split('.'):
      fields = node.keys() if hasattr(node, 'keys') else None
      if fields is None or part not in fields:
        where = '.'.join(walked) or 'config'
        valid = ', '.join(sorted(fields)) if fields is not None else (
            f'none ({where} is a value, not a section)')
        return (f'{CONFIG_PREFIX}{key}: unknown field {part!r} in {where}; '
                f'valid: {valid}')
      node = node[part]
      walked.append(part)
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with one-line errors (exit status 2).

  Args:
    argv: the full command line (program name first).

  Returns:
    The arguments that are not flags, as `flags.FLAGS(argv)` returns them.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _exit(str(e))
  except (AttributeError, KeyError, TypeError, ValueError, InputError) as e:
    # ml_collections raises these for an override of an undeclared field.
    message = None
    try:
      config = _recipe(argv)
      if config is not None:
        message = unknown_override(config, override_keys(argv))
    except Exception:  # pylint: disable=broad-except
      pass  # The recipe itself fails; report the original error below.
    if message is None:
      first = str(e).strip().strip('\'"').splitlines() or [type(e).__name__]
      message = f'command line: {first[0]}'
    _exit(message)
  raise AssertionError('unreachable')


def _exit(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)
