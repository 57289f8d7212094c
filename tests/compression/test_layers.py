"""Per-tensor / per-layer first-order sensitivity and whole-layer removal
(compression/layers.py, train.prepare_layer_drop).

The smoke run of `configs/gru_layer_drop.py` is made here (SMOKE_RECIPES),
with the checks of a shrunk stack, rather than in tests/test_train.py.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import pytest

from compression import export
from compression import layers
from compression.errors import InputError
import eval as eval_lib
import train

SMOKE_RECIPES = ('gru_layer_drop',)


def test_taylor_scores_sum_abs_grad_times_weight_per_tensor():
  params = {'rnn': {'layer_0': {'k': jnp.array([[1.0, -2.0], [3.0, 0.0]])},
                    'layer_1': {'b': jnp.array([0.5, -1.0])}},
            'head': {'kernel': jnp.array([[2.0]])}}
  grads = {'rnn': {'layer_0': {'k': jnp.array([[0.5, 0.5], [-1.0, 9.0]])},
                   'layer_1': {'b': jnp.array([2.0, 2.0])}},
           'head': {'kernel': jnp.array([[-0.25]])}}
  scores = layers.taylor_scores(params, grads)
  assert scores == {'head/kernel': 0.5, 'rnn/layer_0/k': 0.5 + 1.0 + 3.0,
                    'rnn/layer_1/b': 1.0 + 2.0}
  total = layers.tensor_sensitivity(lambda p, b: grads, params, [{}, {}])
  assert total['rnn/layer_0/k'] == 9.0  # Summed over the two batches.
  assert layers.layer_sensitivity(total) == {0: 9.0, 1: 6.0}
  assert layers.rank(total) == ['head/kernel', 'rnn/layer_1/b',
                                'rnn/layer_0/k']


def test_the_least_sensitive_removable_layers_go():
  scores = {0: 1.0, 1: 5.0, 2: 3.0}
  assert layers.removable(3, 12, 64) == [1, 2]
  assert layers.removable(3, 64, 64) == [0, 1, 2]
  assert layers.choose(scores, [1, 2], 1) == [2]
  assert layers.choose(scores, [0, 1, 2], 2) == [0, 2]


def test_shrink_drops_and_renumbers_layers():
  flat = {'rnn/layer_0/w': 0, 'rnn/layer_1/w': 1, 'rnn/layer_2/w': 2,
          'head/kernel': 3}
  assert layers.shrink_flat(flat, [1]) == {
      'rnn/layer_0/w': 0, 'rnn/layer_1/w': 2, 'head/kernel': 3}
  assert layers.shrink_flat(flat, [0, 2]) == {
      'rnn/layer_0/w': 1, 'head/kernel': 3}
  nested = layers.shrink({'rnn': {'layer_0': {'w': 0}, 'layer_1': {'w': 1}},
                          'head': {'kernel': 3}}, [0])
  assert nested == {'rnn': {'layer_0': {'w': 1}}, 'head': {'kernel': 3}}


@pytest.mark.parametrize('remove, removed, layers_, width, source, match', [
    (2, '', 2, 64, True,
     r'^layer_drop.remove: 2 would leave no layer of the 2-layer model '
     r'\(at most 1\)$'),
    (2, '0,1', 3, 12, True,
     r'^layer_drop.remove: only layers \[1, 2\] of 3 can be removed \(layer 0 '
     r'reads 12 input features, the layer above reads 64\); asked for '
     r'\[0, 1\]$'),
    (1, '0', 2, 12, True, r'^layer_drop.remove: only layers \[1\] of 2'),
    (1, '0,1', 3, 64, True, r'^layer_drop.removed: names 2 layers, '
     r'layer_drop.remove is 1'),
    (1, '', 2, 64, False, r'^layer_drop.remove: removes layers of a trained '
     r'model; set init_from'),
    (-1, '', 2, 64, True, r'^layer_drop.remove: must be >= 0, got -1$'),
])
def test_impossible_removals_are_one_line(remove, removed, layers_, width,
                                          source, match):
  section = layers.config(remove=remove, removed=removed)
  with pytest.raises(InputError, match=match) as e:
    layers.check(section, layers_, width, 64, source)
  assert '\n' not in str(e.value)


def test_removing_more_layers_than_exist_fails_before_anything_runs(tmp_path):
  config = train.load_recipe('gru_layer_drop.py:smoke,remove=3', 'config')
  with pytest.raises(InputError, match=r'^layer_drop.remove: 3 would leave '
                     r'no layer of the 2-layer model'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_a_two_layer_stack_shrinks_to_one_in_checkpoint_and_artifact(
    tmp_path):
  config = train.load_recipe('gru_layer_drop.py:smoke', 'config')
  workdir = str(tmp_path / 'drop')
  results = train.train_and_evaluate(config, workdir)
  assert results['removed_layers'] == [1] and results['source_layers'] == 2
  assert set(results['layer_sensitivity']) == {'layer_0', 'layer_1'}
  assert all(v > 0 for v in results['layer_sensitivity'].values())
  assert 'source_test_accuracy' in results
  saved = train.read_run_config(workdir, 'workdir')
  assert saved.model.layers == 1 and saved.layer_drop.removed == '1'
  art = export.read(os.path.join(workdir, 'model.rnnc'))
  assert art.header['model']['layers'] == 1
  assert sorted(art.params['rnn']) == ['layer_0']
  # The kept layer starts from the source's layer 0: the checkpoint's
  # parameters count is the 1-layer model's, and eval.py restores it.
  report = eval_lib.evaluate(None, workdir)
  assert report['test_accuracy'] == results['test_accuracy']
  assert report['params_total'] == results['params_total']
  source = train.read_run_config(os.path.join(workdir, 'init'), 'init')
  assert source.model.layers == 2
