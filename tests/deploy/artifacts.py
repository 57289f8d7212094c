"""Small quantized artifacts for the integer and C runtime tests.

`write(path, ...)` draws a tiny random model for a synthetic dataset,
stores its kernels as records made here in numpy (codes, codebooks,
positions: the forms the compression methods export, in milliseconds and
without training: the tests compare runtimes, not accuracy) and writes the
artifact with an `activations` header key from
`deploy.integer.calibrate_input`, so eval.py can evaluate it alone. `add_header_keys` rewrites an existing artifact with
extra header keys (a new checksum; the payload is unchanged).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from compression import accounting
from compression import export
from compression import files
from compression import pruning
from compression import records
from compression import transforms
from configs import common
import data
from deploy import integer
import models

DATA = {
    'classification': {
        'name': 'synthetic_classification',
        'kwargs': {'num_train': 48, 'num_test': 24, 'min_len': 3,
                   'max_len': 9, 'features': 3, 'num_classes': 4},
        'eval_batch_size': 16},
    'forecasting': {
        'name': 'synthetic_forecast',
        'kwargs': {'length': 120, 'window': 8, 'horizon': 2},
        'eval_batch_size': 16},
    'language_model': {
        'name': 'synthetic_lm',
        'kwargs': {'seq_len': 10, 'num_train': 16, 'num_test': 8},
        'eval_batch_size': 8},
}


def dataset(task: str) -> Any:
  return data.load(ml_collections.ConfigDict(DATA[task]))


def _model_cfg(cell, hidden, layers, pooling, embed_dim=6):
  mc = common.base_config().model
  mc.cell, mc.hidden, mc.layers, mc.pooling = cell, hidden, layers, pooling
  mc.embed_dim = embed_dim
  return mc


def _numpy_params(cell: str, hidden: int, layers: int, pooling: str,
                  task: str, info: dict, rng: np.random.Generator,
                  embed_dim: int = 6) -> dict:
  """Random parameters in the layout of `models` (see models/__init__.py)."""
  g = models.cells.CELL_SPECS[cell].gates
  k = embed_dim if task == 'language_model' else info['input_dim']
  out = {'rnn': {}}
  for i in range(layers):
    fan = k if i == 0 else hidden
    lay = {'input_kernel': rng.normal(0, 1.5 / np.sqrt(fan), (fan, g * hidden)),
           'recurrent_kernel': rng.normal(0, 1.5 / np.sqrt(hidden),
                                          (hidden, g * hidden)),
           'bias': rng.normal(0, 0.3, g * hidden)}
    if cell == 'gru':
      lay['recurrent_bias'] = rng.normal(0, 0.3, hidden)
    out['rnn'][f'layer_{i}'] = lay
  n_out = {'classification': 'num_classes', 'forecasting': 'horizon',
           'language_model': 'vocab_size'}[task]
  out['head'] = {'kernel': rng.normal(0, 1.5 / np.sqrt(hidden),
                                      (hidden, info[n_out])),
                 'bias': rng.normal(0, 0.3, info[n_out])}
  if task == 'classification' and pooling == 'attention':
    out['attention'] = {'kernel': rng.normal(0, 2.0 / np.sqrt(hidden),
                                             (hidden, 1))}
  if task == 'language_model':
    out['embed'] = {'embedding': rng.normal(0, 1.0, (info['vocab_size'],
                                                     embed_dim))}
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), out)


def quantize_record(w: np.ndarray, bits: int, symmetric: bool = True,
                    per_channel: bool = True, keep: np.ndarray | None = None
                    ) -> tuple[Any, np.ndarray]:
  """(Record with codes, the dense leaf it decodes to): numpy quantization."""
  w = np.asarray(w, np.float32)
  axes = tuple(range(w.ndim - 1)) if per_channel else None
  if symmetric:
    qmax = 2 ** (bits - 1) - 1
    top = np.max(np.abs(w), axis=axes)
    scale = np.where(top > 0, top / qmax, 1).astype(np.float32)
    zp = np.full(np.shape(scale), qmax, np.float32)
    u = np.clip(np.round(w / scale) + qmax, 0, 2 * qmax)
    zero_point = None
  else:
    lo = np.minimum(np.min(w, axis=axes), 0)
    hi = np.maximum(np.max(w, axis=axes), 0)
    scale = np.where(hi > lo, (hi - lo) / (2 ** bits - 1), 1).astype(
        np.float32)
    zp = np.clip(np.round(-lo / scale), 0, 2 ** bits - 1).astype(np.float32)
    u = np.clip(np.round(w / scale) + zp, 0, 2 ** bits - 1)
    zero_point = np.atleast_1d(zp).astype(np.uint8)
  scale = np.atleast_1d(scale).astype(np.float32)
  zp = np.atleast_1d(zp)
  ch = (np.arange(w.size) % w.shape[-1]) if scale.size > 1 else np.zeros(
      w.size, np.int64)
  dense = ((u.reshape(-1).astype(np.float32) - zp[ch]) * scale[ch]).astype(
      np.float32).reshape(w.shape)
  positions = None
  if keep is not None:
    positions = records.positions_of_mask(keep)
    dense = np.where(keep, dense, np.float32(0)).astype(np.float32)
  rec = records.Record(positions=positions, codes=records.Codes(
      u=u.astype(np.uint8), bits=bits, scale=scale, zero_point=zero_point))
  return rec, dense


def codebook_record(w: np.ndarray, bits: int,
                    keep: np.ndarray | None = None) -> tuple[Any, np.ndarray]:
  """(Record with a codebook of 2^bits values, its dense leaf)."""
  w = np.asarray(w, np.float32)
  vals = w[keep] if keep is not None else w.reshape(-1)
  book = np.quantile(vals, np.linspace(0, 1, 2 ** bits)).astype(np.float32)
  index = np.argmin(np.abs(w.reshape(-1, 1) - book[None]), axis=1)
  dense = book[index].reshape(w.shape)
  positions = None
  if keep is not None:
    positions = records.positions_of_mask(keep)
    dense = np.where(keep, dense, np.float32(0)).astype(np.float32)
  rec = records.Record(positions=positions, codebook=records.Codebook(
      index=index.reshape(w.shape).astype(np.uint8), bits=bits,
      codebook=book))
  return rec, dense


# name -> how every kernel is stored (numpy records, no training).
FORMS = {
    'q8': dict(bits=8),
    'q4': dict(bits=4),
    # Skewed weights: the 8-bit asymmetric codes do not fit int8 around
    # their zero point.
    'q8_asym_tensor': dict(bits=8, symmetric=False, per_channel=False,
                           skew=0.5),
    'q3_asym': dict(bits=3, symmetric=False),
    'q8_sparse': dict(bits=8, sparsity=0.7),
    'q4_sparse': dict(bits=4, sparsity=0.3),
    'q2_sparse': dict(bits=2, sparsity=0.75),
    'cb4': dict(bits=4, codebook=True),
    'cb6': dict(bits=6, codebook=True),
    'cb6_sparse': dict(bits=6, codebook=True, sparsity=0.8),
    'cb3_sparse': dict(bits=3, codebook=True, sparsity=0.4),
    # deep_compression.py's artifact: pruned, k-means codebooks of 16
    # values, biases as 8-bit per-tensor codes.
    'deep': dict(bits=4, codebook=True, sparsity=0.85, bias_bits=8),
    # Forms without integer weights (their recurrent kernels).
    'dct': dict(bits=8, recurrent='dct'),
    'lowrank': dict(bits=8, recurrent='lowrank'),
}


def fast(form: str = 'q8', cell: str = 'gru', hidden: int = 8,
         layers: int = 1, pooling: str = 'last',
         task: str = 'classification', seed: int = 0, shrink_to: int = 0,
         float_leaf: str = '', hidden_state: dict | None = None) -> dict:
  """`export.build` keyword arguments of a random model, records in numpy.

  Every kernel (and the language model's embedding) is stored as `FORMS`
  says; biases stay float32 unless the form gives them bits.

  Args:
    form: a key of FORMS.
    cell, hidden, layers, pooling, task: the model.
    seed: parameter seed.
    shrink_to: if > 0, zero all but this many units of every layer and
      store the physically smaller model (`pruning.shrink`, as unit
      pruning's artifact does).
    float_leaf: leave this kernel as float32.
    hidden_state: the header's `hidden_state` section.
  """
  ds = dataset(task)
  rng = np.random.default_rng(seed)
  params = _numpy_params(cell, hidden, layers, pooling, task, ds.info, rng)
  if shrink_to:
    g = models.cells.CELL_SPECS[cell].gates
    dead = np.arange(shrink_to, hidden)
    for i in range(layers):
      lay = params['rnn'][f'layer_{i}']
      for k in range(g):
        cols = k * hidden + dead
        lay['input_kernel'][:, cols] = 0
        lay['recurrent_kernel'][:, cols] = 0
        lay['bias'][cols] = 0
      lay['recurrent_kernel'][dead, :] = 0
      if 'recurrent_bias' in lay:
        lay['recurrent_bias'][dead] = 0
      if i + 1 < layers:
        params['rnn'][f'layer_{i + 1}']['input_kernel'][dead, :] = 0
    for name in ('head', 'attention'):
      if name in params:
        params[name]['kernel'][dead, :] = 0
    params, hidden = pruning.shrink(params, cell)
    params = jax.tree_util.tree_map(np.asarray, params)
  spec = dict(FORMS[form])
  sparsity = spec.pop('sparsity', 0.0)
  use_book = spec.pop('codebook', False)
  bias_bits = spec.pop('bias_bits', 0)
  recurrent = spec.pop('recurrent', '')
  skew = spec.pop('skew', 0.0)
  exports = {}
  flat = accounting.flatten(params)
  for path, w in list(flat.items()):
    if path.endswith('bias') and bias_bits:
      rec, dense = quantize_record(w, bias_bits, per_channel=False)
    elif not (path.endswith('kernel') or path.endswith('embedding')):
      continue
    elif path == float_leaf:
      continue
    elif recurrent and path.endswith('recurrent_kernel'):
      if recurrent == 'lowrank':
        del flat[path]
        flat[f'{path}/u'] = w[:, :2].copy()
        flat[f'{path}/v'] = np.asarray(rng.normal(0, 0.3, (2, w.shape[1])),
                                       np.float32)
        continue
      coef = transforms.block_dct(w, 2, 2)
      coef[np.abs(coef) < np.median(np.abs(coef))] = 0
      rec = records.Record(transform=records.Transform('dct', (2, 2)),
                           coefficients=np.asarray(coef, np.float32))
      dense = np.asarray(transforms.inverse('dct', coef, (2, 2)), np.float32)
    else:
      w = w + np.float32(skew * np.max(np.abs(w)))
      keep = rng.random(w.shape) >= sparsity if sparsity else None
      if use_book:
        rec, dense = codebook_record(w, spec['bits'], keep)
      else:
        rec, dense = quantize_record(w, keep=keep, **spec)
    exports[path] = rec
    flat[path] = dense
  mc = _model_cfg(cell, int(hidden), layers, pooling)
  return dict(dense=export._nest(flat),  # pylint: disable=protected-access
              exports=[exports], methods=['kmeans' if use_book else
                                          'quantize'],
              model_cfg=mc, task=task, info=ds.info,
              data_cfg=ml_collections.ConfigDict(DATA[task]),
              hidden_state=hidden_state, label=f'test_{form}')


def encode(contents: dict, extra: dict, coding: str = 'fixed') -> bytes:
  """The artifact bytes of `compressed(...)` with extra header keys."""
  blob, _ = export.build(coding=coding, **contents)
  return with_header(blob, extra)


def with_header(blob: bytes, extra: dict) -> bytes:
  """An artifact's bytes with keys added to its header (new checksum)."""
  header, payload = export.split(blob)
  header.update(extra)
  return export.assemble(header, payload)


def static_activations(task: str) -> dict:
  ds = dataset(task)
  return {'bits': 8, 'mode': 'static', 'input_scale': integer.calibrate_input(
      ds.train['x'], ds.train['lengths'])}


def write(path: str, chain: str = 'q8', mode: str = 'static', **kw) -> str:
  """Writes a random model's artifact (`fast(chain, **kw)`).

  Args:
    path: the file.
    chain: a key of FORMS.
    mode: the `activations` mode ('static', 'dynamic'), or 'none' for a
      header without `activations`.
    **kw: `fast` arguments.

  Returns:
    path.
  """
  contents = fast(chain, **kw)
  act = static_activations(contents['task'])
  if mode == 'dynamic':
    act = {'bits': 8, 'mode': 'dynamic', 'input_scale': []}
  if mode != 'none':
    blob = encode(contents, {'activations': act})
  else:
    blob = export.build(coding='fixed', **contents)[0]
  files.atomic_write(str(path), blob)
  return str(path)


def add_header_keys(src: str, dst: str, extra: dict) -> None:
  """Copies the artifact `src` to `dst` with `extra` header keys added."""
  with open(src, 'rb') as f:
    blob = f.read()
  files.atomic_write(dst, with_header(blob, extra))


def calibrated_copy(src: str, dst: str) -> dict:
  """`src` copied to `dst` with activations calibrated on its train split."""
  art = export.read(src)
  ds = data.load(ml_collections.ConfigDict(art.header['data']))
  act = {'bits': 8, 'mode': 'static', 'input_scale': integer.calibrate_input(
      ds.train['x'], ds.train['lengths'])}
  add_header_keys(src, dst, {'activations': act})
  return act


def batches(task: str, limit: int = 0) -> list[dict]:
  ds = dataset(task)
  out = list(data.eval_batches(ds.test, DATA[task]['eval_batch_size']))
  return out[:limit] if limit else out
