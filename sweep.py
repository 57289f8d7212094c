r"""Runs the grid of a recipe's `sweep()`, tabulates it and plots it.

Usage:
  python sweep.py --config=configs/gru_prune.py --workdir=runs/sweep_prune
  python sweep.py --config=configs/gru_prune.py:smoke --workdir=/tmp/s --parallel=2
  python sweep.py --config=configs/gru_prune.py --workdir=/shared/sweep_prune \
      --ray_address=HEAD:6379 --point_cpus=2   # on a Ray cluster
  python sweep.py --config=configs/gru_prune.py --workdir=runs/sweep_prune --dry_run
  python sweep.py --plot_from runs/sweep_prune runs/sweep_qat --out=pareto.png

The grid. A recipe file may define `sweep(arg=None)`; `arg` is the text after
the colon of `--config` (each recipe parses it; they accept `smoke` for a tiny
grid and `seeds=N`). It returns a list of points, each a dict:

  =========  ================================================================
  key        meaning
  =========  ================================================================
  name       required; the point's run directory `<workdir>/<name>` and its
             row in sweep.csv ([A-Za-z0-9_.+-] only, unique)
  arg        the `:key=value,...` text for the point's recipe ('' = none)
  config     the point's recipe file, relative to the sweep recipe's folder
             (default: the sweep recipe itself), e.g. 'gru_baseline.py'
  overrides  dict of `--config.<key>=<value>` flags, e.g. {'seed': 1,
             'init_from': '{sweep_dir}/baseline_s1'}; '{sweep_dir}' in a
             string value becomes the sweep's workdir
  stage      int, default 1: every point of a stage finishes before the next
             stage starts (shared float baselines and teachers are stage 0,
             so the points that fine-tune from them never train them twice)
  group      default `name`: points that differ only in seed share a group;
             plots and tables average over a group
  method     default the recipe's name: the label in plot legends
  =========  ================================================================

Each point runs as `python train.py --config=<recipe>:<arg>
--workdir=<workdir>/<name> --config.<key>=<value>...`, its output in
`<workdir>/<name>/train.log`, inside a Ray task. With no `--ray_address` the
sweep starts an embedded local Ray (no dashboard, quiet) whose node offers
one point per usable core, or `--parallel` points; `--ray_address=auto`,
`host:port` or `ray://host:port` joins a running cluster instead. Each point
reserves `--point_cpus`, `--point_gpus` and `--point_resources` (custom
resources such as a TPU host's chips); resources no live node offers are an
error before anything runs. A point of a later stage is submitted with the
results of every unfinished point of the earlier stages as arguments, so Ray
starts it only once they finish, and it does not run when one failed. A
point whose worker process or node dies is retried by Ray (RETRIES times)
and train.py resumes it from its checkpoint; a failure of train.py itself is
not retried. Rerunning the same command resumes too: points with a
results.json are skipped. The sweep directory (and the directory sweep.py
runs in) must be on a filesystem every node sees at the same path; a point on
a node that cannot see it fails with one line. `--dry_run` prints the
commands of the unfinished points instead, one per line in stage order (stage
boundaries go to stderr), for another scheduler.

While points run, one progress line shows done / running / failed / left,
the time elapsed and an estimate of the time left; at the end a table lists
every point, then the last lines of each failed point's train.log.

Outputs in the workdir: `sweep.csv` (one row per point: overrides, status,
the test metric, compressed size, ratio, times, and every other scalar of the
point's results.json), `pareto.png` (test metric against compressed size,
one marker and colour per method, the Pareto front marked) and `curves.png`
(training loss and test metric against step, from each point's
metrics.jsonl).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import importlib.util
import io
import json
import logging
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from compression import files
from compression.errors import InputError

ROOT = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(ROOT, 'train.py')

# Task metric in results.json -> (label, scale for display, higher is better).
METRICS = {
    'test_accuracy': ('test accuracy (%)', 100.0, True),
    'test_rmse': ('test RMSE', 1.0, False),
    'test_bits_per_char': ('test bits per character', 1.0, False),
}

# The leading columns of sweep.csv; every other scalar of results.json
# follows, sorted by name.
CSV_COLUMNS = (
    'name', 'group', 'method', 'stage', 'status', 'recipe', 'overrides',
    'metric', 'value', 'compressed_bytes', 'dense_bytes', 'compression_ratio',
    'params_nonzero', 'params_total', 'train_seconds', 'wall_seconds')

_POINT_KEYS = ('name', 'arg', 'config', 'overrides', 'stage', 'group',
               'method')
_NAME_RE = re.compile(r'[A-Za-z0-9_.+-]+')


class SweepError(InputError):
  """A malformed sweep grid or command line (one line naming the field)."""


class Point(NamedTuple):
  """One run of a sweep (see the module docstring for the fields)."""
  name: str
  config: str  # Path of the recipe file.
  arg: str
  overrides: dict
  stage: int
  group: str
  method: str

  @property
  def recipe(self) -> str:
    """'gru_prune.py:sparsity=0.9', as the point's --config names it."""
    base = os.path.basename(self.config)
    return f'{base}:{self.arg}' if self.arg else base


# ----------------------------------------------------------------------------
# The grid


