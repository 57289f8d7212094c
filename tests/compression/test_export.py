"""Tests of compression.export: the artifact's size, round trip and validation."""

import hashlib
import json
import os
import struct

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import compression
from compression import accounting
from compression import clustering
from compression import dct
from compression import export
from compression import lowrank
from compression import pruning
from compression import quantization
from compression.errors import InputError
from configs import common
import models

INFO = {'num_classes': 3, 'input_dim': 5, 'max_len': 6}


def _oneshot(**kw):
  return pruning.config(**{'schedule': 'oneshot', 'sparsity': 0.75, **kw})


CHAINS = {
    'none': ('', {}),
    'prune': ('prune', {'prune': _oneshot()}),
    'quantize': ('quantize', {'quantize': quantization.config(bits=4)}),
    'quantize_asym': ('quantize', {'quantize': quantization.config(
        bits=3, scheme='asymmetric', granularity='per_tensor')}),
    'kmeans': ('kmeans', {'kmeans': clustering.config(clusters=8)}),
    'prune_quantize': ('prune,quantize', {
        'prune': _oneshot(), 'quantize': quantization.config(bits=4)}),
    'lowrank_quantize': ('lowrank,quantize', {
        'lowrank': lowrank.config(rank=2),
        'quantize': quantization.config(bits=8, regex='.*kernel/(u|v)')}),
    'dct': ('dct', {'dct': dct.config(keep=0.3, block=4, bits=6)}),
}


def _model(cell='gru', hidden=8):
  mc = common.base_config().model
  mc.cell, mc.hidden = cell, hidden
  return mc, models.make(mc, 'classification', INFO)


def _batch():
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 6, 5))
  return x, jnp.array([6, 4, 2])


def _compressed(methods, sections, cell='gru'):
  """(model cfg, model, dense, exports, names) after init and 2 updates."""
  mc, model = _model(cell)
  x, lengths = _batch()
  params = model.init(jax.random.PRNGKey(0), x, lengths)['params']
  cc = ml_collections.ConfigDict({'methods': methods})
  for k, v in sections.items():
    cc[k] = v
  comp = compression.make(cc)
  p, s = comp.init(params)
  grads = jax.tree.map(lambda a: jnp.full_like(a, 0.01), p)
  for t in range(2):
    p, s = comp.update(p, s, grads, jnp.asarray(t))
  dense = jax.device_get(comp.apply(p, s))
  return (mc, model, dense, comp.export(p, s),
          compression.method_names(cc))


def _write(path, chain='prune_quantize', coding='huffman', cell='gru'):
  mc, model, dense, exports, names = _compressed(*CHAINS[chain], cell=cell)
  report = export.write(str(path), dense=dense, exports=exports, methods=names,
                        model_cfg=mc, task='classification', info=INFO,
                        coding=coding)
  return model, dense, report


@pytest.mark.parametrize('chain', sorted(CHAINS))
def test_round_trip_rebuilds_the_compressed_model(chain, tmp_path):
  path = tmp_path / 'model.rnnc'
  model, dense, report = _write(path, chain)
  art = export.read(str(path))
  x, lengths = _batch()
  want = model.apply({'params': dense}, x, lengths)
  got = export.predict(art, x, lengths)
  flat_want = accounting.flatten(dense)
  flat_got = accounting.flatten(art.params)
  assert sorted(flat_want) == sorted(flat_got)
  assert not any(r['encoding'].endswith('fallback') for r in report['leaves'])
  if chain == 'dct':  # The inverse DCT is float arithmetic.
    np.testing.assert_allclose(got, want, atol=1e-5)
  else:
    for p in flat_want:  # Identical codes decode to identical parameters.
      np.testing.assert_array_equal(flat_got[p], flat_want[p])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('coding', ['fixed', 'huffman'])
def test_file_size_is_accounting_total_plus_header(coding, tmp_path):
  path = tmp_path / 'm.rnnc'
  _, _, report = _write(path, 'prune_quantize', coding)
  blob = path.read_bytes()
  head_len = struct.unpack_from('<I', blob, 8)[0]
  payload = report['entropy_coded_bytes' if coding == 'huffman'
                   else 'fixed_width_bytes']
  assert len(blob) == os.path.getsize(path) == report['file_bytes']
  assert len(blob) == 12 + head_len + payload + 32
  assert report['header_bytes'] == head_len + 44
  assert report['dense_bytes'] == 4 * sum(
      int(np.prod(r['shape'])) for r in report['leaves'])


def test_lstm_and_an_untouched_model(tmp_path):
  path = tmp_path / 'm.rnnc'
  model, dense, report = _write(path, 'none', cell='lstm')
  assert all(r['encoding'] in ('float32', 'float32+sparse')
             for r in report['leaves'])
  x, lengths = _batch()
  np.testing.assert_array_equal(export.predict(export.read(str(path)), x,
                                               lengths),
                                model.apply({'params': dense}, x, lengths))


def _resign(blob, header, version=1):
  """The file with a new header, validly signed (version 1 stores every
  header field, so a changed block offset reaches the reader)."""
  return export.assemble(header, export.split(blob)[1], version)


