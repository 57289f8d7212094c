"""REPRODUCTION.md part II: the language-model grid and its tables.

One test runs the LM part's whole pipeline as a user types it
(`reproduce.py --smoke --only=lm`: the sweep engine, every method on the
GRU LM and PTQ on the LSTM LM, then the tables and charts); the others feed
the table generators made-up summaries and check what they conclude.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from compression.errors import InputError
import reproduce
from configs import lm_compress

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')


def _block(text: str, name: str) -> str:
  m = re.search(rf'<!-- table:{name} -->\n(.*?)<!-- /table -->', text,
                re.DOTALL)
  assert m, name
  return m.group(1)


def test_lm_part_runs_end_to_end_from_the_command_line(tmp_path):
  root = tmp_path / 'runs'
  run = subprocess.run(
      [sys.executable, 'reproduce.py', '--smoke', '--only=lm', '--parallel=2',
       f'--root={root}'], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  text = (root / 'REPRODUCTION.md').read_text()
  # Every LM table is filled from the runs: the float LMs of both cells,
  # each method's row with a number of bits per character.
  models = _block(text, 'lm_models')
  for name in ('GRU-128', 'LSTM-110'):
    assert re.search(rf'\| {name} \| [\d,]+ \| [\d,]+ \| \d\.\d{{3}} \|',
                     models), models
  quant = _block(text, 'lm_quant_bits')
  assert re.search(r'\| GRU-128 \| 4 \| \d\.\d{3} \| \d\.\d{3} \|', quant)
  assert re.search(r'\| LSTM-110 \| 4 \| \d\.\d{3} \| n/a \|', quant)
  deep = _block(text, 'lm_deep_compression')
  assert re.search(r'90% pruned \+ 16 shared values \+ Huffman \| [\d,]+ \|',
                   deep), deep
  hinton = _block(text, 'lm_hinton')
  assert re.search(r'\| GRU-128 \| 0 \| [\d,]+ \| \d\.\d{3} \| \d\.\d{3} \| '
                   r'\d\.\d{3} \| [+-]\d\.\d{3} \|', hinton), hinton
  for name in ('lm_zhu_gupta', 'lm_prabhavalkar', 'lm_wen_iss'):
    assert re.search(r'\| GRU-128 \| .* \d\.\d{3} \|', _block(text, name))
  # The comparison reads part I too, which --only=lm did not run.
  assert 'n/a' in _block(text, 'lm_directions')
  for cell in ('gru', 'lstm'):
    assert os.path.getsize(root / 'docs' / f'lm_pareto_{cell}.png') > 1000
  info = json.loads((root / 'reproduce.json').read_text())['items']['lm']
  assert info['points'] == info['points_run'] == len(
      lm_compress.sweep('smoke'))
  # Every point's results.json is the tables' source.
  for p in lm_compress.sweep('smoke'):
    assert (root / 'lm' / p['name'] / 'results.json').exists(), p['name']


def _s(value, nbytes=1000.0, n=3, **extra):
  return {'n': n, 'value': value, 'value_std': 0.0,
          'compressed_bytes': nbytes, **extra}


def test_lm_tables_read_the_right_groups():
  lm = {'gru_float': _s(2.0, 296000.0, dense_bytes=296000.0,
                        params_total=74000.0),
        'gru_prune0.9': _s(2.10, 30000.0, params_nonzero=8000.0),
        'gru_dense0.9': _s(2.30, 33000.0, params_nonzero=8200.0),
        'gru_svd64': _s(2.01, 200000.0, params_total=60000.0),
        'gru_svd32': _s(2.015, 90000.0, params_total=40000.0),
        'gru_svd16': _s(2.2, 80000.0, params_total=30000.0)}
  S = {'lm': lm}
  zhu = reproduce.table_lm_zhu_gupta(S)
  assert ('| GRU-128 | 90% sparse, fine-tuned | 8,000 | 30,000 | 9.9x | '
          '2.100 ± 0.000 | 4.287 | 3 |') in zhu
  assert 'GRU-128, 90%: large-sparse 2.100 ± 0.000 (8,000 nonzero) vs ' \
         'small-dense 2.300 ± 0.000 (8,200).' in zhu
  assert '| LSTM-110 | 90% sparse, fine-tuned | n/a |' in zhu
  svd = reproduce.table_lm_prabhavalkar(S)
  # Rank 32 is the smallest file within 0.02 bits/char; 16 is too lossy.
  assert 'GRU-128: smallest within 0.02 bits/char of the float LM: rank 32 ' \
         '(3.3x smaller).' in svd


def test_directions_compare_the_two_tasks():
  jv = {'prune': {'baseline': _s(0.98), 'prune0.9': _s(0.978),
                  'dense21_800': _s(0.97)},
        'ptq': {'baseline': _s(0.98), 'ptq4': _s(0.98), 'ptq2': _s(0.95)},
        'qat': {'qat2': _s(0.97), 'qat4': _s(0.981)}}
  lm = {'gru_float': _s(2.0, dense_bytes=296000.0),
        'gru_prune0.9': _s(2.3), 'gru_dense0.9': _s(2.2),
        'gru_ptq4': _s(2.05), 'gru_qat4': _s(2.01), 'gru_ptq2': _s(3.0),
        'gru_qat2': _s(2.4)}
  rows = {claim: rest for claim, *rest in reproduce._claims({**jv, 'lm': lm})}
  sparse = rows['Large-sparse beats small-dense at about equal nonzeros (90% '
                'sparse, equal training steps)']
  assert sparse[0] == (True, '97.80% vs 97.00%')
  assert sparse[1] == (False, '2.300 vs 2.200')  # Lower bits/char wins.
  assert sparse[2] is None  # No LSTM runs.
  assert rows['4-bit PTQ costs no more than the tolerance'][:2] == [
      (True, '98.00% vs 98.00%'), (False, '2.050 vs 2.000')]
  table = reproduce.table_lm_directions({**jv, 'lm': lm})
  assert 'differs |' in table and 'same |' in table
  # Large-sparse (differs), 90% pruning (differs: 0.3 bits/char lost),
  # 4-bit PTQ (differs); QAT at 2 and 4 bits wins on both (same).
  assert 'differs from JapaneseVowels for 3 of 9 claims' in table


@pytest.mark.parametrize('arg, match', [
    ('method=lasso', "config arg method: unknown 'lasso'; valid: prune,"),
    ('cell=rnn', "config arg cell: unknown 'rnn'; valid: gru, lstm"),
])
def test_bad_method_or_cell_is_one_line(arg, match):
  with pytest.raises(InputError, match=match):
    lm_compress.get_config(arg)


def test_the_grid_fine_tunes_from_its_own_float_lm():
  points = lm_compress.sweep()
  assert len({p['name'] for p in points}) == len(points) == 103
  for p in points:
    cell, seed = p['name'].split('_')[0], p['name'].rsplit('_s', 1)[1]
    init = p['overrides'].get('init_from', '')
    if 'method=deep,' in p.get('arg', ''):
      assert init == f'{{sweep_dir}}/{cell}_deep_prune0.9_s{seed}'
      assert p['stage'] == 2
    elif init:
      assert init == f'{{sweep_dir}}/{cell}_float_s{seed}'
    if 'method=kd' in p.get('arg', ''):
      assert p['overrides']['teacher.workdir'] == (
          f'{{sweep_dir}}/{cell}_float_s{seed}')


def test_lstm_lm_unit_removal_and_distillation_as_typed(tmp_path):
  """README's lm_compress commands on the LSTM (their :smoke twins): ISS
  rebuilds a narrower LSTM LM, and kd trains the student and its twin."""
  def train(*args):
    run = subprocess.run([sys.executable, 'train.py', *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(os.path.join(args[-1].split('=', 1)[1], 'results.json')) as f:
      return json.load(f)

  base = str(tmp_path / 'float')
  r = train('--config=configs/lstm_lm.py:smoke', f'--workdir={base}')
  assert r['task'] == 'language_model' and r['test_bits_per_char'] > 0
  units = train('--config=configs/lm_compress.py:method=units,cell=lstm,smoke',
                f'--config.init_from={base}',
                f'--workdir={tmp_path / "units"}')
  assert units['kept_hidden'] == 4  # Half of the smoke LSTM's 8 units.
  assert units['shrunk_params_total'] < r['params_total']
  kd = train('--config=configs/lm_compress.py:method=kd,cell=lstm,smoke',
             f'--config.teacher.workdir={base}',
             f'--workdir={tmp_path / "kd"}')
  assert kd['teacher_test_bits_per_char'] == r['test_bits_per_char']
  assert kd['scratch_test_bits_per_char'] > 0
  assert kd['params_total'] < r['params_total']