def _import_recipe(path: str) -> Any:
  """Imports a recipe file, as `configs.<name>` when it lives in configs/."""
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise SweepError(f'--config: no file {path}')
  folder, base = os.path.split(path)
  stem = os.path.splitext(base)[0]
  if os.path.basename(folder) == 'configs':
    parent = os.path.dirname(folder)
    if parent not in sys.path:
      sys.path.insert(0, parent)
    return importlib.import_module(f'configs.{stem}')
  spec = importlib.util.spec_from_file_location(f'_sweep_recipe_{stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_points(config_spec: str) -> list[Point]:
  """The points of `config_spec`'s `sweep()` grid, validated.

  Args:
    config_spec: 'configs/gru_prune.py' or 'configs/gru_prune.py:smoke'.

  Returns:
    The points, in the order the recipe lists them.

  Raises:
    SweepError: the recipe has no sweep(), or a point is malformed.
  """
  path, _, arg = config_spec.partition(':')
  module = _import_recipe(path)
  fn = getattr(module, 'sweep', None)
  if fn is None:
    raise SweepError(f'--config: {path} defines no sweep() grid')
  raw = fn(arg or None)
  if not isinstance(raw, (list, tuple)) or not raw:
    raise SweepError(f'{path}: sweep() must return a non-empty list of dicts')
  folder = os.path.dirname(path)
  default_method = os.path.splitext(os.path.basename(path))[0]
  points, seen = [], set()
  for i, p in enumerate(raw):
    if not isinstance(p, dict) or 'name' not in p:
      raise SweepError(f'{path}: sweep() point {i} must be a dict with a name')
    unknown = sorted(set(p) - set(_POINT_KEYS))
    if unknown:
      raise SweepError(f'{path}: sweep() point {p["name"]!r}: unknown keys '
                       f'{unknown}; valid: {", ".join(_POINT_KEYS)}')
    name = str(p['name'])
    if not _NAME_RE.fullmatch(name):
      raise SweepError(f'{path}: sweep() point name {name!r} must match '
                       f'{_NAME_RE.pattern}')
    if name in seen:
      raise SweepError(f'{path}: sweep() point name {name!r} is repeated')
    seen.add(name)
    overrides = dict(p.get('overrides') or {})
    for key in overrides:
      if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_.]*', key):
        raise SweepError(f'{path}: sweep() point {name!r}: bad override key '
                         f'{key!r} (a dotted config field, e.g. model.hidden)')
    config = p.get('config') or os.path.basename(path)
    points.append(Point(
        name=name, config=os.path.join(folder, config),
        arg=str(p.get('arg') or ''), overrides=overrides,
        stage=int(p.get('stage', 1)), group=str(p.get('group') or name),
        method=str(p.get('method') or default_method)))
  return points


def _format_value(value: Any) -> str:
  if isinstance(value, bool):
    return 'true' if value else 'false'
  return str(value)


def command(point: Point, sweep_dir: str, python: str = 'python') -> list[str]:
  """The train.py command line (argv) of one point.

  Args:
    point: the point.
    sweep_dir: the sweep's workdir; the point runs in `<sweep_dir>/<name>`.
    python: the interpreter to name first.

  Returns:
    The argv list, e.g. ['python', 'train.py', '--config=...', ...].
  """
  train, config = TRAIN, point.config
  if python == 'python':  # Printed for people: short paths from the cwd.
    train = os.path.relpath(TRAIN)
    config = os.path.relpath(config) if os.path.isabs(config) else config
  argv = [python, train, f'--config={config}' + (f':{point.arg}' if point.arg
                                                  else ''),
          f'--workdir={os.path.join(sweep_dir, point.name)}']
  for key, value in point.overrides.items():
    text = _format_value(value).replace('{sweep_dir}', sweep_dir)
    argv.append(f'--config.{key}={text}')
  return argv


def is_done(point: Point, sweep_dir: str) -> bool:
  """Whether the point finished (its results.json exists)."""
  return os.path.exists(os.path.join(sweep_dir, point.name, 'results.json'))


# ----------------------------------------------------------------------------
# Running: every point is a Ray task


# Written by the driver into the sweep directory; a point checks that it sees
# the same token there before it starts (the shared-filesystem check).
TOKEN_FILE = '.sweep_token'
# Ray reruns a task whose worker process or node died, up to this many times;
# train.py resumes from the point's checkpoint each time. A point whose
# train.py exits with an error is not retried.
RETRIES = 3
# The environment a point inherits from the driver, on every node: the
# device-count and platform choices (JAX_NUM_CPU_DEVICES, JAX_PLATFORMS), not
# the driver's own multi-process settings.
_FORWARDED_ENV = ('JAX_', 'XLA_FLAGS')
_NOT_FORWARDED = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES',
                  'JAX_PROCESS_ID', 'JAX_LOCAL_DEVICE_IDS')


class Engine(NamedTuple):
  """Where the points run, and what each point reserves.

  Attributes:
    address: '' starts an embedded local Ray for the sweep; 'auto',
      'host:port' or 'ray://host:port' joins a running Ray cluster.
    parallel: embedded Ray only: points at once (the local node offers
      `parallel * cpus` CPUs, rounded up); 0 = one point per usable core.
    cpus: CPUs each point reserves.
    gpus: GPUs each point reserves (Ray sets CUDA_VISIBLE_DEVICES for it).
    resources: custom resources each point reserves, (name, amount) pairs,
      e.g. (('TPU', 4),).
  """
  address: str = ''
  parallel: int = 0
  cpus: float = 1.0
  gpus: float = 0.0
  resources: tuple[tuple[str, float], ...] = ()


