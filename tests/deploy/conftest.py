"""Artifacts shared by the integer and C runtime tests (made once per worker)."""

import pytest

from compression import export
from tests.deploy import artifacts

# name -> `artifacts.write` arguments: every weight form, cell, pooling and
# task the integer runtimes must compute exactly.
CASES = {
    'gru_q8_last': dict(chain='q8', cell='gru', pooling='last'),
    'lstm_q4_mean2': dict(chain='q4', cell='lstm', pooling='mean', layers=2),
    'rnn_cb4_attention': dict(chain='cb4', cell='rnn', pooling='attention'),
    'gru_q8sparse_attention2': dict(chain='q8_sparse', cell='gru',
                                    pooling='attention', layers=2),
    'lstm_q3asym_last': dict(chain='q3_asym', cell='lstm'),
    'gru_q8asym_mean': dict(chain='q8_asym_tensor', cell='gru',
                            pooling='mean'),
    'rnn_q4sparse_last': dict(chain='q4_sparse', cell='rnn'),
    'lstm_cb6sparse_attention': dict(chain='cb6_sparse', cell='lstm',
                                     pooling='attention'),
    'gru_q2sparse_mean': dict(chain='q2_sparse', cell='gru', pooling='mean'),
    'gru_cb3sparse_last': dict(chain='cb3_sparse', cell='gru'),
    'gru_shrunk': dict(chain='q4', cell='gru', hidden=10, shrink_to=6,
                       layers=2),
    'lstm_forecast': dict(chain='cb6', cell='lstm', task='forecasting'),
    'gru_lm': dict(chain='q8', cell='gru', task='language_model'),
    'rnn_lm_sparse': dict(chain='q4_sparse', cell='rnn',
                          task='language_model'),
    'gru_deep_compression': dict(chain='deep', cell='gru'),
    'gru_dynamic': dict(chain='q8', cell='gru', mode='dynamic'),
}


@pytest.fixture(scope='session')
def artifact(tmp_path_factory):
  """`artifact(name)`: (path, Artifact) of CASES[name], written once."""
  made = {}
  root = tmp_path_factory.mktemp('deploy_artifacts')

  def get(name):
    if name not in made:
      path = artifacts.write(str(root / f'{name}.rnnc'), **CASES[name])
      made[name] = (path, export.read(path))
    return made[name]

  return get
