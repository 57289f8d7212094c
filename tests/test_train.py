"""End-to-end runs of train.py and eval.py on tiny configs.

Covers: a smoke run of every recipe, the files every run writes, resuming
after an interruption (in-process and a real `kill -9`) with bit-identical
parameters, the NaN guard, eval.py reproducing results.json, and one-line
errors for bad input that leave the workdir intact.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import compression
from compression import export as export_lib
from compression.errors import InputError
import data
import eval as eval_lib
import train

ROOT = os.path.join(os.path.dirname(__file__), '..')
RECIPES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
    if not os.path.basename(p).startswith(('common', '__')))


def load_config(name, arg='smoke'):
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  return module.get_config(arg)


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


# Recipes that tests/test_user_data.py runs as commands (train.py in a
# subprocess, on a user's data file), with the same checks (`check_run`).
RUN_AS_COMMANDS = ('auto', 'compress', 'deep_compression', 'gru_forecast',
                   'gru_kd', 'gru_prune', 'gru_qat', 'gru_structured')


# Recipes whose smoke run a test module of their own makes (listed in its
# SMOKE_RECIPES), with checks of what they do besides `check_run`'s.
RUN_BY_OWN_TESTS = {'gru_layer_drop': 'tests.compression.test_layers'}


@pytest.mark.parametrize('name', [r for r in RECIPES
                                  if r not in RUN_AS_COMMANDS
                                  and r not in RUN_BY_OWN_TESTS])
def test_smoke_run_of_every_recipe(name, tmp_path):
  config = load_config(name)
  results = train.train_and_evaluate(config, str(tmp_path))
  on_disk = check_run(str(tmp_path))
  metric = 'test_' + train.TASK_METRIC[on_disk['task']]
  assert results[metric] == on_disk[metric]


def test_every_recipe_is_run_by_a_test():
  from tests import test_user_data  # pylint: disable=g-import-not-at-top
  assert set(RUN_AS_COMMANDS) <= set(test_user_data.RECIPES_RUN)
  import importlib  # pylint: disable=g-import-not-at-top
  for name, module in RUN_BY_OWN_TESTS.items():
    assert name in importlib.import_module(module).SMOKE_RECIPES, name


def check_run(workdir: str) -> dict:
  """The files a finished run wrote, checked; returns its results.json.

  results.json holds every RESULT_KEY and a finite test metric, dense_bytes
  is the uncompressed model's float32 size, compressed_bytes the artifact's
  size on disk, metrics.jsonl has one train row per step and the final test
  row, the last checkpoint exists, and the artifact holds what the methods
  claim (`assert_compressed`). The config is the workdir's config.json.
  """
  config = train.read_run_config(workdir, 'workdir')
  with open(os.path.join(workdir, 'results.json')) as f:
    on_disk = json.load(f)
  for key in train.RESULT_KEYS:
    assert key in on_disk, key
  metric = 'test_' + train.TASK_METRIC[on_disk['task']]
  assert np.isfinite(on_disk[metric])
  assert on_disk['params_total'] > 0
  # The reference size is the uncompressed model's float32 size.
  assert on_disk['dense_bytes'] == 4 * train.model_param_count(
      train.build(config))
  assert on_disk['compressed_bytes'] == os.path.getsize(
      os.path.join(workdir, on_disk['artifact']))
  rows = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train_rows = [r for r in rows if r['split'] == 'train']
  assert [r['step'] for r in train_rows] == list(
      range(1, config.train.steps + 1))
  assert rows[-1]['split'] == 'test' and rows[-1]['step'] == config.train.steps
  assert os.path.isdir(os.path.join(workdir, 'checkpoints',
                                    str(config.train.steps)))
  assert_compressed(config, on_disk, workdir)
  return on_disk


def assert_compressed(config, on_disk, workdir):
  """The artifact stores what the recipe's methods claim, nothing as a
  float32 fallback: codes of a quantizer, cluster indices, kept positions,
  factors, coefficients, the shrunk width, the quantized state."""
  methods = compression.method_names(config.compression)
  head = export_lib.read(os.path.join(workdir, on_disk['artifact'])).header
  encodings = [leaf['encoding'] for leaf in head['leaves']]
  assert not any('fallback' in e for e in encodings), encodings
  if 'prune' in methods and config.compression.prune.granularity == 'unit':
    # The small model is stored: no positions, the other methods' codes.
    assert head['model']['hidden'] == on_disk['kept_hidden']
    assert on_disk['kept_hidden'] < config.model.hidden
    methods = [m for m in methods if m != 'prune']
    assert not any('sparse' in e for e in encodings), encodings
  for m in methods:
    assert any(m in e.split('+') for e in encodings), (m, encodings)
  if 'prune' in methods:
    assert on_disk['prune_sparsity'] > 0
  if config.compression.hidden_state.bits:
    assert head['hidden_state']['bits'] == config.compression.hidden_state.bits
  if not methods and not config.compression.hidden_state.bits:
    assert set(encodings) == {'float32'}


def _small_config(**train_overrides):
  config = load_config('gru_baseline')
  config.train.steps = 8
  config.train.checkpoint_every = 3
  config.train.eval_every = 0
  for k, v in train_overrides.items():
    config.train[k] = v
  return config


def test_resume_after_interruption_gives_identical_parameters(tmp_path, monkeypatch):
  config = _small_config()
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))

  real_batch = data.train_batch

  def dying_batch(split, batch_size, seed, step):
    if step == 5:
      raise KeyboardInterrupt('simulated stop')
    return real_batch(split, batch_size, seed, step)

  monkeypatch.setattr(data, 'train_batch', dying_batch)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path / 'cut'))
  monkeypatch.setattr(data, 'train_batch', real_batch)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert resumed['resumed_from_step'] == 3
  assert resumed['params_sha256'] == full['params_sha256']
  assert resumed['test_accuracy'] == full['test_accuracy']
  steps = [r['step'] for r in read_jsonl(tmp_path / 'cut' / 'metrics.jsonl')
           if r['split'] == 'train']
  assert steps == list(range(1, 9))  # No duplicated or missing rows.


def test_kill_9_at_a_random_moment_then_rerun(tmp_path):
  """A real SIGKILL of the process, then the same command again."""
  args = [sys.executable, os.path.join(ROOT, 'train.py'),
          f'--config={os.path.join(ROOT, "configs", "gru_baseline.py")}:smoke',
          '--config.train.steps=60', '--config.train.checkpoint_every=7',
          '--config.train.eval_every=0', '--config.train.log_every=10']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  ref = subprocess.run(args + [f'--workdir={tmp_path / "ref"}'], env=env,
                       capture_output=True, timeout=300)
  assert ref.returncode == 0, ref.stderr.decode()[-2000:]

  work = tmp_path / 'killed'
  proc = subprocess.Popen(args + [f'--workdir={work}'], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while time.time() < deadline and not (work / 'checkpoints' / '14').exists():
    time.sleep(0.01)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  done = subprocess.run(args + [f'--workdir={work}'], env=env,
                        capture_output=True, timeout=300)
  assert done.returncode == 0, done.stderr.decode()[-2000:]
  a = json.load(open(tmp_path / 'ref' / 'results.json'))
  b = json.load(open(work / 'results.json'))
  assert b['resumed_from_step'] > 0
  assert a['params_sha256'] == b['params_sha256']


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  config = _small_config(checkpoint_every=2, log_every=1)
  real_batch = data.train_batch

  def poisoned(split, batch_size, seed, step):
    batch = real_batch(split, batch_size, seed, step)
    if step >= 4:
      batch = dict(batch, x=np.full_like(batch['x'], np.nan))
    return batch

  monkeypatch.setattr(data, 'train_batch', poisoned)
  with pytest.raises(FloatingPointError, match='NaN/inf at step 4.*step 4'):
    train.train_and_evaluate(config, str(tmp_path))
  kept = sorted(int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit())
  assert kept[-1] == 4  # Steps 0..3 were good; nothing later was saved.
  monkeypatch.setattr(data, 'train_batch', real_batch)
  report = eval_lib.evaluate(config, str(tmp_path))
  assert report['step'] == 4 and np.isfinite(report['test_loss'])


def test_eval_reproduces_results(tmp_path):
  config = _small_config()
  results = train.train_and_evaluate(config, str(tmp_path))
  report = eval_lib.evaluate(config, str(tmp_path))
  assert report['test_accuracy'] == results['test_accuracy']
  assert report['step'] == config.train.steps
  assert json.load(open(tmp_path / 'eval.json'))['test_accuracy'] == results['test_accuracy']


@pytest.mark.parametrize('field, value, match', [
    ('data.name', 'imagenet', r"data.name: unknown dataset 'imagenet'"),
    ('model.cell', 'transformer', r"model.cell: unknown cell 'transformer'"),
    ('optimizer.name', 'lamb', r"optimizer.name: unknown 'lamb'"),
    ('compression.methods', 'magic', r"compression.methods: unknown method 'magic'"),
    ('data.batch_size', 100000, r'data.batch_size: 100000 exceeds'),
])
def test_bad_config_is_one_line_and_keeps_the_workdir(field, value, match, tmp_path):
  keep = tmp_path / 'results.json'
  keep.write_text('{"kept": true}\n')
  config = load_config('gru_baseline')
  section, key = field.split('.')
  config[section][key] = value
  with pytest.raises(InputError, match=match) as e:
    train.train_and_evaluate(config, str(tmp_path))
  assert '\n' not in str(e.value)
  assert keep.read_text() == '{"kept": true}\n'


def test_cli_prints_one_error_line(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'train.py'),
       f'--config={os.path.join(ROOT, "configs", "gru_baseline.py")}:smoke',
       '--config.model.cell=foo', f'--workdir={tmp_path}'],
      capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith('error: model.cell')


def test_init_from_a_trained_run_with_zero_steps(tmp_path):
  source = _small_config()
  trained = train.train_and_evaluate(source, str(tmp_path / 'float'))
  config = _small_config()
  config.init_from = str(tmp_path / 'float')
  config.train.steps = 0
  again = train.train_and_evaluate(config, str(tmp_path / 'copy'))
  assert again['test_accuracy'] == trained['test_accuracy']
  assert again['params_sha256'] == trained['params_sha256']
  # The source's config.json gives the model, unless the command line sets a
  # field: a source whose shapes do not fit that is one clear line.
  config.model.hidden = 9
  config.overrides = '--config.model.hidden=9'
  with pytest.raises(InputError, match=r'init_from: .* parameter .* has shape'):
    train.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_resuming_a_workdir_of_another_config_is_refused(tmp_path):
  config = _small_config()
  train.train_and_evaluate(config, str(tmp_path))
  other = _small_config()
  other.model.hidden = 5
  with pytest.raises(InputError, match=r'holds a run with model.hidden=8, this config has 5'):
    train.train_and_evaluate(other, str(tmp_path))
