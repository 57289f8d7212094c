"""deploy.c: the generated C library equals the integer reference bit for bit."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from compression.errors import InputError
from deploy import c
from deploy import integer
from tests.deploy import artifacts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STRICT = ['-std=c99', '-Wall', '-Wextra', '-Werror', '-O2']

pytestmark = pytest.mark.skipif(c.compiler() is None,
                                reason='no C compiler')


def _strict_compile(directory):
  """The library compiles warning-free, and with no floating-point unit."""
  for extra in ([], ['-mgeneral-regs-only']):
    for src in ('rnnc.c', 'rnnc_data.c'):
      run = subprocess.run(['cc', *STRICT, *extra, '-c', src, '-o',
                            os.devnull], cwd=directory, capture_output=True,
                           text=True, check=False)
      assert run.returncode == 0, (extra, src, run.stderr[-3000:])


# name (conftest.CASES) -> a storage the generated data must use, so every
# matrix-vector form is compiled and compared.
STORAGE = {
    'gru_q8_last': 'const int8_t rnnc_l0_rec_w',
    'lstm_q4_mean2': 'const uint8_t rnnc_l1_rec_w[128]',  # 4-bit, 2 a byte.
    'rnn_cb4_attention': 'rnnc_l0_rec_tab',
    'gru_q8sparse_attention2': 'rnnc_l1_rec_rp',
    'lstm_q3asym_last': 'rnnc_l0_rec_zp',
    'gru_q8asym_mean': 'const uint8_t rnnc_l0_rec_w',
    'rnn_q4sparse_last': 'const uint8_t rnnc_l0_rec_w[32]',  # Dense: smaller.
    'lstm_cb6sparse_attention': 'rnnc_l0_rec_col',
    'gru_q2sparse_mean': 'rnnc_l0_rec_rp',
    'gru_cb3sparse_last': 'rnnc_l0_rec_tab[9]',  # A zero appended.
    'gru_deep_compression': 'rnnc_l0_rec_col',
    'gru_shrunk': '#define RNNC_HIDDEN 6',
    'lstm_forecast': 'rnnc_l0_rec_tab[64]',
    'gru_lm': 'rnnc_embed',
    'rnn_lm_sparse': 'rnnc_embed',
}


@pytest.mark.parametrize('name', sorted(STORAGE))
def test_c_equals_the_integer_reference(artifact, name, tmp_path):
  _, art = artifact(name)
  prog = integer.lower(art)
  batches = artifacts.batches(art.header['task'])
  exe, sizes = c.build(prog, str(tmp_path))
  text = ''.join(open(tmp_path / f).read() for f in c.FILES)
  assert STORAGE[name] in text
  assert not any(word in text for word in ('float', 'double', 'malloc'))
  _strict_compile(str(tmp_path))
  got = c.predict(prog, exe, str(tmp_path), batches)
  want = integer.outputs(prog, batches)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_array_equal(g, w)
  assert sizes['flash_bytes'] == sizes['weights_bytes'] + sizes['code_bytes']
  assert sizes['weights_bytes'] > integer.SIGMOID_TABLE.size * 2


_STREAM_MAIN = r"""
#include <stdio.h>
#include "rnnc.h"
/* Streams one sequence from stdin; prints the output after every step. */
int main(void) {
  int8_t x[RNNC_INPUT_DIM];
  int32_t out[RNNC_OUTPUT_DIM];
  rnnc_state st;
  rnnc_reset(&st);
  while (fread(x, 1, RNNC_INPUT_DIM, stdin) == RNNC_INPUT_DIM) {
    rnnc_step(&st, x);
    rnnc_output(&st, out);
    for (int j = 0; j < RNNC_OUTPUT_DIM; ++j) printf("%ld ", (long)out[j]);
    printf("\n");
  }
  return 0;
}
"""


@pytest.mark.parametrize('name', ['gru_q8sparse_attention2', 'lstm_q4_mean2'])
def test_streaming_steps_give_every_prefix_prediction(artifact, name,
                                                      tmp_path):
  # The online softmax and running means: after each rnnc_step, the output
  # equals the reference on the prefix seen so far.
  _, art = artifact(name)
  prog = integer.lower(art)
  c.build(prog, str(tmp_path))
  (tmp_path / 'stream.c').write_text(_STREAM_MAIN)
  subprocess.run(['cc', *STRICT, 'stream.c', 'rnnc.o', 'rnnc_data.o', '-o',
                  'stream'], cwd=tmp_path, check=True)
  ds = artifacts.dataset('classification')
  i = int(np.argmax(ds.test['lengths']))
  n = int(ds.test['lengths'][i])
  x = ds.test['x'][i:i + 1]
  q = integer.quantize_input(x[0, :n], prog.input_scale).astype(np.int8)
  run = subprocess.run([str(tmp_path / 'stream')], input=q.tobytes(),
                       capture_output=True, check=True)
  got = np.array([[int(v) for v in line.split()]
                  for line in run.stdout.decode().splitlines()])
  want = np.concatenate([integer.forward(prog, x, np.array([t]))
                         for t in range(1, n + 1)])
  np.testing.assert_array_equal(got, want)


def _eval(*flags):
  return subprocess.run([sys.executable, 'eval.py', *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        check=False)


def test_eval_runtime_c_reports_flash_and_ram(artifact):
  path, art = artifact('lstm_q4_mean2')
  run = _eval(f'--artifact={path}', '--runtime=c')
  assert run.returncode == 0, run.stderr[-2000:]
  report = json.loads(open(f'{path}.eval.c.json').read())
  assert report['runtime'] == 'c'
  prog = integer.lower(art)
  ds = artifacts.dataset('classification')
  logits = integer.forward(prog, ds.test['x'], ds.test['lengths'])
  assert report['test_accuracy'] == pytest.approx(
      np.mean(np.argmax(logits, -1) == ds.test['y']))
  h = prog.hidden
  # State: h of two layers, c of two (int16), the count, the mean's sums.
  assert report['state_bytes'] == 2 * h + 2 * 2 * h + 4 + 4 * h
  assert report['ram_bytes'] == report['state_bytes'] + report[
      'scratch_bytes']
  assert report['flash_bytes'] == report['weights_bytes'] + report[
      'code_bytes']


def test_export_c_writes_a_library_that_compiles(artifact, tmp_path):
  path, art = artifact('gru_deep_compression')
  out = tmp_path / 'lib'
  run = _eval(f'--artifact={path}', f'--export_c={out}')
  assert run.returncode == 0, run.stderr[-2000:]
  report = json.loads(run.stdout)
  assert sorted(os.listdir(out)) == sorted(c.FILES)
  assert report['bytes'] == sum(os.path.getsize(out / f) for f in c.FILES)
  assert report['format'] == 'c'
  _strict_compile(str(out))
  files = c.generate(integer.lower(art), c._label(art, path))  # pylint: disable=protected-access
  for f in c.FILES:
    assert (out / f).read_text() == files[f]
  for key in ('flash_bytes', 'weights_bytes', 'code_bytes', 'ram_bytes'):
    assert report[key] > 0
  # Exported again: the previous export is replaced whole.
  (out / 'rnnc.c').write_text('stale')
  report2 = c.export(art, path, str(out))
  assert (out / 'rnnc.c').read_text() == files['rnnc.c']
  assert report2['bytes'] == report['bytes']
  assert not [p for p in os.listdir(tmp_path) if p.startswith('.')]


def test_export_c_refuses_what_it_cannot_write_before_writing(artifact,
                                                              tmp_path):
  path = artifacts.write(str(tmp_path / 'f.rnnc'), 'q8',
                         float_leaf='rnn/layer_0/recurrent_kernel')
  out = tmp_path / 'lib'
  run = _eval(f'--artifact={path}', f'--export_c={out}')
  assert run.returncode == 2
  assert run.stderr.strip().splitlines() == [
      'error: artifact f.rnnc: rnn/layer_0/recurrent_kernel is float32: '
      'quantize the weights (methods quantize or kmeans) to run it in '
      'integers']
  assert not out.exists()
  # A directory holding anything else is never replaced.
  good, art = artifact('gru_q8_last')
  out.mkdir()
  (out / 'notes.txt').write_text('mine')
  with pytest.raises(InputError, match='not a previous C export'):
    c.export(art, good, str(out))
  assert os.listdir(out) == ['notes.txt']
  # A dynamic input scale has no C form.
  dyn, art = artifact('gru_dynamic')
  with pytest.raises(InputError, match="mode 'dynamic'"):
    c.export(art, dyn, str(tmp_path / 'dyn'))
  assert not (tmp_path / 'dyn').exists()


def test_a_missing_compiler_is_one_line(artifact, monkeypatch):
  path, art = artifact('gru_q8_last')
  monkeypatch.setenv('CC', 'no-such-compiler-here')
  with pytest.raises(InputError) as e:
    c.run(art, path, artifacts.batches('classification', limit=1))
  assert str(e.value) == ('--runtime=c: no C compiler found (set $CC or '
                          'install cc, e.g. gcc)')


def test_benchmark_runs_as_module(tmp_path):
  # `python -m benchmarks.c_runtime` as benchmarks/README.md shows it, at a
  # tiny count (no timing is checked).
  out = tmp_path / 'c_runtime.json'
  run = subprocess.run(
      [sys.executable, '-m', 'benchmarks.c_runtime', '--models', 'gru16',
       '--reps', '1', '--blocks', '3', '--repeats', '2', '--block', '1',
       '--student', str(tmp_path / 'none.rnnc'), '--json', str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  result = json.loads(out.read_text())['results']['gru16']
  assert result['c_step_us'] > 0 and result['jax_step_us'] > 0
  assert result['flash_bytes'] == result['weights_bytes'] + result[
      'code_bytes']
  assert 'gru16' in run.stdout
