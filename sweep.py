r"""Runs the grid of a recipe's `sweep()`, tabulates it and plots it.

Usage:
  python sweep.py --config=configs/gru_prune.py --workdir=runs/sweep_prune
  python sweep.py --config=configs/gru_prune.py:smoke --workdir=/tmp/s --parallel=2
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
--workdir=<workdir>/<name> --config.<key>=<value>...`, at most `--parallel`
at a time, its output in `<workdir>/<name>/train.log`. Rerunning the same
command resumes: points with a results.json are skipped, and an interrupted
point continues from its checkpoint (train.py resumes). `--dry_run` prints the
commands of the unfinished points instead, one per line in stage order (stage
boundaries go to stderr), for a cluster scheduler.

Outputs in the workdir: `sweep.csv` (one row per point: overrides, status,
the test metric, compressed size, ratio, times, and every other scalar of the
point's results.json), `pareto.png` (test metric against compressed size,
one marker and colour per method, the Pareto front marked) and `curves.png`
(training loss and test metric against step, from each point's
metrics.jsonl).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Iterable, NamedTuple, Sequence

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


class SweepError(ValueError):
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
# Running


def _say(text: str) -> None:
  print(time.strftime('%H:%M:%S ') + text, flush=True)


def _tail(path: str, lines: int = 8) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def _start(point: Point, sweep_dir: str) -> tuple[subprocess.Popen, Any]:
  run_dir = os.path.join(sweep_dir, point.name)
  os.makedirs(run_dir, exist_ok=True)
  log = open(os.path.join(run_dir, 'train.log'), 'a')
  argv = command(point, sweep_dir, python=sys.executable)
  log.write(f'# {time.strftime("%Y-%m-%d %H:%M:%S")} {shlex.join(argv)}\n')
  log.flush()
  proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL)
  return proc, log


def run_points(points: Sequence[Point], sweep_dir: str, parallel: int = 1
               ) -> list[str]:
  """Runs the unfinished points, stage by stage, `parallel` at a time.

  Args:
    points: the grid.
    sweep_dir: the sweep's workdir.
    parallel: the most train.py processes at once.

  Returns:
    The names of the points that failed (empty when all finished). A failed
    stage stops the sweep before the next stage, whose points depend on it.
  """
  if parallel < 1:
    raise SweepError(f'--parallel: {parallel} must be >= 1')
  os.makedirs(sweep_dir, exist_ok=True)
  total = len(points)
  failed: list[str] = []
  running: dict[str, tuple[Point, subprocess.Popen, Any, float]] = {}
  count = 0
  try:
    for stage in sorted({p.stage for p in points}):
      queue = []
      for p in points:
        if p.stage != stage:
          continue
        if is_done(p, sweep_dir):
          count += 1
          _say(f'skip {p.name} (done) [{count}/{total}]')
        else:
          queue.append(p)
      while queue or running:
        while queue and len(running) < parallel:
          p = queue.pop(0)
          proc, log = _start(p, sweep_dir)
          running[p.name] = (p, proc, log, time.perf_counter())
          _say(f'run {p.name}: {p.recipe}')
        time.sleep(0.2)
        for name in list(running):
          p, proc, log, t0 = running[name]
          if proc.poll() is None:
            continue
          del running[name]
          log.close()
          seconds = time.perf_counter() - t0
          count += 1
          run_dir = os.path.join(sweep_dir, name)
          if proc.returncode == 0 and is_done(p, sweep_dir):
            _write_json(os.path.join(run_dir, 'sweep_point.json'), {
                'name': name, 'wall_seconds': seconds,
                'command': shlex.join(command(p, sweep_dir))})
            row = _result_row(p, sweep_dir)
            _say(f'done {name} in {seconds:.1f} s: {row["metric"]} '
                 f'{row["value"]} [{count}/{total}]')
          else:
            failed.append(name)
            _say(f'FAILED {name} (exit {proc.returncode}) [{count}/{total}]; '
                 f'last lines of {run_dir}/train.log:\n'
                 + _tail(os.path.join(run_dir, 'train.log')))
      if failed:
        _say(f'stage {stage} had failures; later stages not started')
        break
  except KeyboardInterrupt:
    # Only the processes this sweep started; their checkpoints stay, so a
    # rerun resumes them.
    for _, proc, log, _ in running.values():
      proc.terminate()
    for _, proc, log, _ in running.values():
      proc.wait()
      log.close()
    raise
  return failed


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
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


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
  tmp = path + '.tmp'
  with open(tmp, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns, restval='')
    writer.writeheader()
    for r in rows:
      writer.writerow(r)
  os.replace(tmp, path)


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


def sweep(config_spec: str, workdir: str, parallel: int = 1,
          plots: bool = True) -> tuple[list[dict], list[str]]:
  """Runs a grid to completion (resuming), then writes its csv and plots.

  Args:
    config_spec: the recipe and its sweep arg, 'configs/gru_prune.py:smoke'.
    workdir: the sweep's directory.
    parallel: train.py processes at once.
    plots: also draw pareto.png and curves.png.

  Returns:
    (the csv rows, the names of failed points).
  """
  points = load_points(config_spec)
  failed = run_points(points, workdir, parallel)
  rows = collect(points, workdir)
  write_csv(rows, os.path.join(workdir, 'sweep.csv'))
  if plots and any(r['status'] == 'done' for r in rows):
    name = os.path.basename(config_spec.partition(':')[0])
    plot_pareto(rows, os.path.join(workdir, 'pareto.png'), f'sweep of {name}')
    plot_curves(curve_runs(rows, workdir), os.path.join(workdir, 'curves.png'),
                f'training curves, sweep of {name}')
  return rows, failed


def _rows_of(sweep_dir: str) -> list[dict]:
  path = os.path.join(sweep_dir, 'sweep.csv')
  if not os.path.exists(path):
    raise SweepError(f'--plot_from: {sweep_dir} holds no sweep.csv')
  return read_csv(path)


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status."""
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', help="recipe with a sweep(), e.g. "
                      "configs/gru_prune.py or configs/gru_prune.py:smoke")
  parser.add_argument('--workdir', help='sweep directory (default '
                      'runs/sweep_<recipe>)')
  parser.add_argument('--parallel', type=int, default=1,
                      help='train.py processes at once (default 1)')
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
    rows, failed = sweep(args.config, workdir, args.parallel)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  done = sum(r['status'] == 'done' for r in rows)
  print(f'{done}/{len(rows)} points done; wrote {workdir}/sweep.csv'
        + (f'; failed: {", ".join(failed)}' if failed else ''))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
