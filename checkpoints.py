"""Verified orbax checkpoints of a run's workdir.

Every save first records a SHA-256 of each field of the state it saves
(parameters, optimizer and compression state, ...) in
`checkpoint_digests.json`, atomically; every restore verifies it and refuses
non-finite parameters. A checkpoint that fails is reported on one line and
the newest one that verifies is used instead, so a damaged file never
becomes a silently different model. train.py, eval.py and the runs that
start from another run (init_from, teacher) all restore through here.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Any, Sequence

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

import cli
from compression import files
from compression.errors import InputError


# Digests of the checkpoints of a workdir: {step: {field: sha256}}, written
# (atomically) before each save, so a checkpoint on disk always has its digest
# and a failed write leaves the earlier checkpoints untouched.
DIGESTS = 'checkpoint_digests.json'
# Where a resumed run moves the checkpoints that failed verification.
REJECTED = 'rejected_checkpoints'


def checkpoint_manager(workdir: str, config: Any,
                       read_only: bool = False) -> ocp.CheckpointManager:
  """The orbax CheckpointManager of a workdir (synchronous saves).

  Raises:
    OSError: the workdir or its `checkpoints` is not a directory, or cannot
      be created (permissions, read-only file system, full disk).
  """
  root = os.path.abspath(workdir)
  directory = os.path.join(root, 'checkpoints')
  for path in (root, directory):
    if os.path.exists(path) and not os.path.isdir(path):
      raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
  try:
    # Quiet: orbax warns about read-only options and logs damaged step
    # metadata as errors; restore_latest reports what matters in one line.
    with _quiet_orbax():
      options = ocp.CheckpointManagerOptions(
          max_to_keep=max(1, config.train.keep_checkpoints),
          enable_async_checkpointing=False, create=not read_only,
          read_only=read_only)
      return ocp.CheckpointManager(directory, options=options)
  except OSError:
    raise
  except Exception as e:  # Orbax and tensorstore wrap file errors.
    raise cli.as_os_error(e, directory) from None


def _host_leaf(leaf: Any) -> np.ndarray:
  """A leaf as a numpy array (a replicated multi-host array: its local copy)."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    leaf = leaf.addressable_data(0)
  return np.asarray(jax.device_get(leaf))


def tree_digest(tree: Any) -> str:
  """SHA-256 over every leaf's dtype, shape and bytes, in tree order."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    a = np.ascontiguousarray(_host_leaf(leaf))
    h.update(f'{a.dtype.str}{a.shape};'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def state_digest(state: Any) -> dict[str, str]:
  """The digest of each field of a train state (params, opt_state, ...)."""
  return {name: tree_digest(value) for name, value in state._asdict().items()}


def _read_digests(workdir: str) -> dict[int, dict[str, str]]:
  """The recorded digests by step; {} when none (or the table is damaged)."""
  try:
    with open(os.path.join(workdir, DIGESTS)) as f:
      table = json.load(f)
  except FileNotFoundError:
    return {}
  except ValueError:  # Damaged: then no checkpoint verifies.
    return {}
  if not isinstance(table, dict):
    return {}
  return {int(k): v['fields'] for k, v in table.items()
          if k.isdigit() and isinstance(v, dict)
          and isinstance(v.get('fields'), dict)}


def record_digest(mngr: ocp.CheckpointManager, workdir: str, step: int,
                   fields: dict[str, str]) -> None:
  """Adds a step's digest, keeping those of the checkpoints still on disk."""
  on_disk = set(mngr.all_steps())
  table = {str(s): {'fields': d} for s, d in _read_digests(workdir).items()
           if s in on_disk and s != step}
  table[str(step)] = {'fields': fields}
  if jax.process_index() == 0:  # Only process 0 writes files.
    files.atomic_write(os.path.join(workdir, DIGESTS),
                       json.dumps(table, indent=1, sort_keys=True) + '\n')


def _verify(fields: dict[str, Any], recorded: dict[str, str] | None,
            names: Sequence[str]) -> str | None:
  """Why restored fields fail verification, or None when they pass."""
  if recorded is None:
    return (f'has no digest in {DIGESTS} (its save was cut short, or it '
            'predates verified checkpoints)')
  bad = [n for n in names if recorded.get(n) != tree_digest(fields[n])]
  if bad:
    return f'fails verification: {", ".join(bad)} differ from what was saved'
  for leaf in jax.tree.leaves(fields.get('params')):
    a = _host_leaf(leaf)
    if a.dtype.kind in 'fc' and not np.all(np.isfinite(a)):
      return 'parameters hold NaN or inf'
  return None


