"""deploy/onnx.py: ONNX graphs of artifacts, run by onnxruntime.

Every artifact here is a random tiny model on a small synthetic dataset (no
training: the tests compare runtimes, not accuracy), written with
`compression.export.write` from records built in numpy the way each method
stores its leaves (integer codes on a symmetric or asymmetric grid, a
codebook, kept positions, low-rank and tensor-train factors, a shared
factor, DCT coefficients, a unit-pruned smaller model); building them
compiles nothing, so the tests stay fast. The reference is the artifact's
own Flax model (`--runtime=jax`). Each chain's model reuses the structure
of one of the cell / pooling cases where it can, so the reference compiles
few programs. `write_artifact`, `CHAINS`, `METHOD_CASES` and `batches` are
shared with test_stablehlo.py.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import onnx
from onnx import helper
import pytest

from compression import accounting
from compression import dct
from compression import export
from compression import pruning
from compression import records
from compression import transforms
from compression.errors import InputError
from configs import common
import data
from deploy import float_jax
from deploy import onnx as onnx_lib
import models

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')

DATA = {
    'classification': {
        'name': 'synthetic_classification',
        'kwargs': {'num_train': 8, 'num_test': 20, 'min_len': 2, 'max_len': 8,
                   'features': 3, 'num_classes': 4},
        'eval_batch_size': 16},
    'forecasting': {
        'name': 'synthetic_forecast',
        'kwargs': {'length': 80, 'window': 8, 'horizon': 2},
        'eval_batch_size': 16},
    'language_model': {
        'name': 'synthetic_lm',
        'kwargs': {'seq_len': 9, 'num_train': 4, 'num_test': 6},
        'eval_batch_size': 8},
}


@functools.lru_cache(maxsize=None)
def dataset(task: str):
  return data.load(ml_collections.ConfigDict(DATA[task]))


# ----------------------------------------------------------------------------
# Stored forms, as the methods store them (numpy)


def quantize(w, bits, symmetric=True, per_channel=True):
  """(values, record) of w on a `bits`-bit grid, per channel (last axis)."""
  w = np.asarray(w, np.float32)
  axes = tuple(range(w.ndim - 1)) if per_channel else None
  keep = per_channel
  if symmetric:
    top = 2 ** (bits - 1) - 1
    scale = np.maximum(np.abs(w).max(axis=axes, keepdims=keep), 1e-6) / top
    zero, lo, hi = np.full_like(scale, top), 0, 2 * top
  else:
    lo_w = np.minimum(w.min(axis=axes, keepdims=keep), 0)
    hi_w = np.maximum(w.max(axis=axes, keepdims=keep), 0)
    scale = np.maximum(hi_w - lo_w, 1e-6) / (2 ** bits - 1)
    zero = np.clip(np.round(-lo_w / scale), 0, 2 ** bits - 1)
    lo, hi = 0, 2 ** bits - 1
  scale = np.asarray(scale, np.float32).reshape(-1)
  zero = np.asarray(zero, np.float32).reshape(-1)
  u = np.clip(np.round(w / scale) + zero, lo, hi).astype(np.int64)
  values = ((u.astype(np.float32) - zero) * scale).astype(np.float32)
  codes = records.Codes(u, bits, scale,
                        None if symmetric else zero.astype(np.uint8))
  return values, records.Record(codes=codes)


def share(w, clusters):
  """(values, record) of k-means weight sharing; exact zeros stay 0."""
  kept = w != 0
  book = np.linspace(w[kept].min(), w[kept].max(), clusters,
                     dtype=np.float32)
  index = np.abs(w[..., None] - book).argmin(-1)
  bits = max(1, int(np.ceil(np.log2(clusters))))
  values = np.where(kept, book[index], np.float32(0)).astype(np.float32)
  return values, records.Record(codebook=records.Codebook(index, bits, book))


def prune(w, sparsity):
  """(values, record) with the smallest `sparsity` of |w| removed."""
  mask = np.abs(w) > np.quantile(np.abs(w), sparsity)
  return (np.where(mask, w, np.float32(0)).astype(np.float32),
          records.Record(positions=records.positions_of_mask(mask)))


def dct_kept(w, keep, block, bits):
  """(values, record) of the largest DCT coefficients of w (method dct)."""
  br, bc = block if block else w.shape
  c = transforms.block_dct(np.asarray(w, np.float64), br, bc).astype(
      np.float32)
  mask = np.abs(c) >= np.quantile(np.abs(c), 1 - keep)
  rec = dct.encode(c, mask, br, bc, bits)
  if rec.codes is None:
    coef = rec.coefficients
  else:
    coef = np.zeros(c.size, np.float32)
    top = 2 ** (bits - 1) - 1
    coef[rec.positions] = (rec.codes.u[rec.positions].astype(np.float32)
                           - top) * rec.codes.scale[0]
  return transforms.inverse('dct', coef.reshape(c.shape), (br, bc)), rec


KERNELS = r'rnn/.*kernel|head/kernel|attention/kernel'
# name -> stages of (method, regex, form): every stored form a runtime
# meets. A form maps a float leaf to (its values, its record).
CHAINS = {
    'float': [],
    'q8': [('quantize', KERNELS, lambda w: quantize(w, 8))],
    'q4': [('quantize', KERNELS, lambda w: quantize(w, 4))],
    'q2': [('quantize', KERNELS, lambda w: quantize(w, 2))],
    'q3_asym_tensor': [('quantize', KERNELS, lambda w: quantize(
        w, 3, symmetric=False, per_channel=False))],
    'q5_asym_channel': [('quantize', '.*', lambda w: quantize(
        w, 5, symmetric=False))],
    'kmeans': [('kmeans', KERNELS, lambda w: share(w, 8))],
    'prune': [('prune', r'rnn/.*kernel', lambda w: prune(w, 0.8))],
    'prune_q4': [('prune', r'rnn/.*kernel', lambda w: prune(w, 0.6)),
                 ('quantize', KERNELS, lambda w: quantize(w, 4))],
    # Unsigned codes of removed weights: per-channel zero points as fill.
    'prune95_q3_asym': [
        ('prune', r'rnn/.*kernel', lambda w: prune(w, 0.95)),
        ('quantize', KERNELS, lambda w: quantize(w, 3, symmetric=False))],
    # deep_compression.py: prune, share the survivors' values, 8-bit biases.
    'deep_compression': [
        ('prune', KERNELS, lambda w: prune(w, 0.8)),
        ('kmeans', KERNELS, lambda w: share(w, 16)),
        ('quantize', '.*bias', lambda w: quantize(w, 8, per_channel=False))],
    'dct': [('dct', r'.*recurrent_kernel',
             lambda w: dct_kept(w, 0.3, (4, 4), 0))],
    'dct_whole_6bit': [('dct', r'.*recurrent_kernel',
                        lambda w: dct_kept(w, 0.5, None, 6))],
    # Structure, not records: factors, cores, a shared factor, fewer units.
    'lowrank': [],
    'lowrank_shared_q8': [('quantize', r'.*kernel/(u|v)',
                           lambda w: quantize(w, 8))],
    'tt': [],
    'tt_q8': [('quantize', r'.*kernel/core_\d+', lambda w: quantize(w, 8))],
    'unit': [],
}
# Every cell, one and two layers, every pooling (each twice).
CELL_CASES = [('rnn', 1, 'last'), ('rnn', 2, 'mean'), ('lstm', 1, 'attention'),
              ('lstm', 2, 'last'), ('gru', 1, 'mean'), ('gru', 2, 'attention')]
# chain -> its model (cell, layers, pooling): every cell meets integer codes,
# codebooks and removed weights.
METHOD_CASES = {
    'q8': ('gru', 2, 'attention'),
    'q4': ('lstm', 1, 'attention'),
    'q2': ('gru', 1, 'last'),
    'q3_asym_tensor': ('gru', 1, 'mean'),
    'q5_asym_channel': ('lstm', 2, 'last'),
    'kmeans': ('lstm', 1, 'attention'),
    'prune': ('rnn', 2, 'mean'),
    'prune_q4': ('gru', 2, 'attention'),
    'prune95_q3_asym': ('lstm', 2, 'last'),
    'deep_compression': ('gru', 1, 'mean'),
    'dct': ('gru', 1, 'mean'),
    'dct_whole_6bit': ('rnn', 1, 'last'),
    'lowrank': ('gru', 1, 'last'),
    'lowrank_shared_q8': ('gru', 2, 'last'),
    'tt': ('lstm', 1, 'last'),
    'tt_q8': ('lstm', 1, 'last'),
    'unit': ('lstm', 2, 'last'),
}


def method_case(chain):
  """`write_artifact` arguments of a chain's model (METHOD_CASES)."""
  cell, layers, pooling = METHOD_CASES[chain]
  return dict(chain=chain, cell=cell, layers=layers, pooling=pooling)


