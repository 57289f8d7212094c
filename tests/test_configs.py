"""Config parsing: typed `:key=value` args, overrides, and one-line errors."""

import glob
import os
import sys

from ml_collections import config_flags  # noqa: F401  (the flag machinery under test)
import pytest

from compression.errors import InputError
from configs import common
from configs import gru_baseline

RECIPES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(os.path.dirname(__file__), '..', 'configs', '*.py'))
    if not os.path.basename(p).startswith(('common', '__')))


def test_parse_arg_types_and_flags():
  a = common.parse_arg('bits=4,smoke,rate=0.5,name=x', bits=8, smoke=False,
                       rate=1.0, name='y')
  assert (a.bits, a.smoke, a.rate, a.name) == (4, True, 0.5, 'x')
  assert isinstance(a.bits, int) and isinstance(a.rate, float)
  assert common.parse_arg(None, bits=8).bits == 8
  assert common.parse_arg('smoke=false', smoke=True).smoke is False


@pytest.mark.parametrize('arg, match', [
    ('bitz=4', r"config arg 'bitz': unknown; valid keys: bits, smoke"),
    ('bits=four', r'config arg bits: expected int'),
    ('bits', r'config arg bits: needs a value'),
    ('smoke=maybe', r'config arg smoke: expected true/false'),
])
def test_parse_arg_errors_are_one_line(arg, match):
  with pytest.raises(InputError, match=match) as e:
    common.parse_arg(arg, bits=8, smoke=False)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('name', RECIPES)
def test_every_recipe_builds_and_has_smoke(name):
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  full = module.get_config()
  smoke = module.get_config('smoke')
  assert full.name
  # Post-training recipes train 0 steps in both variants.
  assert smoke.train.steps < full.train.steps or full.train.steps == 0
  assert smoke.train.steps <= 10
  # Every recipe has the shared keys, so command-line overrides always work.
  for key in ('seed', 'data', 'model', 'optimizer', 'train', 'compression'):
    assert key in full


def test_locked_config_rejects_unknown_keys_and_accepts_known():
  c = gru_baseline.get_config('smoke')
  c.lock()
  c.model.hidden = 12
  assert c.model.hidden == 12
  with pytest.raises(AttributeError):
    c.model.hiddn = 3


def test_overrides_from_the_command_line(monkeypatch):
  # The same mechanism train.py uses: a config file flag with dotted overrides.
  from absl import flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'recipe', flag_values=fv,
                                  lock_config=True)
  path = os.path.join(os.path.dirname(__file__), '..', 'configs', 'gru_baseline.py')
  argv = ['prog', f'--config={path}:smoke', '--config.model.hidden=5',
          '--config.optimizer.name=sgd']
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads sys.argv.
  fv(argv)
  assert fv.config.model.hidden == 5
  assert fv.config.optimizer.name == 'sgd'
  assert fv.config.train.steps == gru_baseline.get_config('smoke').train.steps


@pytest.mark.parametrize('module, section', [
    ('pruning', 'compression.prune'), ('lowrank', 'compression.lowrank'),
    ('dct', 'compression.dct'), ('distillation', 'distill'),
    ('quantization', 'compression.quantize'),
    ('clustering', 'compression.kmeans'),
    ('kronecker', 'compression.kronecker'), ('tensor_train', 'compression.tt'),
    ('early_exit', 'early_exit'), ('layers', 'layer_drop'),
])
def test_method_config_refuses_unknown_keys(module, section):
  mod = __import__(f'compression.{module}', fromlist=['config'])
  with pytest.raises(InputError,
                     match=rf'^{section}\.sparsty: unknown field; valid: ') as e:
    mod.config(sparsty=0.9)
  assert '\n' not in str(e.value)


def test_every_recipe_declares_every_method_and_dataset_keyword():
  import compression
  import data
  for name in RECIPES:
    module = __import__(f'configs.{name}', fromlist=['get_config'])
    c = module.get_config('smoke')
    for method in compression.METHODS:
      assert method in c.compression, (name, method)
    for dataset in data.DATASETS:
      for key in data.default_kwargs(dataset):
        assert key in c.data.kwargs, (name, dataset, key)


def test_data_keywords_of_another_dataset_are_refused_by_name():
  import data
  c = gru_baseline.get_config('smoke')
  c.data.kwargs.window = 24  # A sunspots keyword, not JapaneseVowels'.
  with pytest.raises(InputError, match=r"^data.kwargs.window: unknown keyword "
                     r"for dataset 'japanese_vowels'; valid: normalize$"):
    data.load(c.data)


@pytest.mark.parametrize('field, value, match', [
    ('optimizer.grad_clip_norm', -1.0,
     r'^optimizer.grad_clip_norm: must be a finite number >= 0, got -1.0$'),
    ('optimizer.end_factor', -0.5,
     r'^optimizer.end_factor: must be a finite number >= 0, got -0.5$'),
    ('train.log_every', 0, r'^train.log_every: must be an integer >= 1, got 0$'),
    ('train.checkpoint_every', 0,
     r'^train.checkpoint_every: must be an integer >= 1, got 0$'),
    ('train.eval_every', -1, r'^train.eval_every: must be an integer >= 0'),
])
def test_bad_training_fields_are_refused_before_anything_is_built(
    field, value, match):
  import train
  c = gru_baseline.get_config('smoke')
  section, key = field.split('.')
  c[section][key] = value
  with pytest.raises(InputError, match=match):
    train.build(c)