@contextlib.contextmanager
def _quiet_orbax():
  """Silences what orbax and tensorstore print while a damaged file fails.

  A failed restore makes them log errors and print tracebacks from their
  worker threads (and from coroutines collected later); the caller reports
  the failure in one line instead. Restores stderr and logging on exit.
  """
  verbosity = logging.get_verbosity()
  hook = sys.unraisablehook
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, 'w') as null:
      os.dup2(null.fileno(), 2)
    logging.set_verbosity(logging.FATAL)
    sys.unraisablehook = lambda unraisable: None
    try:
      yield
    except Exception:
      time.sleep(0.2)  # The failed reads' worker threads finish quietly.
      raise
  finally:
    gc.collect()  # Finalizes the failed restore's coroutines while quiet.
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    sys.unraisablehook = hook
    logging.set_verbosity(verbosity)


def _report_rejected(workdir: str, rejected: list[tuple[int, str]],
                     step: int) -> None:
  """One stderr line per checkpoint that was passed over for `step`."""
  if jax.process_index():
    return
  for bad, why in rejected:
    print(f'warning: checkpoint {workdir}/checkpoints/{bad} {why}; using '
          f'step {step} instead', file=sys.stderr, flush=True)


def _no_checkpoint_verifies(workdir: str, rejected: list[tuple[int, str]],
                            prefix: str = '') -> InputError:
  step, why = rejected[0]
  more = (f'; none of the {len(rejected) - 1} earlier ones verifies either'
          if len(rejected) > 1 else '')
  return InputError(
      f'{prefix}checkpoint {workdir}/checkpoints/{step}: {why}{more}; it does '
      'not fit this config or is damaged (nothing was deleted; move its '
      'checkpoints/ aside to start over)')


def _set_aside(mngr: ocp.CheckpointManager, workdir: str,
               steps: Sequence[int]) -> None:
  """Moves rejected checkpoints to `workdir/rejected_checkpoints/`."""
  if not jax.process_index():
    into = os.path.join(workdir, REJECTED)
    os.makedirs(into, exist_ok=True)
    for step in steps:
      dest = os.path.join(into, str(step))
      n = 1
      while os.path.exists(dest):
        dest, n = os.path.join(into, f'{step}.{n}'), n + 1
      shutil.move(os.path.join(str(mngr.directory), str(step)), dest)
  mngr.reload()


def restore_latest(mngr: ocp.CheckpointManager, target: Any,
                   workdir: str, set_aside: bool = False) -> Any:
  """The newest checkpoint that verifies, restored into `target`'s structure.

  Every field restored (parameters, optimizer and compression state, ...)
  must match the digest recorded when it was saved, and the parameters must
  be finite. A checkpoint that fails is reported on one stderr line and the
  one before it is tried.

  Args:
    mngr: the workdir's CheckpointManager.
    target: a train state (a NamedTuple) of the run's structure, e.g.
      `train.init_state`; the restored state has its type.
    workdir: the run directory (holds the digests).
    set_aside: move the newer checkpoints that failed to
      `workdir/rejected_checkpoints/` (a resuming run saves those steps anew).

  Returns:
    The restored state, or None when there is no checkpoint.

  Raises:
    InputError: there are checkpoints, but none verifies.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    return None
  digests = _read_digests(workdir)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  rejected = []
  for step in steps:
    try:
      with _quiet_orbax():
        restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # Orbax raises many types for a damaged directory.
      why = f'cannot be restored ({cli.first_line(e)})'
    else:
      kind = type(target)
      state = restored if isinstance(restored, kind) else kind(*restored)
      why = _verify(state._asdict(), digests.get(step), kind._fields)
      if why is None:
        _report_rejected(workdir, rejected, step)
        if rejected and set_aside:
          _set_aside(mngr, workdir, [s for s, _ in rejected])
        return state
    rejected.append((step, why))
  raise _no_checkpoint_verifies(workdir, rejected)


def restore_verified_params(workdir: str, field: str) -> Any:
  """The parameters of `workdir`'s newest checkpoint that verifies.

  Only the parameters are read (and verified), so the source run may have
  used another optimizer.

  Args:
    workdir: the source run directory.
    field: the config field that named it, for messages ('init_from').

  Returns:
    The parameter tree as saved.

  Raises:
    InputError: no checkpoint, or none whose parameters verify.
  """
  with _quiet_orbax():  # Orbax logs damaged step metadata as errors.
    mngr = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), 'checkpoints'),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  rejected = []
  try:
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
      raise InputError(f'{field}: {workdir!r} holds no checkpoint')
    digests = _read_digests(workdir)
    for step in steps:
      try:
        with _quiet_orbax():
          tree = mngr.restore(step, args=ocp.args.StandardRestore())
        # TrainState is saved as a NamedTuple of fields: params is field 1.
        params = tree['params'] if isinstance(tree, dict) else tree[1]
      except Exception as e:  # Orbax raises many types for damaged files.
        why = f'cannot be read ({cli.first_line(e)})'
      else:
        why = _verify({'params': params}, digests.get(step), ('params',))
        if why is None:
          _report_rejected(workdir, rejected, step)
          return params
      rejected.append((step, why))
  finally:
    mngr.close()
  raise _no_checkpoint_verifies(workdir, rejected, f'{field}: ')