def parse_resources(text: str) -> tuple[tuple[str, float], ...]:
  """Parses --point_resources.

  Args:
    text: 'name=amount,...', e.g. 'TPU=4,accelerator_type:TPU-V4=0.001'
      ('' = none).

  Returns:
    The (name, amount) pairs, e.g. (('TPU', 4.0), ...).

  Raises:
    SweepError: an entry that is not name=amount with a positive amount.
  """
  out = []
  for item in (t.strip() for t in text.split(',')):
    if not item:
      continue
    name, eq, amount = item.rpartition('=')
    try:
      value = float(amount)
    except ValueError:
      value = float('nan')
    if not eq or not name or not value > 0:
      raise SweepError(f'--point_resources: {item!r} must be name=amount '
                       'with amount > 0, e.g. TPU=4')
    out.append((name, value))
  return tuple(out)


def _usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def _probe(host: str, port: str, seconds: float = 5.0) -> bool:
  """Whether something accepts TCP connections at host:port."""
  try:
    with socket.create_connection((host, int(port)), timeout=seconds):
      return True
  except (OSError, ValueError):
    return False


def _ray():
  """Imports ray quietly (no usage-stats notice, no retry warnings)."""
  os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
  os.environ.setdefault('RAY_BACKEND_LOG_LEVEL', 'error')
  import ray  # pylint: disable=g-import-not-at-top
  return ray


@contextlib.contextmanager
def ray_session(engine: Engine) -> Iterator[None]:
  """Starts the embedded Ray or joins the cluster; leaves it on exit.

  A Ray this process is already connected to (a notebook's `ray.init()`, a
  caller's session) is used as it is and left running.

  Args:
    engine: the address and, for the embedded Ray, its size.

  Raises:
    SweepError: a malformed or unreachable --ray_address, or a bad size.
  """
  if engine.parallel < 0:
    raise SweepError(f'--parallel: {engine.parallel} must be >= 0 '
                     '(0 = one point per core)')
  address = engine.address.strip()
  host, _, port = address.removeprefix('ray://').rpartition(':')
  if address and address != 'auto' and not (host and port.isdigit()):
    raise SweepError(f'--ray_address: {address!r}; valid: auto, host:port '
                     '(the head\'s GCS port, 6379 by default) or '
                     'ray://host:port (Ray Client, 10001 by default)')
  if address and engine.parallel:
    raise SweepError('--parallel: only for the embedded Ray; on a cluster '
                     '(--ray_address) --point_cpus and the nodes\' CPUs set '
                     'how many points run at once')
  ray = _ray()
  if ray.is_initialized():
    yield
    return
  quiet = dict(include_dashboard=False, log_to_driver=False,
               logging_level=logging.ERROR, configure_logging=True)
  if not address:
    # Ray counts a node's CPUs in whole numbers.
    cpus = math.ceil(engine.parallel * engine.cpus if engine.parallel
                     else max(_usable_cores(), engine.cpus))
    # Points return a few numbers: the object store can be the smallest.
    ray.init(address='local', num_cpus=cpus, object_store_memory=80 << 20,
             **quiet)
  else:
    if address != 'auto':
      if not _probe(host, port):
        raise SweepError(f'--ray_address: nothing answers at {host}:{port} '
                         '(is the cluster up? `ray start --head` prints its '
                         'address)')
    try:
      ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
      # One line: Ray's message can start with a bare 'failure from server:'.
      first = ' '.join([ln.strip() for ln in str(e).splitlines()
                        if ln.strip()][:2])[:300] or type(e).__name__
      hint = ('' if os.environ.get('RAY_AUTH_MODE') or 'find' in first else
              ' (a cluster started with token authentication, the default of '
              '`ray start`, also needs RAY_AUTH_MODE=token here)')
      raise SweepError(f'--ray_address: cannot join {address!r}: {first}'
                       + hint) from e
  try:
    yield
  finally:
    ray.shutdown()


def _need(engine: Engine) -> dict[str, float]:
  need = {'CPU': engine.cpus, 'GPU': engine.gpus, **dict(engine.resources)}
  return {k: v for k, v in need.items() if v}


def check_resources(engine: Engine, nodes: Sequence[dict]) -> None:
  """Fails fast when no node offers what one point asks for.

  Args:
    engine: the per-point resources.
    nodes: `ray.nodes()`.

  Raises:
    SweepError: naming the flag, the amount and what the nodes offer.
  """
  offers = [n.get('Resources', {}) for n in nodes if n.get('Alive')]
  need = _need(engine)
  if any(all(o.get(k, 0) >= v for k, v in need.items()) for o in offers):
    return
  flags = {'CPU': '--point_cpus', 'GPU': '--point_gpus'}
  short = [k for k, v in need.items()
           if not any(o.get(k, 0) >= v for o in offers)] or list(need)
  key = short[0]
  shown = '; '.join(
      ', '.join(f'{k} {v:g}' for k, v in sorted(o.items())
                if not k.startswith(('node:', 'memory', 'object_store')))
      for o in offers) or 'no nodes'
  raise SweepError(f'{flags.get(key, "--point_resources")}: a point asks for '
                   f'{key} {need[key]:g} (with {", ".join(need)}), but no node '
                   f'of the Ray cluster offers that; nodes offer: {shown}')