def _random(shapes, seed):
  """Random float32 leaves at a scale where every gate and bias matters."""
  rng = np.random.default_rng(seed)
  return {p: (rng.normal(size=s) * (1.5 / np.sqrt(s[0]) if len(s) == 2
                                    else 0.3)).astype(np.float32)
          for p, s in shapes.items()}


def _factor(flat, chain, cell, rng):
  """Low-rank / tensor-train factors in place of kernels; shared records."""
  shared = {}
  for p in [p for p in flat if re.fullmatch(r'rnn/.*kernel|head/kernel', p)]:
    k, n = flat[p].shape
    if chain.startswith('lowrank'):
      r = 2
      flat[f'{p}/u'] = (rng.normal(size=(k, r)) / np.sqrt(k)).astype(
          np.float32)
      flat[f'{p}/v'] = rng.normal(size=(r, n)).astype(np.float32)
    else:
      g = len(onnx_lib.ONNX_GATES[cell]) if p.startswith('rnn') else 1
      m1 = next(d for d in range(2, k + 1) if k % d == 0)
      n1 = 2 * g if n % (2 * g) == 0 else n
      flat[f'{p}/core_0'] = rng.normal(size=(1, m1, n1, 2)).astype(
          np.float32)
      flat[f'{p}/core_1'] = (rng.normal(size=(2, k // m1, n // n1, 1))
                             / np.sqrt(k)).astype(np.float32)
    del flat[p]
  if chain == 'lowrank_shared_q8':
    # Layer 0's recurrent kernel and layer 1's input kernel share u.
    src = 'rnn/layer_0/recurrent_kernel/u'
    flat['rnn/layer_1/input_kernel/u'] = flat[src]
    shared['rnn/layer_1/input_kernel/u'] = records.Record(ref=src)
  return shared


def write_artifact(path, chain='float', cell='gru', layers=1, pooling='last',
                   task='classification', hidden=8, hidden_state_bits=0,
                   seed=0):
  """Writes the artifact of a random tiny model in a chain's stored form.

  Args:
    path: the file.
    chain: a key of CHAINS.
    cell, layers, pooling, task, hidden: the model.
    hidden_state_bits: > 0 quantizes the hidden state inside the model.
    seed: parameter seed.

  Returns:
    `export.write`'s report (fixed-width coding).
  """
  ds = dataset(task)
  mc = common.base_config().model
  mc.cell, mc.hidden, mc.layers, mc.pooling = cell, hidden, layers, pooling
  mc.embed_dim = 5
  model = models.make(mc, task, ds.info)
  x, lengths = ds.train['x'][:1], ds.train['lengths'][:1]
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x,
                                             lengths))['params']
  flat = _random({p: v.shape for p, v in accounting.flatten(
      jax.tree_util.tree_map(lambda a: np.zeros(a.shape, np.float32),
                             shapes)).items()}, seed)
  rng = np.random.default_rng(seed + 1)
  methods, exports = [], []
  if chain == 'unit':
    # Units 2 and 5 removed everywhere, then the smaller model stored, as
    # `export.run_contents` stores unit pruning.
    nested = export._nest(flat)  # pylint: disable=protected-access
    g = models.cells.CELL_SPECS[cell].gates
    for i in range(layers):
      lay = nested['rnn'][f'layer_{i}']
      for dead in (2, 5):
        cols = [k * hidden + dead for k in range(g)]
        for name in ('input_kernel', 'recurrent_kernel'):
          lay[name][:, cols] = 0
        lay['bias'][cols] = 0
        lay['recurrent_kernel'][dead] = 0
        if 'recurrent_bias' in lay:
          lay['recurrent_bias'][dead] = 0
        if i + 1 < layers:
          nested['rnn'][f'layer_{i + 1}']['input_kernel'][dead] = 0
        for name in ('head', 'attention'):
          if name in nested:
            nested[name]['kernel'][dead] = 0
    nested, kept = pruning.shrink(nested, cell)
    flat, mc.hidden = accounting.flatten(nested), int(kept)
    methods, exports = ['prune'], [{}]
  shared = _factor(flat, chain, cell, rng) if chain.startswith(
      ('lowrank', 'tt')) else {}
  for method, regex, form in CHAINS[chain]:
    stage = {}
    for p in sorted(flat):
      if re.fullmatch(regex, p) and p not in shared:
        flat[p], stage[p] = form(flat[p])
    methods.append(method)
    exports.append(stage)
  if shared:
    exports = [{**e, **shared} for e in exports] or [shared]
    methods = methods or ['lowrank']
  hidden_state = common.base_config().compression.hidden_state
  hidden_state.bits = hidden_state_bits
  return export.write(
      str(path), dense=export._nest(flat),  # pylint: disable=protected-access
      exports=exports, methods=methods, model_cfg=mc, task=task,
      info=ds.info, data_cfg=ml_collections.ConfigDict(DATA[task]),
      hidden_state=hidden_state, label=f'test_{chain}', coding='fixed')


