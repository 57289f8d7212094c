"""Tests of sweep.py (grids, dry run, Ray runs, resuming, csv, plots) and
reproduce.py.

The module starts one embedded Ray (a module-scoped fixture) and runs the
real three-point `:smoke` grid of configs/gru_prune.py on it once; one test
then deletes a point's results.json and reruns: only that point runs again,
and it resumes from its checkpoint. Another runs the same grid as a user
types it, kills the Ray worker of the running baseline point once it has a
checkpoint, and checks that Ray's retry resumes it and that every point ends
with the results of the undisturbed run. A two-node Ray cluster test
(`ray start` head + worker) lives in tests/test_ray_cluster.py.
"""

import contextlib
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import reproduce
import sweep
import train

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
PRUNE = os.path.join(ROOT, 'configs', 'gru_prune.py')
NAMES = ['baseline_s0', 'prune0.5_s0', 'prune0.9_s0']
# Columns that depend on timing, the machine's load or a resumption.
TIMING = {'train_seconds', 'wall_seconds', 'steps_per_second',
          'compile_seconds', 'resumed_from_step'}


@pytest.fixture(scope='module')
def ray_local():
  """One embedded Ray for the module's in-process sweeps."""
  with sweep.ray_session(sweep.Engine()):
    yield


@pytest.fixture(scope='module')
def smoke_sweep(ray_local, tmp_path_factory):
  """The smoke grid run once: (workdir, stdout, exit status, csv rows)."""
  del ray_local
  work = str(tmp_path_factory.mktemp('sweep') / 'grid')
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    status = sweep.main([f'--config={PRUNE}:smoke', f'--workdir={work}'])
  return work, out.getvalue(), status, sweep.read_csv(
      os.path.join(work, 'sweep.csv'))


def test_smoke_grid_points():
  points = sweep.load_points(PRUNE + ':smoke')
  assert [p.name for p in points] == ['baseline_s0', 'prune0.5_s0',
                                      'prune0.9_s0']
  assert [p.stage for p in points] == [0, 1, 1]
  assert points[0].recipe == 'gru_baseline.py:smoke'
  assert points[2].recipe == 'gru_prune.py:sparsity=0.9,smoke'
  assert points[2].overrides == {'seed': 0,
                                 'init_from': '{sweep_dir}/baseline_s0'}
  assert points[1].group == 'prune0.5'


def test_every_recipe_sweep_is_valid():
  for name in ('gru_prune', 'gru_qat', 'gru_ptq', 'gru_svd', 'gru_kd',
               'gru_kmeans', 'gru_structured', 'deep_compression'):
    path = os.path.join(ROOT, 'configs', f'{name}.py')
    full, smoke = sweep.load_points(path), sweep.load_points(path + ':smoke')
    assert len(smoke) < len(full)
    names = {p.name for p in full}
    for p in full + smoke:  # The recipe accepts the arg and every override.
      config = train.load_recipe(p.recipe, 'sweep')
      for key in p.overrides:
        node = config
        for part in key.split('.'):
          assert part in node, (name, p.name, key)
          node = node[part]
    for p in full:  # Every shared run a point starts from is in the grid,
      for key in ('init_from', 'teacher.workdir'):  # in an earlier stage.
        if key in p.overrides:
          source = p.overrides[key].replace('{sweep_dir}/', '')
          assert source in names, (name, p.name, source)
          assert next(q for q in full if q.name == source).stage < p.stage


