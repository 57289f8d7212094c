"""Tests of sweep.py (grids, dry run, resuming, csv, plots) and reproduce.py.

One test runs a real three-point `:smoke` grid of configs/gru_prune.py as
subprocesses, deletes one point's results.json and reruns: only that point
runs again, and it resumes from its checkpoint.
"""

import csv
import os
import textwrap

import pytest

import reproduce
import sweep
import train

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
PRUNE = os.path.join(ROOT, 'configs', 'gru_prune.py')


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


def test_sweep_runs_resumes_and_writes_csv(tmp_path, capsys):
  work = str(tmp_path / 'grid')
  args = [f'--config={PRUNE}:smoke', f'--workdir={work}', '--parallel=2']
  assert sweep.main(args) == 0
  out = capsys.readouterr().out
  assert out.count(' run ') == 3
  with open(os.path.join(work, 'sweep.csv'), newline='') as f:
    reader = csv.DictReader(f)
    rows = list(reader)
  assert reader.fieldnames[:len(sweep.CSV_COLUMNS)] == list(sweep.CSV_COLUMNS)
  assert [r['name'] for r in rows] == ['baseline_s0', 'prune0.5_s0',
                                       'prune0.9_s0']
  for r in rows:
    assert r['status'] == 'done' and r['metric'] == 'test_accuracy'
    assert 0.0 <= float(r['value']) <= 1.0
    assert int(r['compressed_bytes']) > 0 and float(r['wall_seconds']) > 0
  assert rows[2]['overrides'] == f'seed=0 init_from={work}/baseline_s0'
  assert float(rows[2]['prune_sparsity']) == pytest.approx(0.9)
  for png in ('pareto.png', 'curves.png'):
    assert os.path.getsize(os.path.join(work, png)) > 1000

  # Interrupt one point: its results.json is gone, its checkpoint stays.
  results = {n: os.path.join(work, n, 'results.json')
             for n in ('baseline_s0', 'prune0.5_s0', 'prune0.9_s0')}
  before = {n: os.stat(p).st_mtime_ns for n, p in results.items()}
  os.remove(results['prune0.5_s0'])
  assert sweep.main(args) == 0
  out = capsys.readouterr().out
  assert ' run prune0.5_s0' in out and out.count(' run ') == 1
  assert ' skip baseline_s0 (done)' in out and ' skip prune0.9_s0 (done)' in out
  for n in ('baseline_s0', 'prune0.9_s0'):
    assert os.stat(results[n]).st_mtime_ns == before[n]
  rerun = sweep.read_csv(os.path.join(work, 'sweep.csv'))[1]
  assert rerun['name'] == 'prune0.5_s0' and rerun['status'] == 'done'
  assert rerun['resumed_from_step'] == 4  # From its checkpoint, not step 0.


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
  assert names == {'run_info', 'zhu_gupta', 'deep_compression', 'kmeans',
                   'hinton', 'prabhavalkar', 'wen_iss', 'quant_bits', 'lm_bits'}


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
