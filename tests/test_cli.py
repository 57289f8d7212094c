"""The entry points' flags: each accepts what it uses and nothing more."""

import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), '..')
MULTI_HOST = ('--distributed', '--coordinator', '--num_processes',
              '--process_id', '--distributed_timeout')


def _help(script):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, script), '--help'],
                        cwd=ROOT, capture_output=True, text=True)
  # absl prints the help and exits with status 1.
  assert proc.returncode in (0, 1) and 'flags:' in proc.stdout, proc.stderr
  return proc.stdout


def test_eval_lists_no_multi_host_flags_and_train_does():
  eval_help = _help('eval.py')
  for flag in ('--config', '--workdir', '--cpu_devices', '--artifact'):
    assert flag in eval_help
  for flag in MULTI_HOST:
    assert flag + ':' not in eval_help and f'--[no]{flag[2:]}' not in eval_help
  train_help = _help('train.py')
  for flag in ('--coordinator', '--num_processes', '--process_id'):
    assert flag + ':' in train_help
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'eval.py'),
                         '--distributed', '--workdir=x'], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode != 0 and 'distributed' in proc.stderr