def test_dry_run_prints_one_command_per_unfinished_point(tmp_path, capsys):
  work = str(tmp_path / 'grid')
  assert sweep.main([f'--config={PRUNE}:smoke', f'--workdir={work}',
                     '--dry_run']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 3
  for line, name in zip(lines, ('baseline_s0', 'prune0.5_s0', 'prune0.9_s0')):
    assert line.startswith('python train.py --config=')
    assert f'--workdir={work}/{name}' in line
  assert f'--config.init_from={work}/baseline_s0' in lines[2]
  assert 'gru_prune.py:sparsity=0.9,smoke' in lines[2]
  # A finished point is not printed again.
  os.makedirs(os.path.join(work, 'baseline_s0'))
  open(os.path.join(work, 'baseline_s0', 'results.json'), 'w').write('{}')
  sweep.main([f'--config={PRUNE}:smoke', f'--workdir={work}', '--dry_run'])
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 2
  assert not any(f'--workdir={work}/baseline_s0' in line for line in lines)


def test_sweep_runs_resumes_and_writes_csv(smoke_sweep, capsys):
  work, out, status, _ = smoke_sweep
  assert status == 0
  assert out.count(' run ') == 3
  # The live progress line and the summary table.
  assert 'done 3 · running 0 · failed 0 · left 0 of 3' in out
  table = out[out.index('point  '):].splitlines()
  assert table[0].split() == ['point', 'stage', 'status', 'metric', 'value',
                              'bytes', 'wall_s']
  assert [line.split()[:3] for line in table[1:4]] == [
      [n, str(s), 'done'] for n, s in zip(NAMES, (0, 1, 1))]
  with open(os.path.join(work, 'sweep.csv'), newline='') as f:
    reader = csv.DictReader(f)
    rows = list(reader)
  assert reader.fieldnames[:len(sweep.CSV_COLUMNS)] == list(sweep.CSV_COLUMNS)
  assert [r['name'] for r in rows] == NAMES
  for r in rows:
    assert r['status'] == 'done' and r['metric'] == 'test_accuracy'
    assert 0.0 <= float(r['value']) <= 1.0
    assert int(r['compressed_bytes']) > 0 and float(r['wall_seconds']) > 0
  assert rows[2]['overrides'] == f'seed=0 init_from={work}/baseline_s0'
  assert float(rows[2]['prune_sparsity']) == pytest.approx(0.9)
  for png in ('pareto.png', 'curves.png'):
    assert os.path.getsize(os.path.join(work, png)) > 1000

  # Interrupt one point: its results.json is gone, its checkpoint stays.
  results = {n: os.path.join(work, n, 'results.json') for n in NAMES}
  before = {n: os.stat(p).st_mtime_ns for n, p in results.items()}
  os.remove(results['prune0.5_s0'])
  assert sweep.main([f'--config={PRUNE}:smoke', f'--workdir={work}']) == 0
  out = capsys.readouterr().out
  assert ' run prune0.5_s0' in out and out.count(' run ') == 1
  assert ' skip baseline_s0 (done)' in out and ' skip prune0.9_s0 (done)' in out
  for n in ('baseline_s0', 'prune0.9_s0'):
    assert os.stat(results[n]).st_mtime_ns == before[n]
  rerun = sweep.read_csv(os.path.join(work, 'sweep.csv'))[1]
  assert rerun['name'] == 'prune0.5_s0' and rerun['status'] == 'done'
  assert rerun['resumed_from_step'] == 4  # From its checkpoint, not step 0.


def _same_results(rows, reference, work, ref_work):
  """Every non-timing column equal, paths of the two workdirs aside."""
  assert [r['name'] for r in rows] == [r['name'] for r in reference]
  for r, ref in zip(rows, reference):
    assert set(r) == set(ref)
    for key in set(r) - TIMING:
      assert str(r[key]).replace(work, 'W') == str(ref[key]).replace(
          ref_work, 'W'), (r['name'], key)


def _alive(pid: int) -> bool:
  """Whether a process runs (a zombie waiting to be reaped does not)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rpartition(')')[2].split()[0] != 'Z'
  except OSError:
    return False


def test_killed_worker_is_retried_and_resumes(smoke_sweep, tmp_path):
  ref_work, _, _, reference = smoke_sweep
  work = str(tmp_path / 'grid')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.Popen(
      [sys.executable, 'sweep.py', '--config=configs/gru_prune.py:smoke',
       f'--workdir={work}'], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  point = os.path.join(work, 'baseline_s0')
  killed = None
  deadline = time.time() + 240
  while killed is None and time.time() < deadline and proc.poll() is None:
    state = sweep._read_json(os.path.join(point, 'sweep_point.json'))  # pylint: disable=protected-access
    steps = [n for n in os.listdir(os.path.join(point, 'checkpoints'))
             if n.isdigit()] if os.path.isdir(
                 os.path.join(point, 'checkpoints')) else []
    if steps and state.get('state') == 'running' and 'train_pid' in state:
      os.kill(state['pid'], signal.SIGKILL)  # The Ray worker of the point.
      killed = state
      # Its train.py dies with it at once (no orphan racing the retry).
      until = time.time() + 1.0
      while _alive(state['train_pid']) and time.time() < until:
        time.sleep(0.01)
      orphan = _alive(state['train_pid'])
    time.sleep(0.02)
  out = proc.communicate(timeout=300)[0]
  assert killed is not None, out
  assert proc.returncode == 0, out
  assert not orphan
  with open(os.path.join(point, 'train.log')) as f:
    starts = [line for line in f if line.startswith('# ')]
  assert len(starts) == 2 and f'pid {killed["pid"]})' in starts[0]
  assert f'pid {killed["pid"]})' not in starts[1]
  rows = sweep.read_csv(os.path.join(work, 'sweep.csv'))
  assert rows[0]['resumed_from_step'] > 0  # From its checkpoint.
  _same_results(rows, reference, work, ref_work)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _sweep_cli(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, 'sweep.py', '--config=configs/gru_prune.py:smoke',
       *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_bad_ray_address_is_one_line(tmp_path):
  port = _free_port()  # Nothing listens there.
  cases = {
      f'--ray_address=127.0.0.1:{port}':
          f'error: --ray_address: nothing answers at 127.0.0.1:{port}',
      f'--ray_address=ray://127.0.0.1:{port}':
          f'error: --ray_address: nothing answers at 127.0.0.1:{port}',
      '--ray_address=headnode': "error: --ray_address: 'headnode'; valid: "
                                'auto, host:port',
  }
  for flag, message in cases.items():
    run = _sweep_cli(f'--workdir={tmp_path / "w"}', flag)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), run.stderr
  assert not os.path.exists(tmp_path / 'w' / 'baseline_s0')


def test_bad_engine_flags_are_one_line(ray_local, tmp_path, capsys):
  del ray_local
  work = str(tmp_path / 'w')
  cases = {
      '--point_gpus=1': '--point_gpus: a point asks for GPU 1',
      '--point_resources=TPU=4': '--point_resources: a point asks for TPU 4',
      '--point_cpus=64': '--point_cpus: a point asks for CPU 64',
      '--point_resources=TPU': "--point_resources: 'TPU' must be name=amount",
      '--point_cpus=-1': '--point_cpus: -1.0 must be >= 0',
  }
  for flag, message in cases.items():
    assert sweep.main([f'--config={PRUNE}:smoke', f'--workdir={work}',
                       flag]) == 2, flag
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ' + message), err
  assert sweep.main([f'--config={PRUNE}:smoke', f'--workdir={work}',
                     '--ray_address=auto', '--parallel=2']) == 2
  assert capsys.readouterr().err.startswith(
      'error: --parallel: only for the embedded Ray')
  assert not os.path.exists(os.path.join(work, 'baseline_s0'))


def test_point_that_cannot_see_the_sweep_dir_fails_in_one_line(
    ray_local, tmp_path):
  """Run on a Ray worker, as on a node whose filesystem is another."""
  del ray_local
  import ray  # pylint: disable=g-import-not-at-top
  seen = tmp_path / 'seen'
  seen.mkdir()
  (seen / sweep.TOKEN_FILE).write_text('abc\n')
  task = ray.remote(sweep.run_point)
  argv = [sys.executable, 'train.py', '--config=configs/gru_baseline.py:smoke']
  for sweep_dir, token in ((str(tmp_path / 'elsewhere'), 'abc'),
                           (str(seen), 'another sweep')):
    result = ray.get(task.remote(argv, os.path.join(sweep_dir, 'p'),
                                 sweep_dir, token, ROOT, {}))
    assert not result['ok'] and result['returncode'] is None
    assert result['error'] == (
        f'node {socket.gethostname()} cannot see {sweep_dir} (every node must '
        'see the sweep directory and the directory sweep.py runs in at the '
        'same paths: put them on a shared filesystem)')
    assert not os.path.exists(os.path.join(sweep_dir, 'p'))
  # A point after a failed one does not run.
  result = ray.get(task.remote(argv, str(seen / 'q'), str(seen), 'abc', ROOT,
                               {}, {'name': 'base', 'ok': False}))
  assert result['error'] == 'not run: it starts from base, which failed'


def test_failed_point_shows_its_error_and_stops_its_dependents(
    ray_local, tmp_path, capsys):
  del ray_local
  baseline = os.path.join(ROOT, 'configs', 'gru_baseline.py')
  recipe = tmp_path / 'grid.py'
  recipe.write_text(textwrap.dedent(f"""
      def sweep(arg=None):
        return [dict(name='bad', config={baseline!r}, arg='smoke', stage=0,
                     overrides={{'compression.methods': 'nosuch'}}),
                dict(name='after', config={baseline!r}, arg='smoke')]
      """))
  work = str(tmp_path / 'w')
  assert sweep.main([f'--config={recipe}', f'--workdir={work}']) == 1
  out = capsys.readouterr().out
  import compression  # pylint: disable=g-import-not-at-top
  error = ("error: compression.methods: unknown method 'nosuch'; valid: "
           + ', '.join(sorted(compression.METHODS)))
  assert f'FAILED bad: train.py exit 2; last lines of {work}/bad/train.log' in (
      out.replace(os.path.abspath(work), work))
  assert out.count(error) == 2  # As it fails, and under the table.
  assert 'FAILED after: not run: it starts from bad, which failed' in out
  table = out[out.index('point  '):].splitlines()
  assert [line.split()[:3] for line in table[1:3]] == [
      ['bad', '0', 'failed'], ['after', '1', 'failed']]
  assert 'done 0 · running 0 · failed 2 · left 0 of 2' in out
  assert out.rstrip().endswith('0/2 points done; wrote '
                               f'{work}/sweep.csv; failed: bad, after')
  assert not os.path.exists(os.path.join(work, 'after', 'train.log'))


def test_summary_table_shows_failures():
  rows = [{'name': 'a', 'stage': 0, 'status': 'done', 'metric':
           'test_accuracy', 'value': 0.91234, 'compressed_bytes': 2832,
           'wall_seconds': 4.93},
          {'name': 'b', 'stage': 1, 'status': 'partial', 'metric': '',
           'value': '', 'compressed_bytes': '', 'wall_seconds': ''}]
  text = sweep.summary_table(rows, {'b': 'train.py exit 1; last lines of '
                                         'b/train.log:\nValueError: x\n'})
  assert text.splitlines() == [
      'point  stage  status  metric         value   bytes  wall_s',
      'a      0      done    test_accuracy  0.9123  2832   4.9',
      'b      1      failed  -',
      '',
      'b failed: train.py exit 1; last lines of b/train.log:',
      'ValueError: x']


def test_parse_resources():
  assert sweep.parse_resources('TPU=4, accelerator_type:TPU-V4=0.001') == (
      ('TPU', 4.0), ('accelerator_type:TPU-V4', 0.001))
  assert sweep.parse_resources('') == ()
  for bad in ('TPU', '=1', 'TPU=0', 'TPU=x'):
    with pytest.raises(sweep.SweepError, match='--point_resources'):
      sweep.parse_resources(bad)


def test_pareto_front_hand_computed():
  sizes, acc = [1, 2, 3, 4, 4], [0.5, 0.9, 0.8, 0.95, 0.9]
  assert sweep.pareto_front(sizes, acc) == [0, 1, 3]
  rmse = [5.0, 3.0, 3.0, 1.0]
  assert sweep.pareto_front([1, 2, 3, 4], rmse, higher_is_better=False) == [
      0, 1, 3]


def test_summarize_averages_seeds():
  rows = [
      {'group': 'a', 'method': 'm', 'metric': 'test_accuracy',
       'status': 'done', 'value': 0.9, 'compressed_bytes': 100},
      {'group': 'a', 'method': 'm', 'metric': 'test_accuracy',
       'status': 'done', 'value': 0.8, 'compressed_bytes': 300},
      {'group': 'b', 'method': 'm', 'metric': 'test_accuracy',
       'status': 'pending', 'value': ''},
  ]
  (a,) = sweep.summarize(rows)
  assert a['n'] == 2 and a['value'] == pytest.approx(0.85)
  assert a['value_std'] == pytest.approx(0.0707107, rel=1e-5)
  assert a['compressed_bytes'] == 200


def test_plots_write_pngs(tmp_path):
  rows = [{'group': f'g{i}', 'method': m, 'metric': 'test_accuracy',
           'status': 'done', 'value': v, 'compressed_bytes': b}
          for i, (m, v, b) in enumerate([('prune', 0.9, 2000),
                                         ('prune', 0.95, 8000),
                                         ('qat', 0.97, 16000)])]
  path = str(tmp_path / 'p.png')
  sweep.plot_pareto(rows, path)
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'metrics.jsonl').write_text(
      '{"step": 1, "split": "train", "loss": 2.0}\n'
      '{"step": 2, "split": "train", "loss": 1.0}\n'
      '{"step": 2, "split": "test", "loss": 1.1, "accuracy": 0.5}\n')
  sweep.plot_curves([('run', str(run))], str(tmp_path / 'c.png'))
  assert os.path.getsize(tmp_path / 'c.png') > 1000


def test_bad_grids_are_one_line_errors(tmp_path):
  def recipe(body):
    path = tmp_path / 'r.py'
    path.write_text(textwrap.dedent(body))
    return str(path)
  with pytest.raises(sweep.SweepError, match='defines no sweep'):
    sweep.load_points(recipe('X = 1\n'))
  with pytest.raises(sweep.SweepError, match="'a' is repeated"):
    sweep.load_points(recipe(
        'def sweep(arg=None):\n  return [{"name": "a"}, {"name": "a"}]\n'))
  with pytest.raises(sweep.SweepError, match=r"unknown keys \['seeds'\]"):
    sweep.load_points(recipe(
        'def sweep(arg=None):\n  return [{"name": "a", "seeds": 3}]\n'))
  with pytest.raises(sweep.SweepError, match='must match'):
    sweep.load_points(recipe(
        'def sweep(arg=None):\n  return [{"name": "a/b"}]\n'))
  assert sweep.main(['--config=' + recipe('X = 1\n'), '--dry_run']) == 2


def test_fill_markers_replaces_only_the_marked_blocks():
  text = ('intro\n<!-- table:a -->\nold a\n<!-- /table -->\nmiddle\n'
          '<!-- table:b -->\n<!-- /table -->\nend\n')
  out = reproduce.fill_markers(text, {'a': '| x |\n', 'b': 'B'})
  assert out == ('intro\n<!-- table:a -->\n| x |\n<!-- /table -->\nmiddle\n'
                 '<!-- table:b -->\nB\n<!-- /table -->\nend\n')
  with pytest.raises(KeyError):
    reproduce.fill_markers(text, {'a': ''})
  with pytest.raises(KeyError):
    reproduce.fill_markers(text, {'a': '', 'b': '', 'c': ''})


def test_reproduction_md_has_a_marker_for_every_table():
  with open(os.path.join(ROOT, 'REPRODUCTION.md')) as f:
    text = f.read()
  names = {m[1] for m in reproduce._MARKER_RE.findall(text)}
  assert names == set(reproduce.TABLE_ITEMS)
  assert {'run_info', 'zhu_gupta', 'deep_compression', 'kmeans', 'hinton',
          'prabhavalkar', 'wen_iss', 'quant_bits', 'budget', 'lm_models',
          'lm_zhu_gupta', 'lm_deep_compression', 'lm_hinton', 'lm_kd_search',
          'lm_prabhavalkar', 'lm_wen_iss', 'lm_quant_bits',
          'lm_directions'} == names


def test_budget_table_compares_with_the_best_file_that_fits():
  def s(value, nbytes):
    return {'n': 3, 'value': value, 'value_std': 0.0,
            'compressed_bytes': nbytes}
  g = {'baseline': {**s(0.98, 62000.0), 'dense_bytes': 61732.0},
       'auto2000': s(0.975, 1990.0), 'auto800': s(0.96, 790.0),
       'dc0.95_16': s(0.97, 1500.0), 'kd16_4': s(0.978, 1900.0),
       'qat2': s(0.98, 4100.0), 'kd8_2': s(0.97, 700.0)}
  table = reproduce.table_budget({'budget': g})
  # 2,000: the GRU-16 student (1,900 B) beats Deep Compression and is
  # better than auto; QAT's 4,100 B does not fit. 800: the GRU-8 student.
  assert ('| 2,000 | 1,990 | 97.50 ± 0.00 | distilled GRU-16, 4-bit | 1,900 '
          '| 97.80 ± 0.00 | 3 |') in table
  assert '| 800 | 790 | 96.00 ± 0.00 | distilled GRU-8, 2-bit | 700 |' in table
  assert 'at least as accurate (mean of seeds) at 0 of 2 budgets' in table


def test_tables_from_summaries():
  base = {'group': 'baseline', 'n': 3, 'value': 0.98, 'value_std': 0.01,
          'compressed_bytes': 62000.0, 'dense_bytes': 61732.0}
  rank8 = {'group': 'rank8', 'n': 3, 'value': 0.977, 'value_std': 0.0,
           'compressed_bytes': 20000.0, 'params_total': 5000.0}
  rank1 = {'group': 'rank1', 'n': 3, 'value': 0.90, 'value_std': 0.0,
           'compressed_bytes': 9000.0, 'params_total': 3000.0}
  table = reproduce.table_prabhavalkar(
      {'svd': {'baseline': base, 'rank8': rank8, 'rank1': rank1}})
  assert '| 8 | 5,000 | 20,000 | 3.1x | 97.70 ± 0.00 | 3 |' in table
  assert '| 16 | n/a |' in table
  assert 'rank 8, 20,000 bytes (3.1x smaller' in table
  assert 'rank 1,' not in table


def test_reproduce_bad_engine_flags_are_one_line(tmp_path, capsys):
  for flag, message in (('--ray_address=headnode', '--ray_address:'),
                        ('--point_resources=TPU', '--point_resources:'),
                        ('--parallel=-1', '--parallel:')):
    assert reproduce.main(['--smoke', f'--root={tmp_path}', '--only=prune',
                           flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ' + message), err
  assert not os.path.exists(tmp_path / 'prune')


def test_parallel_sizes_the_embedded_ray():
  """--parallel=N: the embedded node offers N points' CPUs (a fresh process,
  since this module's Ray is already up)."""
  code = ('import ray, sweep\n'
          'with sweep.ray_session(sweep.Engine(parallel=3, cpus=2)):\n'
          '  print(ray.cluster_resources()["CPU"])\n'
          'print(ray.is_initialized())\n')
  run = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr
  assert run.stdout.split() == ['6.0', 'False']  # And it is shut down after.


def test_only_rewrites_the_tables_of_its_items(tmp_path):
  md = tmp_path / 'R.md'
  md.write_text(''.join(f'<!-- table:{k} -->\nkept {k}\n<!-- /table -->\n'
                        for k in reproduce.TABLE_ITEMS))
  rows = [{'name': 'auto1200_s0', 'group': 'auto1200', 'status': 'done',
           'value': 0.98, 'compressed_bytes': 1150}]
  os.makedirs(tmp_path / 'runs' / 'budget')
  sweep.write_csv(rows, str(tmp_path / 'runs' / 'budget' / 'sweep.csv'))
  reproduce.write_outputs(str(tmp_path / 'runs'), list(reproduce.SWEEPS),
                          str(md), str(tmp_path / 'docs'), only=['budget'])
  text = md.read_text()
  assert '| 1,200 | 1,150 | 98.00 | none fits |' in text
  for k in reproduce.TABLE_ITEMS:
    assert (f'kept {k}' in text) == (k != 'budget'), k
  assert (tmp_path / 'docs' / 'budget.png').exists()