def batches(task):
  """The test split's batches, and one with garbage in its padded steps.

  The extra batch's lengths include 1, the full length and 0 (an empty
  sequence: zero state, zero pooled features).
  """
  ds = dataset(task)
  out = list(data.eval_batches(ds.test, DATA[task]['eval_batch_size']))
  rng = np.random.default_rng(1)
  first = out[0]
  lengths = first['lengths'].copy()
  lengths[:5] = [1, first['x'].shape[1], 2, 3, 0]
  if task == 'language_model':
    x = rng.integers(0, ds.info['vocab_size'], first['x'].shape)
  else:
    x = rng.normal(size=first['x'].shape) * 3
  out.append({'x': x.astype(first['x'].dtype), 'lengths': lengths,
              'weight': first['weight']})
  return out


def check_outputs(got, want, classification, atol=1e-4):
  """Outputs within `atol` of the reference, the same predicted classes."""
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert g.shape == w.shape and g.dtype == np.float32
    np.testing.assert_allclose(g, w, rtol=0, atol=atol)
    if classification:
      np.testing.assert_array_equal(g.argmax(-1), w.argmax(-1))


@pytest.fixture(scope='module')
def artifacts(tmp_path_factory):
  """Builds each artifact once: (path, write report) per arguments."""
  root = tmp_path_factory.mktemp('onnx')
  made = {}

  def make(**kw):
    key = tuple(sorted(kw.items()))
    if key not in made:
      path = str(root / f'm{len(made)}.rnnc')
      made[key] = (path, write_artifact(path, **kw))
    return made[key]
  return make


