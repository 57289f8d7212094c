"""A user's own data through every recipe, as commands typed in a shell.

Each test runs train.py / eval.py as a subprocess with the README's flags on
a UEA `.ts` pair the project never saw (written by `tests/userdata.py`), and
checks that the run trained on that file, that its compression happened, and
that `eval.py --artifact` gives the metric results.json holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from compression import export as export_lib
from tests import userdata
from tests.test_train import check_run

ROOT = os.path.join(os.path.dirname(__file__), '..')
# The recipes these tests run as commands (tests/test_train.py's in-process
# smoke run leaves them to these tests).
RECIPES_RUN = ('auto', 'gru_baseline', 'gru_qat', 'gru_prune',
               'deep_compression', 'gru_kd', 'compress', 'gru_structured',
               'gru_forecast')


def run(script: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
  proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  if ok:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def results(workdir) -> dict:
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def artifact_metric(workdir) -> float:
  out = run('eval.py', f'--artifact={os.path.join(workdir, "model.rnnc")}')
  return json.loads(out.stdout)['test_accuracy']


def header(workdir) -> dict:
  return export_lib.read(os.path.join(workdir, 'model.rnnc')).header


@pytest.fixture(scope='module')
def ts(tmp_path_factory):
  """The data flags of a user's .ts pair, and a trained float baseline."""
  d = tmp_path_factory.mktemp('user')
  train_ts, test_ts = userdata.write_ts(str(d))
  flags = ['--config.data.name=file', f'--config.data.kwargs.path={train_ts}',
           f'--config.data.kwargs.test_path={test_ts}']
  base = str(d / 'baseline')
  run('train.py', '--config=configs/gru_baseline.py:smoke', *flags,
      f'--workdir={base}')
  return flags, base, d


def _assert_user_run(workdir, methods):
  r = check_run(workdir)
  assert r['dataset'] == 'file'
  h = header(workdir)
  assert h['info']['num_classes'] == 3  # The file's classes, not JV's 9.
  assert h['data']['kwargs']['path'].endswith('TOY3_TRAIN.ts')
  encodings = ' '.join(leaf['encoding'] for leaf in h['leaves'])
  assert 'fallback' not in encodings
  for m in methods:
    assert m in encodings, (m, encodings)
  assert artifact_metric(workdir) == r['test_accuracy']
  return r


def test_baseline_on_a_ts_file(ts):
  _, base, _ = ts
  r = _assert_user_run(base, [])
  # README's `python eval.py --workdir=<dir>`: no --config, the workdir's
  # config.json (the user's file) is used.
  out = run('eval.py', f'--workdir={base}')
  assert json.loads(out.stdout)['test_accuracy'] == r['test_accuracy']
  # The source of every later run: its config.json names the user's file.
  with open(os.path.join(base, 'config.json')) as f:
    assert json.load(f)['data']['name'] == 'file'


@pytest.mark.parametrize('recipe, methods', [
    ('gru_qat.py:bits=4,smoke', ['quantize']),
    ('gru_prune.py:sparsity=0.9,smoke', ['prune']),
    ('deep_compression.py:smoke', ['kmeans']),
])
def test_compression_recipe_in_one_command(ts, recipe, methods):
  flags, _, d = ts
  work = str(d / recipe.split(':')[0])
  run('train.py', f'--config=configs/{recipe}', *flags, f'--workdir={work}')
  r = _assert_user_run(work, methods)
  # The source model trained first, on the same file.
  init = work + '/init'
  assert results(init)['dataset'] == 'file'
  if recipe.startswith('gru_prune'):
    assert r['prune_sparsity'] == pytest.approx(0.9, abs=0.01)
  if recipe.startswith('deep_compression'):
    assert results(init + '/init')['dataset'] == 'file'  # All three stages.


def test_distillation_in_one_command_and_eval_of_the_student(ts):
  flags, _, d = ts
  work = str(d / 'kd')
  run('train.py', '--config=configs/gru_kd.py:smoke', *flags,
      f'--workdir={work}')
  r = _assert_user_run(work, [])
  assert results(work + '/teacher')['dataset'] == 'file'
  assert 'scratch_test_accuracy' in r
  # eval.py restores the distilled student (its projection included).
  out = run('eval.py', '--config=configs/gru_kd.py:smoke', f'--workdir={work}')
  assert json.loads(out.stdout)['test_accuracy'] == r['test_accuracy']
  # A teacher trained on the user's file is accepted by its workdir.
  again = str(d / 'kd_again')
  run('train.py', '--config=configs/gru_kd.py:smoke', *flags,
      f'--config.teacher.workdir={work}/teacher',
      '--config.distill.scratch=false', f'--workdir={again}')
  assert results(again)['teacher_test_accuracy'] == results(
      work + '/teacher')['test_accuracy']