def _die_with_parent() -> None:
  """In the child: SIGKILL when the Ray worker that started it dies (Linux).

  A train.py that outlived a killed worker would race the retry for the
  same run directory. Ray's raylet also ends a dead worker's children where
  it can; this holds whatever Ray is configured to do.
  """
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def run_point(argv: Sequence[str], run_dir: str, sweep_dir: str, token: str,
              cwd: str, env: dict[str, str], *after: dict) -> dict:
  """The body of one point's Ray task: runs its train.py to the end.

  Args:
    argv: the point's train.py command; its first item, the interpreter, is
      replaced by this worker's own.
    run_dir: the point's run directory (absolute).
    sweep_dir: the sweep directory (absolute).
    token: the content of `<sweep_dir>/.sweep_token` the driver wrote.
    cwd: the driver's working directory (relative paths in argv).
    env: variables to set for train.py (the driver's JAX_* and XLA_FLAGS).
    *after: the results of the points of earlier stages (Ray passes them
      once they finish); when one failed this point does not run.

  Returns:
    {'name', 'ok', 'host', 'node' (Ray's node id), 'resources' (what Ray
    assigned it), 'pid', 'seconds', 'returncode', 'error'}; 'error' is one
    line, or the last lines of train.log.
  """
  name = os.path.basename(run_dir)
  host = socket.gethostname()
  try:
    import ray  # pylint: disable=g-import-not-at-top
    context = ray.get_runtime_context()
    node, assigned = context.get_node_id(), context.get_assigned_resources()
  except Exception:  # pylint: disable=broad-except
    node, assigned = '', {}  # Called outside a Ray task.
  out = {'name': name, 'ok': False, 'host': host, 'node': node,
         'resources': assigned, 'pid': os.getpid(), 'seconds': 0.0,
         'returncode': None, 'error': ''}
  failed = sorted(r['name'] for r in after if not r['ok'])
  if failed:
    out['error'] = f'not run: it starts from {", ".join(failed)}, which failed'
    return out
  try:
    with open(os.path.join(sweep_dir, TOKEN_FILE)) as f:
      seen = f.read().strip()
  except OSError:
    seen = ''
  if seen != token or not os.path.isdir(cwd):
    missing = sweep_dir if seen != token else cwd
    out['error'] = (f'node {host} cannot see {missing} (every node must see '
                    'the sweep directory and the directory sweep.py runs in '
                    'at the same paths: put them on a shared filesystem)')
    return out
  os.makedirs(run_dir, exist_ok=True)
  t0 = time.time()
  state = {'name': name, 'state': 'running', 'host': host, 'node': node,
           'resources': assigned, 'pid': os.getpid(), 'started': t0}
  _write_json(os.path.join(run_dir, 'sweep_point.json'), state)
  argv = [sys.executable, *argv[1:]]
  log_path = os.path.join(run_dir, 'train.log')
  with open(log_path, 'a') as log:
    log.write(f'# {time.strftime("%Y-%m-%d %H:%M:%S")} on {host} (worker pid '
              f'{os.getpid()}): {shlex.join(argv)}\n')
    log.flush()
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, **env}, preexec_fn=_die_with_parent)
    _write_json(os.path.join(run_dir, 'sweep_point.json'),
                {**state, 'train_pid': proc.pid})
    out['returncode'] = proc.wait()
  out['seconds'] = time.time() - t0
  out['ok'] = out['returncode'] == 0 and os.path.exists(
      os.path.join(run_dir, 'results.json'))
  if not out['ok']:
    out['error'] = (f'train.py exit {out["returncode"]}; last lines of '
                    f'{log_path}:\n' + _tail(log_path))
  return out


def _say(text: str) -> None:
  _progress.clear()
  print(time.strftime('%H:%M:%S ') + text, flush=True)


