"""deploy/stablehlo.py: serialized StableHLO programs of artifacts.

The artifacts are test_onnx.py's (`write_artifact`: random tiny models in
every stored form, no training). A program is checked after a round trip
through its bytes (`jax.export.deserialize`), against the artifact's own
Flax model; `--runtime=stablehlo` runs it in a fresh process. Every
compiled program costs time, so the stored forms of all the methods are
decoded by one program and compared with the artifacts' parameters (the
model that runs them is the same code in the program and in the
reference), while whole models run for every cell, pooling and task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from compression import accounting
from compression import export
from deploy import float_jax
from deploy import stablehlo
from deploy import stablehlo_main
from tests.deploy import test_onnx as cases

ROOT = cases.ROOT


@pytest.fixture(scope='module')
def artifacts(tmp_path_factory):
  """Builds each artifact once: its path per arguments."""
  root = tmp_path_factory.mktemp('stablehlo')
  made = {}

  def make(**kw):
    key = tuple(sorted(kw.items()))
    if key not in made:
      made[key] = str(root / f'm{len(made)}.rnnc')
      cases.write_artifact(made[key], **kw)
    return made[key]
  return make


def _outputs(blob, batches):
  exported = jax.export.deserialize(blob)
  call = jax.jit(exported.call)
  return [np.asarray(call(b['x'], b['lengths'])) for b in batches]


def _matches_jax(path, task='classification', atol=1e-5):
  art = export.read(path)
  batches = cases.batches(task)
  blob = stablehlo.serialize(art)
  want, _ = float_jax.run(art, path, batches)
  cases.check_outputs(_outputs(blob, batches), want,
                      task == 'classification', atol=atol)
  return art, blob


@pytest.mark.parametrize('cell,layers,pooling', cases.CELL_CASES)
def test_cells_layers_and_poolings_match_jax(artifacts, cell, layers,
                                             pooling):
  _matches_jax(artifacts(cell=cell, layers=layers, pooling=pooling))


@pytest.mark.parametrize('task', ['forecasting', 'language_model'])
def test_forecaster_and_language_model_match_jax(artifacts, task):
  _matches_jax(artifacts(task=task, layers=2, chain='q4' if task ==
                         'forecasting' else 'q5_asym_channel'), task)


def test_every_method_decodes_exactly_in_the_program(artifacts):
  arts = {chain: export.read(artifacts(**cases.method_case(chain)))
          for chain in sorted(cases.METHOD_CASES)}
  leaves = {chain: stablehlo.decoders(art) for chain, art in arts.items()}
  exported = jax.export.export(jax.jit(lambda: {
      chain: stablehlo.parameters(d) for chain, d in leaves.items()}))()
  got = jax.export.deserialize(exported.serialize()).call()
  for chain, art in arts.items():
    want = accounting.flatten(art.params)
    have = accounting.flatten(jax.tree_util.tree_map(np.asarray, got[chain]))
    assert sorted(have) == sorted(want), chain
    for path, value in want.items():
      if art.records.get(path) and art.records[path].transform:
        # The inverse DCT, computed in float32 in the program.
        np.testing.assert_allclose(have[path], value, rtol=0, atol=1e-6,
                                   err_msg=f'{chain} {path}')
      else:
        np.testing.assert_array_equal(have[path], value,
                                      err_msg=f'{chain} {path}')
  # A factor two kernels share is one constant, decoded once.
  shared = leaves['lowrank_shared_q8']
  assert (shared['rnn/layer_1/input_kernel/u']
          is shared['rnn/layer_0/recurrent_kernel/u'])


def test_hidden_state_quantizers_are_in_the_program(artifacts):
  # What ONNX cannot express: the state quantized at every step.
  path = artifacts(chain='q8', hidden_state_bits=2)
  art, _ = _matches_jax(path)
  plain = export.read(artifacts(chain='q8'))
  b = cases.batches('classification')[:1]
  # The quantizer changes the outputs, so the match above saw it.
  assert not np.allclose(float_jax.run(art, path, b)[0][0],
                         float_jax.run(plain, '', b)[0][0], atol=1e-3)


def test_batch_size_and_length_are_symbolic(artifacts):
  path = artifacts(**cases.method_case('prune_q4'))
  art = export.read(path)
  exported = jax.export.deserialize(stablehlo.serialize(art))
  assert [str(d) for d in exported.in_avals[0].shape[:2]] == ['b', 't']
  # Neither the batch size nor the length the other tests run.
  full = cases.batches('classification')[-1]
  b = {'x': full['x'][:3, :4], 'lengths': np.minimum(full['lengths'][:3], 4)}
  want, _ = float_jax.run(art, path, [b])
  cases.check_outputs([np.asarray(exported.call(b['x'], b['lengths']))],
                      want, True, atol=1e-5)


def test_parameters_are_stored_compressed(tmp_path):
  sizes = {}
  for chain in ('float', 'q4', 'prune'):
    path = tmp_path / f'{chain}.rnnc'
    cases.write_artifact(path, chain=chain, hidden=64)
    sizes[chain] = len(stablehlo.serialize(export.read(str(path))))
  assert sizes['q4'] < sizes['float'] / 2, sizes
  assert sizes['prune'] < sizes['float'] * 0.7, sizes


def test_pack_round_trip():
  rng = np.random.default_rng(0)
  unpack = jax.jit(stablehlo.unpack, static_argnums=(1, 2))
  for width in (1, 2, 4, 8):
    codes = rng.integers(0, 1 << width, 37)
    packed = stablehlo.pack(codes, width)
    assert packed.dtype == np.uint8 and packed.size == -(-37 * width // 8)
    np.testing.assert_array_equal(np.asarray(unpack(packed, width, 37)),
                                  codes)


def test_the_fresh_process_check_sees_project_modules(monkeypatch):
  # This process has imported the project; the child must not have.
  root = os.path.abspath(ROOT)
  found = stablehlo_main.project_modules(root)
  assert 'deploy.stablehlo' in found and 'compression.export' in found
  assert stablehlo_main.project_modules('/nonexistent') == []
  # Packages installed in an environment inside the repository do not count.
  for name, where in (('fake_installed', ('.venv', 'lib', 'python3',
                                          'site-packages')),
                      ('fake_project', ('tools',))):
    module = types.ModuleType(name)
    module.__file__ = os.path.join(root, *where, f'{name}.py')
    monkeypatch.setitem(sys.modules, name, module)
  found = stablehlo_main.project_modules(root)
  assert 'fake_project' in found and 'fake_installed' not in found


def test_cli_export_and_runtime(artifacts):
  # README's command: the file written, the test split evaluated by the
  # program in a fresh process.
  path = artifacts(**cases.method_case('deep_compression'))
  out = os.path.join(os.path.dirname(path), 'model.stablehlo')
  proc = subprocess.run(
      [sys.executable, 'eval.py', f'--artifact={path}',
       f'--export_stablehlo={out}', '--runtime=stablehlo'],
      cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(out, 'rb') as f:
    blob = f.read()
  assert f'"bytes": {len(blob)}' in proc.stdout
  with open(f'{path}.eval.stablehlo.json') as f:
    report = json.load(f)
  import eval as eval_lib  # pylint: disable=g-import-not-at-top
  want = eval_lib.evaluate_artifact(path, 'jax')
  assert report['runtime'] == 'stablehlo'
  # The same bytes from every process (no source locations in them).
  art = export.read(path)
  assert report['stablehlo_bytes'] == len(blob)
  assert blob == stablehlo.serialize(art)
  assert report['test_accuracy'] == want['test_accuracy']
  assert abs(report['test_loss'] - want['test_loss']) < 1e-6
  batches = cases.batches('classification')
  want_out, _ = float_jax.run(art, path, batches)
  cases.check_outputs(_outputs(blob, batches), want_out, True, atol=1e-5)