def test_byte_budget_in_one_command(ts):
  flags, _, d = ts
  work = str(d / 'auto')
  run('train.py', '--config=configs/auto.py:budget=700,smoke', *flags,
      f'--workdir={work}')
  r = _assert_user_run(work, ['budget'])
  assert os.path.getsize(os.path.join(work, 'model.rnnc')) == r[
      'compressed_bytes'] <= r['budget_bytes'] == 700
  assert results(work + '/init')['dataset'] == 'file'
  rows = r['allocation']
  assert {row['tensor'] for row in rows} == {
      leaf['path'] for leaf in header(work)['leaves']}
  assert sum(row['bytes'] for row in rows) <= 700


def test_compress_any_trained_run(ts):
  _, base, d = ts
  work = str(d / 'compress')
  # No data flags: the model and data come from the baseline's config.json.
  run('train.py', '--config=configs/compress.py:methods=prune,quantize,smoke',
      f'--config.init_from={base}', '--config.compression.prune.sparsity=0.7',
      '--config.compression.quantize.bits=4', f'--workdir={work}')
  r = _assert_user_run(work, ['prune', 'quantize'])
  assert r['prune_sparsity'] == pytest.approx(0.7, abs=0.01)
  assert header(work)['leaves'][-1]['node']['v']['bits'] == 4


def test_method_switched_on_by_flag_on_any_recipe(ts):
  flags, _, d = ts
  work = str(d / 'flag_quantize')
  run('train.py', '--config=configs/gru_baseline.py:smoke', *flags,
      '--config.compression.methods=quantize',
      '--config.compression.quantize.bits=3', f'--workdir={work}')
  _assert_user_run(work, ['quantize'])


def test_structured_artifact_holds_the_shrunk_model(tmp_path):
  work = str(tmp_path / 'st')
  run('train.py', '--config=configs/gru_structured.py:smoke',
      f'--workdir={work}')
  r = check_run(work)
  h = header(work)
  assert r['kept_hidden'] < 8 and h['model']['hidden'] == r['kept_hidden']
  assert artifact_metric(work) == pytest.approx(r['test_accuracy'])


def test_forecasting_npz_with_data_flags(tmp_path):
  path = userdata.write_forecast_npz(str(tmp_path))
  work = str(tmp_path / 'fc')
  run('train.py', '--config=configs/gru_forecast.py:smoke',
      '--config.data.name=file', f'--config.data.kwargs.path={path}',
      '--config.data.kwargs.task=forecasting', f'--workdir={work}')
  r = check_run(work)
  assert r['task'] == 'forecasting' and r['dataset'] == 'file'
  assert header(work)['info']['horizon'] == 4  # The file's horizon.


@pytest.mark.parametrize('flag, message', [
    ('--config.data.kwargs.pth=x.ts',
     "--config.data.kwargs.pth: unknown field 'pth' in data.kwargs; valid: "),
    ('--config.data.kwargs.window=24',
     "data.kwargs.window: unknown keyword for dataset 'japanese_vowels'; "
     'valid: normalize'),
    ('--config.compression.prune.sparsty=0.9',
     "unknown field 'sparsty' in compression.prune; valid: allocation"),
    ('--config.train.log_every=0', 'train.log_every: must be an integer >= 1'),
])
def test_bad_flags_are_one_line_before_anything_is_written(tmp_path, flag,
                                                           message):
  work = tmp_path / 'w'
  proc = run('train.py', '--config=configs/gru_baseline.py:smoke', flag,
             f'--workdir={work}', ok=False)
  assert proc.returncode == 2
  assert message in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert not work.exists()


def test_source_or_teacher_trained_on_other_data_is_refused(ts):
  _, base, _ = ts
  import train  # pylint: disable=g-import-not-at-top
  from configs import gru_kd, gru_qat  # pylint: disable=g-import-not-at-top
  from compression.errors import InputError  # pylint: disable=g-import-not-at-top
  config = gru_qat.get_config('smoke')
  config.init_from = base
  config.overrides = '--config.data.name=japanese_vowels'
  with pytest.raises(InputError, match=r'^init_from: .* was trained on file '):
    train.inherit(config)
  # Without data flags the run takes the source's data and model.
  config.overrides = ''
  inherited = train.inherit(config)
  assert inherited.data.name == 'file'
  assert inherited.data.kwargs.path.endswith('TOY3_TRAIN.ts')
  student = gru_kd.get_config('smoke')
  student.teacher.workdir = base
  setup = train.build(student)
  with pytest.raises(InputError,
                     match=r'^teacher.workdir: .* was trained on file '):
    train.prepare_teacher(student, setup, base)


def test_damaged_config_json_is_one_line(ts, tmp_path):
  _, base, _ = ts
  import shutil  # pylint: disable=g-import-not-at-top
  copy = tmp_path / 'copy'
  shutil.copytree(base, copy)
  (copy / 'config.json').write_text('{"data": [1, 2')
  proc = run('eval.py', f'--workdir={copy}', ok=False)
  assert proc.returncode == 2
  assert 'config.json cannot be read' in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  proc = run('train.py', '--config=configs/compress.py', f'--workdir={copy}2',
             f'--config.init_from={copy}', ok=False)
  assert proc.returncode == 2 and 'init_from: ' in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert not os.path.exists(f'{copy}2')