def _onnx_matches_jax(path, task='classification'):
  art = export.read(path)
  bs = batches(task)
  got, extras = onnx_lib.run(art, path, bs)
  want, _ = float_jax.run(art, path, bs)
  check_outputs(got, want, task == 'classification')
  return art, extras


def _operator(model, cell):
  """The graph's recurrent operator nodes."""
  return [n for n in model.graph.node
          if n.op_type == onnx_lib.OPERATORS[cell]]


@pytest.mark.parametrize('cell,layers,pooling', CELL_CASES)
def test_cells_layers_and_poolings_match_jax(artifacts, cell, layers,
                                             pooling):
  path, _ = artifacts(cell=cell, layers=layers, pooling=pooling)
  art, extras = _onnx_matches_jax(path)
  model = onnx_lib.build(art)
  assert len(_operator(model, cell)) == layers  # ONNX's own operator.
  assert extras['onnx_bytes'] == len(model.SerializeToString())


@pytest.mark.parametrize('task', ['forecasting', 'language_model'])
def test_forecaster_and_language_model_match_jax(artifacts, task):
  # Every leaf of the language model on an asymmetric per-channel grid, its
  # embedding included.
  path, _ = artifacts(task=task, chain='q8' if task == 'forecasting'
                      else 'q5_asym_channel', layers=2)
  art, _ = _onnx_matches_jax(path, task)
  if task == 'language_model':
    assert art.records['embed/embedding'].codes.zero_point is not None


