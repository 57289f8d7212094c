"""deploy.integer: the integer reference (the C runtime's specification)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from compression import export
from compression import files
from compression.errors import InputError
from deploy import integer
from tests.deploy import artifacts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_sigmoid_and_tanh_follow_the_functions_to_the_table_error():
  a = np.arange(-40000, 40001)  # Q12, past the tables' +-8 on both sides.
  s = integer.sigmoid_q15(a)
  want = 1.0 / (1.0 + np.exp(-a / 4096.0))
  assert np.max(np.abs(s / 32768.0 - want)) < 3e-4
  assert np.all(np.diff(s) >= 0)
  np.testing.assert_array_equal(s + s[::-1], 32768)  # sigmoid(-a) = 1 - s.
  t = integer.tanh_q15(a)
  assert np.max(np.abs(t / 32768.0 - np.tanh(a / 4096.0))) < 7e-4
  assert np.all(np.diff(t) >= 0)
  np.testing.assert_array_equal(t, -t[::-1])
  assert s.max() <= 32767 and t.min() >= -32767  # int16 outputs.


def test_exp_follows_the_function():
  u = np.arange(0, (1 << 17) + 500)
  e = integer.exp_q15(u)
  assert e[0] == 32768
  assert np.all(np.diff(e) <= 0)
  assert np.max(np.abs(e / 32768.0 - np.exp(-u / 4096.0))) < 4e-4
  assert e[-1] == 0


@pytest.mark.parametrize('real', [3e-19, 1e-9, 3.3e-4, 0.7, 1.0, 5.5, 8191.0])
def test_multiplier_represents_the_real_scale(real):
  m, shift = integer.multiplier(real, 'x')
  assert 1 <= shift <= integer.MAX_SHIFT
  if shift < integer.MAX_SHIFT:
    assert 1 << 14 <= m < 1 << 15
    assert abs(m * 2.0 ** -shift / real - 1) < 2.0 ** -14
  else:  # Too small for 15 bits: as close as the largest shift allows.
    assert abs(m - real * 2.0 ** shift) <= 0.5


def test_requantize_rounds_the_exact_product_half_up():
  rng = np.random.default_rng(0)
  acc = rng.integers(-(1 << 24), 1 << 24, 2000)
  m, shift = integer.multiplier(0.0123, 'x')
  got = integer.requantize(acc, integer.Requant(np.int64(m), np.int64(shift)),
                           limit=1 << 40)
  # Exact rational arithmetic: floor(acc * m / 2^shift + 1/2).
  want = [math.floor((int(a) * m + (1 << (shift - 1))) / (1 << shift))
          for a in acc]
  np.testing.assert_array_equal(got, want)
  clipped = integer.requantize(np.array([1 << 30]),
                               integer.Requant(np.int64(1 << 14),
                                               np.int64(1)))
  assert clipped[0] == integer.WIDE


@pytest.mark.parametrize('bad', [0.0, -1.0, float('inf'), 2.0 ** 14])
def test_multiplier_refuses_what_it_cannot_represent(bad):
  with pytest.raises(InputError, match='scale'):
    integer.multiplier(bad, 'head/kernel')


def test_div_round_rounds_half_away_from_zero():
  n = np.array([-7, -5, -4, -3, -1, 0, 1, 3, 4, 5, 7])
  np.testing.assert_array_equal(integer.div_round(n, 2),
                                [-4, -3, -2, -2, -1, 0, 1, 2, 2, 3, 4])


def test_calibrate_input_takes_the_largest_value_of_valid_steps():
  x = np.zeros((2, 4, 3), np.float32)
  x[0, :2] = 0.5
  x[1, 0, 1] = -2.54
  x[0, 3] = 100.0  # Past sequence 0's length: padding, not data.
  assert integer.calibrate_input(x, np.array([2, 1])) == [
      pytest.approx(2.54 / 127)]
  assert integer.calibrate_input(x) == [pytest.approx(100.0 / 127)]
  assert integer.calibrate_input(np.zeros((2, 3, 1)), np.array([3, 3])) == [
      1.0]
  assert integer.calibrate_input(np.zeros((2, 5), np.int32)) == []


@pytest.mark.parametrize('name', [
    'gru_q8_last', 'lstm_q4_mean2', 'rnn_cb4_attention',
    'gru_q8sparse_attention2', 'lstm_cb6sparse_attention', 'gru_shrunk',
    'lstm_forecast', 'gru_lm', 'gru_dynamic', 'gru_deep_compression'])
def test_integers_compute_the_float_model(artifact, name):
  # The integer model differs from the float rebuild of the same weights
  # only by activation quantization: a wrong gate, sign or scale is far off.
  _, art = artifact(name)
  prog = integer.lower(art)
  for b in artifacts.batches(art.header['task'], limit=1):
    want = np.asarray(export.predict(art, b['x'], b['lengths']))
    got = integer.to_float(integer.forward(prog, b['x'], b['lengths']))
    assert got.shape == want.shape
    top = np.max(np.abs(want))
    assert top > 0.2
    assert np.max(np.abs(got - want)) < 0.04 * top + 0.01


def test_padding_and_batch_do_not_change_a_sequence(artifact):
  _, art = artifact('lstm_q4_mean2')
  prog = integer.lower(art)
  b = artifacts.batches('classification', limit=1)[0]
  want = integer.forward(prog, b['x'], b['lengths'])
  x = np.concatenate([b['x'], np.full((len(b['x']), 4, b['x'].shape[2]),
                                      50.0, np.float32)], axis=1)
  x[np.arange(x.shape[1])[None, :] >= b['lengths'][:, None]] = -50.0
  np.testing.assert_array_equal(integer.forward(prog, x, b['lengths']), want)
  one = integer.forward(prog, x[3:4], b['lengths'][3:4])
  np.testing.assert_array_equal(one[0], want[3])


def test_per_feature_input_scales_use_their_largest(artifact, tmp_path):
  path, art = artifact('gru_q8_last')
  base = integer.lower(art)
  dim = art.header['info']['input_dim']
  scales = [float(v) for v in np.linspace(0.2, 1.0, dim) * base.input_scale]
  other = str(tmp_path / 'f.rnnc')
  artifacts.add_header_keys(path, other, {'activations': {
      'bits': 8, 'mode': 'static', 'input_scale': scales}})
  prog = integer.lower(export.read(other))
  assert prog.input_scale == pytest.approx(base.input_scale)


def test_fewer_activation_bits_put_h_on_a_coarser_grid(artifact, tmp_path):
  path, _ = artifact('gru_q8_last')
  other = str(tmp_path / 'b4.rnnc')
  act = artifacts.static_activations('classification')
  artifacts.add_header_keys(path, other, {'activations': {**act, 'bits': 4}})
  prog = integer.lower(export.read(other))
  assert prog.h_max == 7
  b = artifacts.batches('classification', limit=1)[0]
  x = integer.quantize_input(b['x'], prog.input_scale, prog.h_max)
  assert np.max(np.abs(x)) == 7


def _one_line(error):
  message = str(error.value)
  assert '\n' not in message
  return message


@pytest.mark.parametrize('leaf', ['rnn/layer_0/input_kernel', 'head/kernel',
                                  'attention/kernel'])
def test_a_float_kernel_is_one_line_naming_it(tmp_path, leaf):
  path = artifacts.write(str(tmp_path / 'f.rnnc'), 'q8', pooling='attention',
                         float_leaf=leaf)
  with pytest.raises(InputError) as e:
    integer.lower(export.read(path), 'f.rnnc')
  assert _one_line(e) == (
      f'artifact f.rnnc: {leaf} is float32: quantize the weights (methods '
      'quantize or kmeans) to run it in integers')


def test_a_language_model_needs_a_quantized_embedding(tmp_path):
  path = artifacts.write(str(tmp_path / 'lm.rnnc'), 'q8',
                         task='language_model', float_leaf='embed/embedding')
  with pytest.raises(InputError) as e:
    integer.lower(export.read(path))
  assert 'embed/embedding is float32' in _one_line(e)


@pytest.mark.parametrize('chain,want', [
    ('dct', 'dct coefficients'),
    ('lowrank', 'stored as factors'),
])
def test_methods_without_integer_form_are_one_line(tmp_path, chain, want):
  path = str(tmp_path / f'{chain}.rnnc')
  artifacts.write(path, chain, hidden=4)
  with pytest.raises(InputError) as e:
    integer.lower(export.read(path))
  assert want in _one_line(e)


def test_missing_or_bad_activations_are_one_line(tmp_path):
  path = artifacts.write(str(tmp_path / 'n.rnnc'), 'q8', mode='none')
  with pytest.raises(InputError) as e:
    integer.lower(export.read(path))
  assert "no 'activations'" in _one_line(e)
  bad = str(tmp_path / 'b.rnnc')
  for act, want in [({'bits': 8, 'mode': 'sometimes', 'input_scale': [1.0]},
                     'activations.mode'),
                    ({'bits': 8, 'mode': 'static', 'input_scale': [0.0]},
                     'input_scale'),
                    ({'bits': 8, 'mode': 'static', 'input_scale': [1, 2]},
                     'input_scale has 2 values'),
                    ({'bits': 12, 'mode': 'static', 'input_scale': [1.0]},
                     'activations.bits')]:
    artifacts.add_header_keys(path, bad, {'activations': act})
    with pytest.raises(InputError) as e:
      integer.lower(export.read(bad))
    assert want in _one_line(e)


def test_hidden_state_hooks_it_cannot_express_are_refused(tmp_path):
  contents = artifacts.fast('q8', hidden_state={
      'bits': 8, 'cell_bits': 8, 'cell_clip': 4.0})
  act = artifacts.static_activations('classification')
  path = str(tmp_path / 'h.rnnc')
  files.atomic_write(path, artifacts.encode(contents, {'activations': act}))
  with pytest.raises(InputError) as e:
    integer.lower(export.read(path))
  assert 'hidden_state' in _one_line(e)


def test_eval_runtime_int_writes_its_report(artifact):
  path, art = artifact('gru_q8_last')
  run = subprocess.run(
      [sys.executable, 'eval.py', f'--artifact={path}', '--runtime=int'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  report = json.loads(open(f'{path}.eval.int.json').read())
  assert report == json.loads(run.stdout[run.stdout.index('{'):])
  assert report['runtime'] == 'int'
  prog = integer.lower(art)
  ds = artifacts.dataset('classification')
  logits = integer.forward(prog, ds.test['x'], ds.test['lengths'])
  want = np.mean(np.argmax(logits, -1) == ds.test['y'])
  assert report['test_accuracy'] == pytest.approx(want)
  assert report['activations'] == 'static'
