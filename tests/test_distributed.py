"""Multi-process training: `train.py --distributed` as two processes on one host.

* Two processes with one CPU device each, joined through a coordinator on
  127.0.0.1 (CPU collectives), end with the same parameters (`params_sha256`)
  and test accuracy as one process with two CPU devices (`--cpu_devices=2`):
  the batch sharding and the all-reduce are the same, only the transport
  differs.
* A coordinator that never answers ends the process after
  `--distributed_timeout` seconds with one error line and exit status 2.
* Bad distributed flags are one line each, before any waiting.

Each run is a subprocess typed as a user would, since a process joins one
distributed job once.
"""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
RECIPE = 'configs/gru_baseline.py:smoke'


def _env() -> dict:
  """The environment of a run: CPU, one device unless a flag says more."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_NUM_CPU_DEVICES',
                      'JAX_COORDINATOR_ADDRESS')}
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _train(*flags: str) -> list[str]:
  return [sys.executable, 'train.py', f'--config={RECIPE}', *flags]


def _results(workdir) -> dict:
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def test_two_processes_match_one_process_with_two_devices(tmp_path):
  single = subprocess.run(
      _train(f'--workdir={tmp_path / "single"}', '--cpu_devices=2'),
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-2000:]

  port = _free_port()
  procs = [subprocess.Popen(
      _train(f'--workdir={tmp_path / "multi"}', '--distributed',
             f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
             f'--process_id={i}'),
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, (i, out[-2000:])

  one, two = _results(tmp_path / 'single'), _results(tmp_path / 'multi')
  assert two['devices'] == one['devices'] == 2
  assert two['params_sha256'] == one['params_sha256']
  assert two['test_accuracy'] == one['test_accuracy']
  assert two['compressed_bytes'] == one['compressed_bytes']
  # Only process 0 writes the run's files and progress lines.
  assert 'test accuracy' in outs[0] and 'test accuracy' not in outs[1]
  assert not [n for n in os.listdir(tmp_path / 'multi') if '.tmp' in n]


def test_coordinator_that_never_answers_is_one_line(tmp_path):
  port = _free_port()  # Nothing listens there.
  run = subprocess.run(
      _train(f'--workdir={tmp_path / "run"}', '--distributed',
             f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
             '--process_id=1', '--distributed_timeout=2'),
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  assert run.returncode == 2
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1, run.stderr
  assert lines[0].startswith(f'error: --coordinator: 127.0.0.1:{port} did '
                             'not answer')
  assert 'within 2 s' in lines[0]
  assert not os.path.exists(tmp_path / 'run' / 'results.json')


def test_bad_distributed_flags_are_one_line(tmp_path):
  cases = {
      ('--coordinator=localhost', '--num_processes=2', '--process_id=0'):
          '--coordinator: expected host:port',
      ('--coordinator=127.0.0.1:1', '--num_processes=2', '--process_id=2'):
          '--process_id: must be in 0..1',
      ('--coordinator=127.0.0.1:1', '--num_processes=2', '--process_id=0',
       '--distributed_timeout=0'): '--distributed_timeout: must be >= 1',
      (): '--distributed: coordinator_address should be defined. (outside '
          'SLURM',
  }
  for flags, message in cases.items():
    run = subprocess.run(
        _train(f'--workdir={tmp_path / "run"}', '--distributed', *flags),
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, (flags, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {message}'), (
        flags, run.stderr)
