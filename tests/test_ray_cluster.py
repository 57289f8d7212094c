"""A sweep on a two-node Ray cluster started with `ray start` on this machine.

The README's commands: a head and a worker node with one CPU and a custom
resource each (`head_slot`, `worker_slot`) form the cluster (on free ports,
with a temp dir and client/agent ports of their own so that no other Ray on
the machine is touched); the `:smoke` grid of configs/gru_prune.py runs
through `--ray_address=host:port`. The two fine-tuned points reserve one CPU
each and run at once, so the grid uses both nodes. Then one point, rerun
with `--ray_address=auto` and `--point_resources=worker_slot=1`, runs on the
worker node and resumes from its checkpoint. The nodes are stopped by signalling the two
`ray start --block` processes this test started (never `ray stop`, which
stops every Ray on the machine).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import sweep

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
RAY = os.path.join(os.path.dirname(sys.executable), 'ray')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_node(argv: list[str], log_path: str, env: dict
                ) -> subprocess.Popen:
  """`ray start --block ...`, returned once it reports the node up."""
  log = open(log_path, 'w')
  proc = subprocess.Popen([RAY, 'start', '--block', *argv], stdout=log,
                          stderr=subprocess.STDOUT, env=env,
                          start_new_session=True)
  deadline = time.time() + 90
  while time.time() < deadline:
    with open(log_path) as f:
      if 'Ray runtime started' in f.read():
        return proc
    assert proc.poll() is None, open(log_path).read()
    time.sleep(0.2)
  raise AssertionError(open(log_path).read())


def _stop(proc: subprocess.Popen) -> None:
  """Ends one `ray start --block` and the Ray processes it started."""
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()


def test_sweep_on_a_two_node_cluster(tmp_path):
  # Ray's socket paths must stay short: a temp dir directly under /tmp.
  temp = tempfile.mkdtemp(prefix='rc', dir='/tmp')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'RAY_AUTH_MODE': 'token',
         'RAY_USAGE_STATS_ENABLED': '0'}
  port = _free_port()
  nodes = []
  try:
    nodes.append(_start_node(
        ['--head', f'--port={port}', '--num-cpus=1',
         '--resources={"head_slot": 1}', '--include-dashboard=false',
         f'--ray-client-server-port={_free_port()}',
         f'--dashboard-agent-listen-port={_free_port()}',
         f'--temp-dir={temp}'], str(tmp_path / 'head.log'), env))
    nodes.append(_start_node(
        [f'--address=127.0.0.1:{port}', '--num-cpus=1',
         '--resources={"worker_slot": 1}',
         f'--dashboard-agent-listen-port={_free_port()}'],
        str(tmp_path / 'worker.log'), env))
    work = str(tmp_path / 'grid')
    run = subprocess.run(
        [sys.executable, 'sweep.py', '--config=configs/gru_prune.py:smoke',
         f'--workdir={work}', f'--ray_address=127.0.0.1:{port}',
         '--point_cpus=1'], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = sweep.read_csv(os.path.join(work, 'sweep.csv'))
    assert [r['status'] for r in rows] == ['done'] * 3
    used = set()
    for r in rows:
      with open(os.path.join(work, r['name'], 'sweep_point.json')) as f:
        used.add(json.load(f)['node'])
    assert len(used) == 2  # Both nodes ran points.

    # One point again, joining with `auto`, placed by a custom resource only
    # the worker offers. (`auto` finds a cluster through $RAY_ADDRESS, or
    # the default temp dir's record, which this cluster does not use.)
    os.remove(os.path.join(work, 'prune0.9_s0', 'results.json'))
    run = subprocess.run(
        [sys.executable, 'sweep.py', '--config=configs/gru_prune.py:smoke',
         f'--workdir={work}', '--ray_address=auto',
         '--point_resources=worker_slot=1'], cwd=ROOT,
        env={**env, 'RAY_ADDRESS': f'127.0.0.1:{port}'},
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count(' run ') == 1 and ' run prune0.9_s0' in run.stdout
    with open(os.path.join(work, 'prune0.9_s0', 'sweep_point.json')) as f:
      assert json.load(f)['resources'] == {'CPU': 1.0, 'worker_slot': 1.0}
    rerun = sweep.read_csv(os.path.join(work, 'sweep.csv'))[2]
    assert rerun['status'] == 'done' and rerun['resumed_from_step'] == 4
    assert rerun['params_sha256'] == rows[2]['params_sha256']
  finally:
    for proc in reversed(nodes):
      _stop(proc)
    shutil.rmtree(temp, ignore_errors=True)