def _initializers(model):
  return {t.name: t for t in model.graph.initializer}


@pytest.mark.parametrize('chain', sorted(METHOD_CASES))
def test_every_method_matches_jax_and_stays_compressed(artifacts, chain):
  cell = METHOD_CASES[chain][0]
  path, report = artifacts(**method_case(chain))
  art, _ = _onnx_matches_jax(path)
  model = onnx_lib.build(art)
  stored = sum(len(t.raw_data) for t in model.graph.initializer)
  # The graph stores what the artifact does, at ONNX's integer widths (a
  # 3- or 5-bit code takes 4 or 8 bits), and float32 coefficients where the
  # artifact quantized DCT coefficients.
  payload = report['fixed_width_bytes']
  if chain == 'dct_whole_6bit':
    payload *= 32 / 6
  assert stored <= 1.6 * payload + 64, (stored, payload)
  ops = {n.op_type for n in model.graph.node}
  flat = {p: v.shape for p, v in accounting.flatten(art.params).items()}
  kernel = 'rnn/layer_0/recurrent_kernel'
  tensor = _initializers(model).get(kernel)
  want_type = {'q8': onnx.TensorProto.INT8, 'q4': onnx.TensorProto.INT4,
               'q3_asym_tensor': onnx.TensorProto.UINT4,
               'q5_asym_channel': onnx.TensorProto.UINT8,
               'prune95_q3_asym': onnx.TensorProto.UINT4,
               'kmeans': onnx.TensorProto.UINT4}
  if chain in want_type:
    assert tensor.data_type == want_type[chain]
    if len(tensor.dims) == 2:
      assert list(tensor.dims) == [flat[kernel][1], flat[kernel][0]]  # W^T.
    else:  # Its zero codes left out, where that is smaller.
      assert 'ScatterND' in ops and tensor.dims[0] < np.prod(flat[kernel])
    assert ('Gather' if chain == 'kmeans' else 'DequantizeLinear') in ops
  if chain in ('prune', 'prune_q4', 'prune95_q3_asym', 'deep_compression',
               'q2'):
    # Only the kept values, scattered: fewer than the kernel's elements.
    assert 'ScatterND' in ops
    assert len(tensor.dims) == 1 and tensor.dims[0] < np.prod(flat[kernel])
  if chain.startswith('lowrank'):
    # The factors, never their (H, G*H) product.
    u, v = flat[f'{kernel}/u'], flat[f'{kernel}/v']
    assert max(np.prod(t.dims) for t in model.graph.initializer) < (
        u[0] * v[1])
    assert _initializers(model)[f'{kernel}/v'].data_type == (
        onnx.TensorProto.INT8 if chain.endswith('q8')
        else onnx.TensorProto.FLOAT)
  if chain.startswith('dct'):
    assert {'Einsum', 'Cos'} <= ops and kernel in _initializers(model)
  if chain.startswith('tt'):
    assert f'{kernel}/core_1' in _initializers(model) and 'Einsum' in ops
  if chain == 'unit':
    # The physically smaller model: 6 of 8 units.
    for node in _operator(model, cell):
      assert helper.get_node_attr_value(node, 'hidden_size') == 6


