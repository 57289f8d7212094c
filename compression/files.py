"""Atomic file writes: a file is written whole or not at all.

Every file the project writes (results.json, config.json, the artifact,
sweep tables, README and REPRODUCTION tables) goes through `atomic_write`:
the bytes go to a temporary file beside the target, which then replaces it
in one rename. A kill or a full disk leaves the old file (or none), never a
truncated one, and the temporary file is removed on failure.
"""

from __future__ import annotations

import os


def atomic_write(path: str, data: bytes | str) -> None:
  """Writes `data` to `path` whole or not at all.

  The temporary name carries the process id, so processes of a multi-process
  job that write the same file never rename each other's halves.

  Args:
    path: the target file.
    data: bytes, or text (written as UTF-8).

  Raises:
    OSError: the write failed (`path` is unchanged; its message names
      `path`, not the temporary file).
  """
  tmp = f'{path}.{os.getpid()}.tmp'
  mode = 'wb' if isinstance(data, bytes) else 'w'
  try:
    with open(tmp, mode, **({} if mode == 'wb' else {'encoding': 'utf-8'})
              ) as f:
      f.write(data)
    os.replace(tmp, path)
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise type(e)(e.errno, e.strerror, path) from None
