"""Workdir failures run in a process of their own (see test_integrity.py).

`python tests/integrity_cases.py ROOT SHA256` runs each case below through
`cli.run_cli` (the path every entry point takes) and prints one JSON object
mapping case -> {'code': exit status, 'stderr': lines written to fd 2}. The
caller prepares ROOT (a read-only mount, a small tmpfs, a directory without
write permission, files where directories belong) and starts this script
without the capability to override file permissions, so permission checks
apply as they do to an ordinary user. SHA256 is the parameter digest of an
uninterrupted run of the same config, which the run resumed after the full
disk must reproduce.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..'))

import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

import eval as eval_lib  # pylint: disable=g-import-not-at-top
import cli  # pylint: disable=g-import-not-at-top
import checkpoints
import train  # pylint: disable=g-import-not-at-top
from configs import gru_baseline  # pylint: disable=g-import-not-at-top


def small_config() -> Any:
  """The smoke config of the suite: 4 steps, checkpoints at 2 and 4."""
  config = gru_baseline.get_config('smoke')
  config.train.checkpoint_every = 2
  return config


def run_case(fn: Callable[[], Any]) -> dict[str, Any]:
  """Runs `fn` under `cli.run_cli`; its exit code and its stderr lines."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode='w+') as err:
    os.dup2(err.fileno(), 2)
    code = 0
    try:
      cli.run_cli(fn)
    except SystemExit as e:
      code = e.code
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
    err.seek(0)
    lines = [l for l in err.read().splitlines() if l.strip()]
  return {'code': code, 'stderr': lines}


def fill(directory: str) -> str:
  """Writes a file into `directory` until the file system is full."""
  path = os.path.join(directory, 'filler')
  chunk = b'\0' * (1 << 16)
  try:
    with open(path, 'wb') as f:
      while True:
        f.write(chunk)
        f.flush()
  except OSError:
    pass
  return path


def main(root: str, reference_sha: str) -> dict[str, Any]:
  """Runs every case; returns the report."""
  config = small_config()
  out: dict[str, Any] = {}
  train_into = lambda wd: lambda: train.train_and_evaluate(config, wd)
  out['read_only_fs'] = run_case(train_into(os.path.join(root, 'ro', 'new')))
  out['permission'] = run_case(train_into(os.path.join(root, 'noperm', 'run')))
  out['workdir_is_file'] = run_case(train_into(os.path.join(root, 'afile')))
  out['checkpoints_is_file'] = run_case(train_into(os.path.join(root,
                                                                'ckfile')))
  out['eval_read_only_run'] = run_case(
      lambda: eval_lib.evaluate(config, os.path.join(root, 'ro', 'run')))

  # A full disk in the middle of the second save (step 4): one line, step 2
  # stays restorable, and once space is freed the same call finishes with the
  # parameters of an uninterrupted run.
  tiny = os.path.join(root, 'tiny')
  workdir = os.path.join(tiny, 'run')
  real_save = ocp.CheckpointManager.save
  filler = []

  def save_on_full_disk(self, step, *args, **kwargs):
    if step == 4 and not filler:
      filler.append(fill(tiny))
    return real_save(self, step, *args, **kwargs)

  ocp.CheckpointManager.save = save_on_full_disk
  try:
    out['full_disk'] = run_case(train_into(workdir))
  finally:
    ocp.CheckpointManager.save = real_save
  if filler:
    os.remove(filler[0])
  mngr = checkpoints.checkpoint_manager(workdir, config, read_only=True)
  try:
    setup = train.build(config)
    state = checkpoints.restore_latest(mngr, train.init_state(config, setup),
                                 workdir)
    out['full_disk_kept_step'] = None if state is None else int(state.step)
  finally:
    mngr.close()
  results: dict[str, Any] = {}
  out['full_disk_rerun'] = run_case(
      lambda: results.update(train.train_and_evaluate(config, workdir)))
  out['full_disk_rerun_identical'] = (
      results.get('params_sha256') == reference_sha)
  return out


if __name__ == '__main__':
  print(json.dumps(main(sys.argv[1], sys.argv[2])))