def test_shared_low_rank_factor_is_one_tensor(artifacts):
  path, _ = artifacts(**method_case('lowrank_shared_q8'))
  art = export.read(path)
  assert art.records['rnn/layer_1/input_kernel/u'].ref is not None
  model = onnx_lib.build(art)
  names = set(_initializers(model))
  assert 'rnn/layer_0/recurrent_kernel/u' in names
  assert 'rnn/layer_1/input_kernel/u' not in names


def test_sizes_shrink_with_bits_and_pruning(tmp_path):
  # At the README models' width (GRU-64), where the graph's own bytes no
  # longer dominate.
  sizes = {}
  for chain in ('float', 'q8', 'q4', 'prune'):
    path = tmp_path / f'{chain}.rnnc'
    write_artifact(path, chain=chain, hidden=64)
    sizes[chain] = len(onnx_lib.serialize(export.read(str(path))))
  assert sizes['q4'] <= sizes['float'] / 5, sizes
  assert sizes['q8'] <= sizes['float'] / 3, sizes
  assert sizes['prune'] < sizes['float'] * 0.6, sizes


def _leaf_graph(s):
  """(model, its tensor of a Stored form) through onnxruntime."""
  g = onnx_lib._Graph()  # pylint: disable=protected-access
  out = onnx_lib._emit(g, 'w', s)  # pylint: disable=protected-access
  g.op('Identity', [out], name='y')
  opset = [helper.make_opsetid('', onnx_lib.OPSET)]
  model = helper.make_model(
      helper.make_graph(g.nodes, 'leaf', [], [helper.make_tensor_value_info(
          'y', onnx.TensorProto.FLOAT, list(s.grid.shape))],
                        initializer=g.initializers),
      opset_imports=opset, ir_version=helper.find_min_ir_version_for(opset))
  onnx.checker.check_model(model)
  return model, onnx_lib.session(model.SerializeToString()).run(['y'], {})[0]


def test_stored_forms_compute_exactly():
  rng = np.random.default_rng(0)
  # Symmetric 4-bit codes per channel, one of them 15 (2^bits - 1): its
  # signed code 8 does not fit int4, so the leaf keeps unsigned codes.
  u = rng.integers(0, 15, (5, 6))
  u[2, 3] = 15
  scale = rng.uniform(0.1, 1, 6).astype(np.float32)
  dense = ((u - 7) * scale).astype(np.float32)
  s = onnx_lib.stored_form(records.Record(codes=records.Codes(
      u.reshape(-1), 4, scale)), dense)
  model, got = _leaf_graph(s)
  np.testing.assert_array_equal(got, dense)
  assert _initializers(model)['w'].data_type == onnx.TensorProto.UINT4
  u[2, 3] = 14  # Now every code fits: signed int4, no zero point stored.
  dense = ((u - 7) * scale).astype(np.float32)
  s = onnx_lib.stored_form(records.Record(codes=records.Codes(
      u.reshape(-1), 4, scale)), dense)
  model, got = _leaf_graph(s)
  np.testing.assert_array_equal(got, dense)
  assert _initializers(model)['w'].data_type == onnx.TensorProto.INT4
  assert 'w:zero_point' not in _initializers(model)
  # Asymmetric 3-bit codes per channel, most of them removed: the kept codes
  # scattered into each channel's zero point, in the GRU's gate layout.
  zero = rng.integers(0, 8, 6)
  u = rng.integers(0, 8, (5, 6))
  keep = rng.random((5, 6)) < 0.15
  u = np.where(keep, u, zero)
  dense = ((u - zero) * scale).astype(np.float32)
  positions = np.flatnonzero(keep)
  rec = records.Record(positions=positions, codes=records.Codes(
      u.reshape(-1)[positions], 3, scale, zero.astype(np.uint8)))
  gates = onnx_lib.Layout('gates', (1, 0, 2))
  s = gates.apply(onnx_lib.stored_form(rec, dense))
  assert onnx_lib.store_sparse(s)
  model, got = _leaf_graph(s)
  np.testing.assert_array_equal(got, gates.array(dense))
  assert 'ScatterND' in {n.op_type for n in model.graph.node}