def test_clear_errors_for_damaged_files(tmp_path):
  path = tmp_path / 'model.rnnc'
  _write(path)
  blob = path.read_bytes()
  flipped = bytearray(blob)
  flipped[len(blob) // 2] ^= 0x10
  cases = [
      (bytes(flipped), 'checksum mismatch \\(file damaged\\)'),
      (blob[:-1], 'checksum mismatch'),
      (blob[:20], '20 bytes is too short'),
      (b'PK\x03\x04' + blob[4:], 'not an rnnc artifact'),
      (blob[:4] + b'\x09\x00' + blob[6:], 'format version 9'),
  ]
  header = export.split(blob)[0]
  bad = json.loads(json.dumps(header))
  bad['leaves'][0]['blocks'][0][3] = 10 ** 6
  cases.append((_resign(blob, bad), 'malformed \\(block offset 1000000'))
  bad = json.loads(json.dumps(header))
  bad['leaves'][-1]['shape'] = [7, 7]
  cases.append((_resign(blob, bad), '(relative indices|bitmap|.*shape)'))
  for data, match in cases:
    path.write_bytes(data)
    with pytest.raises(InputError, match='^artifact model.rnnc: ' + match):
      export.read(str(path))
  with pytest.raises(InputError, match='cannot be read'):
    export.read(str(tmp_path / 'missing.rnnc'))


def test_random_corruptions_never_crash(tmp_path):
  path = tmp_path / 'm.rnnc'
  _write(path)
  blob = path.read_bytes()
  good_header, good = export.parse(blob)
  rng = np.random.default_rng(0)
  header = export.split(blob)[0]
  errors = 0
  for i in range(1200):
    kind = i % 3
    if kind == 0:  # Truncation.
      data = blob[:int(rng.integers(0, len(blob)))]
    elif kind == 1:  # Flipped bytes.
      arr = bytearray(blob)
      for j in rng.integers(0, len(blob), int(rng.integers(1, 4))):
        arr[j] ^= int(rng.integers(1, 256))
      data = bytes(arr)
    else:  # A re-signed header with one mangled value (checksum valid).
      h = json.loads(json.dumps(header))
      leaf = h['leaves'][int(rng.integers(len(h['leaves'])))]
      choice = int(rng.integers(6))
      junk = [-1, 0, 1, 3, 2 ** 40, 'x', None, [], 1.5][int(rng.integers(9))]
      if choice == 0:
        blk = leaf['blocks'][int(rng.integers(len(leaf['blocks'])))]
        blk[int(rng.integers(5))] = junk
      elif choice == 1:
        leaf['shape'] = [junk] if rng.integers(2) else leaf['shape'][::-1]
      elif choice == 2:
        node = leaf['node']
        key = sorted(node)[int(rng.integers(len(node)))]
        node[key] = junk
      elif choice == 3:
        h['payload_bytes'] = junk
      elif choice == 4:
        leaf['path'] = h['leaves'][0]['path']
      else:
        h['model']['hidden'] = junk
      data = _resign(blob, h, version=1 + i % 2)
    try:
      parsed_header, dense = export.parse(data, 'm.rnnc')
    except InputError as e:
      assert str(e).startswith('artifact m.rnnc: ') and '\n' not in str(e)
      errors += 1
      continue
    # Only a re-signed header may parse; its leaves are then well formed:
    # float32, finite, of the shape the header declares, and a leaf whose
    # header entry the mangling left alone decodes to the original values.
    assert kind == 2
    declared = {leaf['path']: leaf for leaf in parsed_header['leaves']}
    original = {leaf['path']: leaf for leaf in header['leaves']}
    for p, v in dense.items():
      assert v.dtype == np.float32, p
      assert np.all(np.isfinite(v)), p
      assert list(v.shape) == list(declared[p]['shape']), p
      if declared[p] == original.get(p):
        np.testing.assert_array_equal(v, good[p])
  assert errors >= 800


def test_compact_header_reads_like_version_1_and_is_smaller(tmp_path):
  path = tmp_path / 'model.rnnc'
  _write(path)
  blob = path.read_bytes()
  assert struct.unpack_from('<H', blob, 4)[0] == export.VERSION == 2
  header, payload = export.split(blob)
  old = export.assemble(header, payload, version=1)
  h2, d2 = export.parse(blob)
  h1, d1 = export.parse(old)
  assert (h1.pop('version'), h2.pop('version')) == (1, 2)
  assert h1 == h2  # Offsets, lengths, dtype, paths restored exactly.
  for p in d2:
    np.testing.assert_array_equal(d1[p], d2[p])
  head2 = struct.unpack_from('<I', blob, 8)[0]
  head1 = struct.unpack_from('<I', old, 8)[0]
  assert head2 < 0.6 * head1, (head2, head1)


def test_hostile_compact_headers_are_one_line(tmp_path):
  """Random bytes of a version 2 header, validly re-signed: an error line or
  a well-formed model, never a crash or a hang."""
  path = tmp_path / 'm.rnnc'
  _write(path)
  blob = path.read_bytes()
  head_len = struct.unpack_from('<I', blob, 8)[0]
  rng = np.random.default_rng(1)
  errors = 0
  for _ in range(400):
    head = bytearray(blob[12:12 + head_len])
    for j in rng.integers(0, head_len, int(rng.integers(1, 4))):
      head[j] = int(rng.integers(256))
    if rng.integers(4) == 0:
      head = head[:int(rng.integers(head_len))]
    body = (blob[:8] + struct.pack('<I', len(head)) + bytes(head)
            + blob[12 + head_len:-32])
    data = body + hashlib.sha256(body).digest()
    try:
      _, dense = export.parse(data, 'm.rnnc')
    except InputError as e:
      assert str(e).startswith('artifact m.rnnc: ') and '\n' not in str(e)
      errors += 1
      continue
    assert all(v.dtype == np.float32 and np.all(np.isfinite(v))
               for v in dense.values())
  assert errors > 300