def _tail(path: str, lines: int = 8) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def _clock(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class _Progress:
  """The one live progress line.

  On a terminal it is redrawn in place (event lines clear it first);
  otherwise (a log file) it is printed whenever its counts change.
  """

  def __init__(self):
    self.drawn = False
    self.counts: tuple = ()

  def show(self, text: str, counts: tuple) -> None:
    if sys.stdout.isatty():
      sys.stdout.write('\r\x1b[K' + text)
      sys.stdout.flush()
      self.drawn = True
    elif counts != self.counts:
      print(time.strftime('%H:%M:%S ') + text, flush=True)
    self.counts = counts

  def clear(self) -> None:
    if self.drawn:
      sys.stdout.write('\r\x1b[K')
      sys.stdout.flush()
      self.drawn = False


_progress = _Progress()


def run_points(points: Sequence[Point], sweep_dir: str,
               engine: Engine = Engine()) -> dict[str, str]:
  """Runs the unfinished points as Ray tasks; a stage waits for earlier ones.

  Every point of a stage is submitted with the results of all unfinished
  points of earlier stages as arguments, so Ray starts it only after they
  finish (and it does not run when one of them failed). Needs a Ray session
  (`ray_session`).

  Args:
    points: the grid.
    sweep_dir: the sweep's workdir.
    engine: each point's resources.

  Returns:
    The failed points: name -> the error (one line, or the last lines of its
    train.log). Empty when all finished.
  """
  ray = _ray()
  check_resources(engine, ray.nodes())
  os.makedirs(sweep_dir, exist_ok=True)
  abs_dir = os.path.abspath(sweep_dir)
  token = os.urandom(8).hex()
  _write_text(os.path.join(abs_dir, TOKEN_FILE), token + '\n')
  env = {k: v for k, v in os.environ.items()
         if k.startswith(_FORWARDED_ENV) and k not in _NOT_FORWARDED}
  cwd = os.getcwd()
  custom = dict(engine.resources)
  if run_point.__module__ != '__main__':
    # Shipped by value, as from a script: a worker need not import this file.
    ray.cloudpickle.register_pickle_by_value(sys.modules[run_point.__module__])
  task = ray.remote(run_point).options(
      num_cpus=engine.cpus, num_gpus=engine.gpus, resources=custom or None,
      max_retries=RETRIES, retry_exceptions=False)

  total, done, failed = len(points), 0, {}
  refs: dict[Any, Point] = {}
  earlier: list[Any] = []
  for stage in sorted({p.stage for p in points}):
    mine = []
    for p in points:
      if p.stage != stage:
        continue
      if is_done(p, sweep_dir):
        done += 1
        _say(f'skip {p.name} (done) [{done}/{total}]')
        continue
      argv = command(p._replace(config=os.path.abspath(p.config)), sweep_dir,
                     python=sys.executable)
      state = os.path.join(sweep_dir, p.name, 'sweep_point.json')
      if os.path.exists(state):  # An earlier sweep's record of this point.
        _write_json(state, {'name': p.name, 'state': 'queued'})
      ref = task.remote(argv, os.path.join(abs_dir, p.name), abs_dir, token,
                        cwd, env, *earlier)
      refs[ref] = p
      mine.append(ref)
      _say(f'run {p.name}: {p.recipe}')
    earlier += mine

  t0, finished = time.time(), 0
  try:
    while refs:
      ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
      for ref in ready:
        p = refs.pop(ref)
        try:
          result = ray.get(ref)
        except ray.exceptions.RayError as e:  # Retries used up, node lost.
          lines = str(e).strip().splitlines()
          result = {'ok': False, 'seconds': 0.0,
                    'error': f'{type(e).__name__}: '
                             + (lines[0] if lines else '')}
        finished += 1
        run_dir = os.path.join(sweep_dir, p.name)
        record = {'name': p.name, 'state': 'done' if result['ok'] else 'failed',
                  'wall_seconds': result['seconds'],
                  'host': result.get('host', ''),
                  'node': result.get('node', ''),
                  'resources': result.get('resources', {}),
                  'command': shlex.join(command(p, sweep_dir))}
        if result['ok']:
          done += 1
          _write_json(os.path.join(run_dir, 'sweep_point.json'), record)
          row = _result_row(p, sweep_dir)
          _say(f'done {p.name} in {result["seconds"]:.1f} s on '
               f'{result["host"]} (node {result["node"][:8]}): '
               f'{row["metric"]} {row["value"]} [{done}/{total}]')
        else:
          failed[p.name] = result['error']
          if os.path.isdir(run_dir):
            _write_json(os.path.join(run_dir, 'sweep_point.json'),
                        {**record, 'error': result['error']})
          _say(f'FAILED {p.name}: {result["error"]}'.rstrip())
      running = sum(_read_json(os.path.join(abs_dir, p.name,
                                            'sweep_point.json')
                               ).get('state') == 'running'
                    for p in refs.values())
      elapsed = time.time() - t0
      left = len(refs) - running
      eta = (elapsed / finished * len(refs)) if finished else float('nan')
      _progress.show(
          f'done {done} · running {running} · failed {len(failed)} · '
          f'left {left} of {total} · {_clock(elapsed)} elapsed · '
          f'~{_clock(eta)} left', (done, running, len(failed), left))
  except KeyboardInterrupt:
    # Only this sweep's tasks; their checkpoints stay, so a rerun resumes.
    for ref in refs:
      ray.cancel(ref, force=True)
    raise
  finally:
    _progress.clear()
  return failed


def _write_text(path: str, text: str) -> None:
  files.atomic_write(path, text)


def dry_run(points: Sequence[Point], sweep_dir: str,
            out: Any = None) -> int:
  """Prints the train.py command of every unfinished point, in stage order.

  Args:
    points: the grid.
    sweep_dir: the sweep's workdir.
    out: where the commands go (one per line; default stdout); stage notes
      go to stderr.

  Returns:
    The number of commands printed.
  """
  out = out or sys.stdout
  n = 0
  for stage in sorted({p.stage for p in points}):
    todo = [p for p in points if p.stage == stage and not is_done(p, sweep_dir)]
    if not todo:
      continue
    print(f'# stage {stage}: {len(todo)} runs; finish them before later '
          'stages', file=sys.stderr)
    for p in todo:
      print(shlex.join(command(p, sweep_dir)), file=out)
      n += 1
  return n


# ----------------------------------------------------------------------------
# The table


def _write_json(path: str, obj: dict) -> None:
  files.atomic_write(path, json.dumps(obj, indent=1, sort_keys=True) + '\n')


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def task_metric(results: dict) -> str:
  """The name of the task's test metric present in `results` ('' if none)."""
  for key in METRICS:
    if key in results:
      return key
  return ''


def _result_row(point: Point, sweep_dir: str) -> dict:
  run_dir = os.path.join(sweep_dir, point.name)
  results = _read_json(os.path.join(run_dir, 'results.json'))
  timing = _read_json(os.path.join(run_dir, 'sweep_point.json'))
  if results:
    status = 'done'
  elif os.path.isdir(os.path.join(run_dir, 'checkpoints')):
    status = 'partial'
  else:
    status = 'pending'
  metric = task_metric(results)
  row = {
      'name': point.name, 'group': point.group, 'method': point.method,
      'stage': point.stage, 'status': status, 'recipe': point.recipe,
      'overrides': ' '.join(
          f'{k}=' + _format_value(v).replace('{sweep_dir}', sweep_dir)
          for k, v in point.overrides.items()),
      'metric': metric, 'value': results.get(metric, ''),
      'wall_seconds': timing.get('wall_seconds', ''),
  }
  for key, value in results.items():
    if key in row or isinstance(value, (dict, list)):
      continue
    row[key] = '' if value is None else value
  return row


def collect(points: Sequence[Point], sweep_dir: str) -> list[dict]:
  """One row per point from its results.json (empty fields when unfinished)."""
  return [_result_row(p, sweep_dir) for p in points]


def write_csv(rows: Sequence[dict], path: str) -> None:
  """Writes `rows` with CSV_COLUMNS first, then every other key sorted."""
  extra = sorted({k for r in rows for k in r} - set(CSV_COLUMNS))
  columns = list(CSV_COLUMNS) + extra
  out = io.StringIO(newline='')
  writer = csv.DictWriter(out, fieldnames=columns, restval='')
  writer.writeheader()
  for r in rows:
    writer.writerow(r)
  files.atomic_write(path, out.getvalue())


def read_csv(path: str) -> list[dict]:
  """The rows of a sweep.csv, numbers converted back to int/float."""
  def convert(text: str) -> Any:
    for kind in (int, float):
      try:
        return kind(text)
      except ValueError:
        pass
    return text
  text_columns = ('name', 'group', 'method', 'status', 'recipe', 'overrides',
                  'metric', 'config')
  with open(path, newline='') as f:
    return [{k: v if k in text_columns else convert(v) for k, v in r.items()}
            for r in csv.DictReader(f)]


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and (
      math.isfinite(v))


def summarize(rows: Iterable[dict], keys: Sequence[str] = (
    'value', 'compressed_bytes', 'params_nonzero')) -> list[dict]:
  """Averages finished rows over each group (seeds).

  Args:
    rows: rows of sweep.csv (or `collect`).
    keys: numeric columns to average.

  Returns:
    One dict per group, in first-seen order: 'group', 'method', 'metric',
    'n' (finished runs), and for each key its 'mean' as `key` and sample
    standard deviation as `key + '_std'` (0 for a single run).
  """
  groups: dict[str, list[dict]] = {}
  for r in rows:
    if r.get('status') == 'done' and _is_number(r.get('value')):
      groups.setdefault(str(r['group']), []).append(r)
  out = []
  for group, members in groups.items():
    s = {'group': group, 'method': members[0]['method'],
         'metric': members[0]['metric'], 'n': len(members)}
    for key in keys:
      values = [float(m[key]) for m in members if _is_number(m.get(key))]
      if not values:
        continue
      mean = sum(values) / len(values)
      var = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)
             if len(values) > 1 else 0.0)
      s[key], s[key + '_std'] = mean, math.sqrt(var)
    out.append(s)
  return out