@pytest.mark.parametrize('stride,fmt,bits', [
    (2, 'bitmap', 1), (3, 'gaps', 2), (10, 'gaps', 4), (200, 'gaps', 8)])
def test_kept_positions_in_every_encoding(stride, fmt, bits):
  # Float weights, every `stride`-th kept: each position encoding decoded
  # by the graph.
  w = np.zeros((20, 50), np.float32)
  w.reshape(-1)[stride // 2::stride] = np.arange(1, 1 + 1000 // stride)
  s = onnx_lib.stored_form(None, w)
  assert onnx_lib.position_code(s.nonzero)[:2] == (fmt, bits)
  model, got = _leaf_graph(s)
  np.testing.assert_array_equal(got, w)
  # The kept values are the largest tensor: no dense one.
  assert max(np.prod(t.dims) for t in model.graph.initializer) == (
      np.count_nonzero(w))


def test_stored_form_is_exact_in_any_layout():
  # A 4x6 kernel of two 3-wide gates, per-channel symmetric 4-bit codes,
  # two elements removed by pruning.
  rng = np.random.default_rng(0)
  u = rng.integers(0, 15, (4, 6))
  scale = rng.uniform(0.1, 1, 6).astype(np.float32)
  dense = ((u - 7) * scale).astype(np.float32)
  dense.reshape(-1)[[3, 9]] = 0
  positions = np.setdiff1d(np.arange(24), [3, 9])
  rec = records.Record(
      positions=positions, codes=records.Codes(
          u.reshape(-1)[positions], 4, scale))
  s = onnx_lib.stored_form(rec, dense)
  np.testing.assert_array_equal(s.decode(), dense)
  assert s.symmetric and s.grid.reshape(-1)[3] == 7  # Zero code there.
  gates = onnx_lib.Layout('gates', (1, 0))
  moved = gates.apply(s)
  want = np.concatenate([dense[:, 3:], dense[:, :3]], axis=1).T
  np.testing.assert_array_equal(moved.decode(), want)


def test_position_code_picks_the_smaller_form():
  sparse = np.zeros(1000, bool)
  sparse[[5, 400, 999]] = True
  fmt, b, sym = onnx_lib.position_code(sparse)
  assert fmt == 'gaps' and onnx_lib.position_bytes((fmt, b, sym)) < 125
  dense = np.ones(1000, bool)
  dense[::7] = False
  assert onnx_lib.position_code(dense)[0] == 'bitmap'


def test_zeros_are_left_out_only_where_that_is_smaller():
  w = np.zeros((10, 10), np.float32)
  w.reshape(-1)[::10] = 1.5  # 10 of 100 kept: 40 + 13 bytes against 400.
  assert onnx_lib.store_sparse(onnx_lib.stored_form(None, w))
  w.reshape(-1)[:99] = 2.0  # 99 kept: 396 + a 13-byte bitmap against 400.
  assert not onnx_lib.store_sparse(onnx_lib.stored_form(None, w))
  # Removed weights of a codebook without a 0 centroid have no index.
  book = records.Record(codebook=records.Codebook(
      np.zeros(99, np.int64), 1, np.array([2.0, 3.0], np.float32)),
      positions=np.arange(1, 100))
  w = np.full((10, 10), 2.0, np.float32)
  w[0, 0] = 0
  s = onnx_lib.stored_form(book, w)
  assert onnx_lib.store_sparse(s)
  np.testing.assert_array_equal(s.decode(), w)


def _eval(*args):
  return subprocess.run([sys.executable, 'eval.py', *args], cwd=ROOT,
                        capture_output=True, text=True)


def test_cli_export_and_runtime(artifacts):
  # README's command: the file written and the test split evaluated.
  path, _ = artifacts(**method_case('prune_q4'))
  out = os.path.join(os.path.dirname(path), 'model.onnx')
  proc = _eval(f'--artifact={path}', f'--export_onnx={out}', '--runtime=onnx')
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(out, 'rb') as f:
    blob = f.read()
  assert f'"bytes": {len(blob)}' in proc.stdout
  with open(f'{path}.eval.onnx.json') as f:
    report = json.load(f)
  import eval as eval_lib  # pylint: disable=g-import-not-at-top
  want = eval_lib.evaluate_artifact(path, 'jax')
  assert report['runtime'] == 'onnx' and report['onnx_bytes'] == len(blob)
  assert report['test_accuracy'] == want['test_accuracy']
  assert abs(report['test_loss'] - want['test_loss']) < 1e-5
  # The file runs on its own.
  b = batches('classification')[-1]
  got = onnx_lib.session(blob).run(None, {'x': b['x'],
                                          'lengths': b['lengths']})[0]
  want_out, _ = float_jax.run(export.read(path), path, [b])
  check_outputs([got], want_out, True)


def _fake_artifact(path, dtype='float32', **hooks):
  """A read artifact with another model dtype or in-model quantizers."""
  art = export.read(path)
  header = {**art.header, 'model': {**art.header['model'], 'dtype': dtype}}
  model = art.model.clone(**hooks) if hooks else art.model
  return art._replace(header=header, model=model)


def test_what_onnx_cannot_express_is_refused(artifacts):
  path, _ = artifacts(cell='gru', layers=1, pooling='mean')
  art = _fake_artifact(path, gate_fn=lambda a, fn: fn(a))
  with pytest.raises(InputError, match=r'compression\.activations.*gate_fn'):
    onnx_lib.build(art)
  with pytest.raises(InputError, match="model.dtype 'bfloat16'"):
    onnx_lib.build(_fake_artifact(path, 'bfloat16'))
  # A parameter the graph would leave out is refused, not dropped.
  art = export.read(path)
  extra = art._replace(params={**art.params, 'extra': {'kernel': np.ones(
      (2, 2), np.float32)}})
  with pytest.raises(InputError, match='no place for the parameters '
                     'extra/kernel$'):
    onnx_lib.build(extra)


def test_inexpressible_model_is_one_line_and_writes_nothing(tmp_path):
  path = str(tmp_path / 'model.rnnc')
  write_artifact(path, hidden_state_bits=8)
  out = tmp_path / 'model.onnx'
  proc = _eval(f'--artifact={path}', f'--export_onnx={out}')
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and 'compression.hidden_state' in lines[0], lines
  assert lines[0].startswith('error: artifact model.rnnc: ONNX cannot')
  assert not out.exists()
  # An existing file at PATH is left as it was, and no temporary remains.
  out.write_bytes(b'keep')
  art = export.read(path)
  with pytest.raises(InputError, match='hidden_state'):
    onnx_lib.export(art, path, str(out))
  assert out.read_bytes() == b'keep'
  assert sorted(os.listdir(tmp_path)) == ['model.onnx', 'model.rnnc']