def pareto_front(sizes: Sequence[float], values: Sequence[float],
                 higher_is_better: bool = True) -> list[int]:
  """Indices of the points no other point beats on both size and metric.

  A point is dominated when another is no larger and no worse, and strictly
  better in one of the two.

  Args:
    sizes: compressed sizes (smaller is better).
    values: the metric.
    higher_is_better: the metric's direction (accuracy: True; RMSE: False).

  Returns:
    The indices of the front, sorted by size.
  """
  sign = 1.0 if higher_is_better else -1.0
  front = []
  for i, (si, vi) in enumerate(zip(sizes, values)):
    dominated = any(
        sj <= si and sign * vj >= sign * vi and (sj < si or sign * vj > sign * vi)
        for j, (sj, vj) in enumerate(zip(sizes, values)) if j != i)
    if not dominated:
      front.append(i)
  return sorted(front, key=lambda i: (sizes[i], -sign * values[i]))


# ----------------------------------------------------------------------------
# Plots

_MARKERS = 'osD^vP*X<>phdH'
# Distinct at a glance (tab10, then four that differ from all of them):
# tab20's light/dark pairs read as one method.
_COLORS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b',
           '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#000000', '#0b0080',
           '#6b8e00', '#ff00ff')


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_pareto(rows: Sequence[dict], path: str, title: str = '') -> None:
  """Draws the test metric against compressed size, one style per method.

  Points are group means over seeds (error bars: standard deviation); the
  Pareto front over all groups is a dashed line with ringed points.

  Args:
    rows: rows of one or more sweep.csv files.
    path: the PNG to write.
    title: the chart title.
  """
  plt = _pyplot()
  groups = [g for g in summarize(rows) if _is_number(g.get('compressed_bytes'))]
  metric = groups[0]['metric'] if groups else 'test_accuracy'
  label, scale, higher = METRICS.get(metric, (metric, 1.0, True))
  fig, ax = plt.subplots(figsize=(12, 6), dpi=120)
  methods = list(dict.fromkeys(g['method'] for g in groups))
  for i, method in enumerate(methods):
    mine = [g for g in groups if g['method'] == method]
    ax.errorbar([g['compressed_bytes'] / 1000 for g in mine],
                [g['value'] * scale for g in mine],
                yerr=[g.get('value_std', 0.0) * scale for g in mine],
                fmt=_MARKERS[i % len(_MARKERS)],
                color=_COLORS[i % len(_COLORS)],
                markersize=12 if _MARKERS[i % len(_MARKERS)] in '*P' else 9,
                markeredgecolor='white', markeredgewidth=0.6, capsize=2,
                elinewidth=0.8, ecolor=_COLORS[i % len(_COLORS)] + '66',
                linestyle='none', label=method, zorder=3)
  if groups:
    front = pareto_front([g['compressed_bytes'] for g in groups],
                         [g['value'] for g in groups], higher)
    xs = [groups[i]['compressed_bytes'] / 1000 for i in front]
    ys = [groups[i]['value'] * scale for i in front]
    ax.step(xs, ys, where='post', color='black', linestyle='--',
            linewidth=1.2, zorder=2, label='Pareto front')
    ax.scatter(xs, ys, s=220, facecolors='none', edgecolors='black',
               linewidths=1.2, zorder=4)
    # Name the front's points: they are the ones a reader looks up.
    for i, x, y in zip(front, xs, ys):
      ax.annotate(groups[i]['group'], (x, y), textcoords='offset points',
                  xytext=(6, -12), fontsize=7, color='black')
  ax.set_xscale('log')
  _plain_log_ticks(ax.xaxis)
  ax.set_xlabel('compressed size (KB = 1000 bytes, log scale)')
  ax.set_ylabel(label + (' (higher is better)' if higher else
                         ' (lower is better)'))
  ax.grid(True, which='both', alpha=0.3)
  ax.set_title((title or f'{label} against compressed size')
               + '\n(error bars: standard deviation over seeds)', fontsize=11)
  # Outside the axes, so it never hides a point.
  ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=9,
            borderaxespad=0.0)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def _plain_log_ticks(axis: Any) -> None:
  """Labels a log axis with plain numbers at 1, 2, 5 x 10^k."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
  axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:g}'))
  axis.set_minor_formatter(ticker.NullFormatter())


def _read_jsonl(path: str) -> list[dict]:
  rows = []
  try:
    with open(path) as f:
      for line in f:
        line = line.strip()
        if line:
          rows.append(json.loads(line))
  except (OSError, ValueError):
    pass
  return rows


def plot_curves(runs: Sequence[tuple[str, str]], path: str,
                title: str = '') -> None:
  """Draws training loss and the test metric against step for each run.

  Args:
    runs: (label, run directory holding metrics.jsonl) pairs.
    path: the PNG to write.
    title: the figure title.
  """
  plt = _pyplot()
  fig, (ax_loss, ax_test) = plt.subplots(1, 2, figsize=(14, 4.8), dpi=110)
  ylabel = 'test metric'
  for i, (label, run_dir) in enumerate(runs):
    rows = _read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
    train = [r for r in rows if r.get('split') == 'train' and 'loss' in r]
    test = [r for r in rows if r.get('split') == 'test']
    color = _COLORS[i % len(_COLORS)]
    if train:
      ax_loss.plot([r['step'] for r in train], [r['loss'] for r in train],
                   color=color, label=label)
    metric = task_metric({f'test_{k}': 0 for r in test for k in r})
    if test and metric:
      name, scale, _ = METRICS[metric]
      ylabel = name
      key = metric[len('test_'):]
      ax_test.plot([r['step'] for r in test], [r[key] * scale for r in test],
                   color=color, marker=_MARKERS[i % len(_MARKERS)],
                   label=label)
  ax_loss.set_yscale('log')
  _plain_log_ticks(ax_loss.yaxis)
  ax_loss.set_xlabel('training step')
  ax_loss.set_ylabel('training loss (log scale)')
  ax_test.set_xlabel('training step')
  ax_test.set_ylabel(ylabel)
  for ax in (ax_loss, ax_test):
    ax.grid(True, alpha=0.3)
  ax_test.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8,
                 borderaxespad=0.0)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def curve_runs(rows: Sequence[dict], sweep_dir: str) -> list[tuple[str, str]]:
  """One (label, run dir) per group: its first finished run (e.g. seed 0)."""
  seen, runs = set(), []
  for r in rows:
    if r.get('status') == 'done' and r['group'] not in seen:
      seen.add(r['group'])
      runs.append((str(r['group']), os.path.join(sweep_dir, str(r['name']))))
  return runs


# ----------------------------------------------------------------------------
# Command line


def sweep(config_spec: str, workdir: str, engine: Engine = Engine(),
          plots: bool = True) -> tuple[list[dict], dict[str, str]]:
  """Runs a grid to completion (resuming), then writes its csv and plots.

  Args:
    config_spec: the recipe and its sweep arg, 'configs/gru_prune.py:smoke'.
    workdir: the sweep's directory.
    engine: the Ray to run on (embedded by default) and each point's
      resources. A Ray session this process already has is used as it is.
    plots: also draw pareto.png and curves.png.

  Returns:
    (the csv rows, the failed points: name -> error).
  """
  points = load_points(config_spec)
  os.makedirs(workdir, exist_ok=True)  # A bad --workdir fails before Ray.
  with ray_session(engine):
    failed = run_points(points, workdir, engine)
  rows = collect(points, workdir)
  write_csv(rows, os.path.join(workdir, 'sweep.csv'))
  if plots and any(r['status'] == 'done' for r in rows):
    name = os.path.basename(config_spec.partition(':')[0])
    plot_pareto(rows, os.path.join(workdir, 'pareto.png'), f'sweep of {name}')
    plot_curves(curve_runs(rows, workdir), os.path.join(workdir, 'curves.png'),
                f'training curves, sweep of {name}')
  return rows, failed


def summary_table(rows: Sequence[dict], failed: dict[str, str]) -> str:
  """The end-of-sweep table: one line per point, then each failure's lines.

  Args:
    rows: `collect`'s rows.
    failed: name -> error, from `run_points`.

  Returns:
    The text, ending in a newline.
  """
  def cell(v: Any) -> str:
    if isinstance(v, float):
      return f'{v:.4g}' if abs(v) < 1e5 else f'{v:.0f}'
    return str(v)

  header = ('point', 'stage', 'status', 'metric', 'value', 'bytes', 'wall_s')
  table = [header] + [
      (r['name'], r['stage'], 'failed' if r['name'] in failed else r['status'],
       r['metric'] or '-', r['value'], r.get('compressed_bytes', ''),
       r['wall_seconds'] if r['wall_seconds'] == '' else
       f'{float(r["wall_seconds"]):.1f}')
      for r in rows]
  table = [[cell(c) for c in line] for line in table]
  widths = [max(len(line[k]) for line in table) for k in range(len(header))]
  text = '\n'.join('  '.join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                   for line in table) + '\n'
  for name, error in failed.items():
    text += f'\n{name} failed: {error.rstrip()}\n'
  return text


def _rows_of(sweep_dir: str) -> list[dict]:
  path = os.path.join(sweep_dir, 'sweep.csv')
  if not os.path.exists(path):
    raise SweepError(f'--plot_from: {sweep_dir} holds no sweep.csv')
  return read_csv(path)


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
  """The Ray engine's flags, shared by sweep.py and reproduce.py."""
  parser.add_argument('--ray_address', default='',
                      help="join a Ray cluster: 'auto' (this node's), "
                      "host:port (the head's GCS) or ray://host:port (Ray "
                      "Client); default: an embedded local Ray")
  parser.add_argument('--parallel', type=int, default=0,
                      help='embedded Ray only: points at once (default 0: '
                      'one per usable core)')
  parser.add_argument('--point_cpus', type=float, default=1.0,
                      help='CPUs each point reserves (default 1)')
  parser.add_argument('--point_gpus', type=float, default=0.0,
                      help='GPUs each point reserves (default 0)')
  parser.add_argument('--point_resources', default='', metavar='NAME=N,...',
                      help='custom Ray resources each point reserves, e.g. '
                      'TPU=4')


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status."""
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', help="recipe with a sweep(), e.g. "
                      "configs/gru_prune.py or configs/gru_prune.py:smoke")
  parser.add_argument('--workdir', help='sweep directory (default '
                      'runs/sweep_<recipe>)')
  add_engine_flags(parser)
  parser.add_argument('--dry_run', action='store_true',
                      help='print the commands of unfinished points only')
  parser.add_argument('--plot_from', nargs='+', metavar='DIR',
                      help='draw one Pareto chart from these sweep dirs')
  parser.add_argument('--out', default='pareto.png',
                      help='PNG for --plot_from (default pareto.png)')
  args = parser.parse_args(argv)
  try:
    if args.plot_from:
      rows = [r for d in args.plot_from for r in _rows_of(d)]
      plot_pareto(rows, args.out, 'all methods')
      print(f'wrote {args.out}')
      return 0
    if not args.config:
      raise SweepError('--config: required (or --plot_from DIR...)')
    name = os.path.splitext(os.path.basename(args.config.partition(':')[0]))[0]
    workdir = args.workdir or os.path.join('runs', f'sweep_{name}')
    if args.dry_run:
      dry_run(load_points(args.config), workdir)
      return 0
    for flag, value in (('--point_cpus', args.point_cpus),
                        ('--point_gpus', args.point_gpus)):
      if not value >= 0:
        raise SweepError(f'{flag}: {value} must be >= 0')
    engine = Engine(address=args.ray_address, parallel=args.parallel,
                    cpus=args.point_cpus, gpus=args.point_gpus,
                    resources=parse_resources(args.point_resources))
    rows, failed = sweep(args.config, workdir, engine)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(summary_table(rows, failed), end='')
  done = sum(r['status'] == 'done' for r in rows)
  print(f'{done}/{len(rows)} points done; wrote {workdir}/sweep.csv'
        + (f'; failed: {", ".join(failed)}' if failed else ''))
  return 1 if failed else 0


if __name__ == '__main__':
  import cli  # pylint: disable=g-import-not-at-top
  sys.exit(cli.run_cli(main))  # A workdir OSError is one line, exit 2.
