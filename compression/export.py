r"""The compressed artifact: one versioned file holding a model, and its reader.

`write(...)` stores the encoding plans of `compression.accounting` (packed or
Huffman-coded integer codes, positions, scales, codebooks, factors, float32
leaves) with everything needed to rebuild and run the model; `read(path)`
validates the file, rebuilds the dense parameters in pure numpy and builds the
model with `models.make`. Nothing is ever unpickled.

File layout (all integers little-endian):

  ========  ===========  =====================================================
  offset    size         content
  ========  ===========  =====================================================
  0         4            magic b'RNNC'
  4         2            format version (uint16): 2 (written), or 1
  6         2            reserved, 0
  8         4            H: header length in bytes (uint32)
  12        H            header (see below): version 2, the compact binary
                         form of `compression.header`; version 1,
                         zlib-deflated UTF-8 JSON
  12 + H    P            payload: the blocks, back to back
  12 + H + P  32         SHA-256 of bytes [0, 12 + H + P)
  ========  ===========  =====================================================

The header is one JSON-like object (version 2 stores it in the compact
binary form of `compression.header`, less than half the deflated JSON of
version 1 (265 against 604 bytes for deep_compression's GRU-64): every
name the project writes is one byte; leaf paths are lists of names, encodings
lists of method names, a leaf a list of its fields, and a block's offset,
which follows from the blocks before it, its length, where count and width
give it, and the leaf dtype, always float32, are left out; the reader
restores them, so both versions parse to the same object) with:
`version`,
`config` (the recipe label), `task`, `model` (the `config.model` section:
cell, hidden, layers, pooling, embed_dim, dtype, unroll), `info` (the
dataset's scalar facts: num_classes / horizon / vocab_size, input_dim,
max_len, ...), `hidden_state` (the `config.compression.hidden_state`
section, present only when the in-model state quantizers are on),
`early_exit` (`{'threshold': tau}`, present only for a classifier that exits
early, `compression.early_exit`; tau in (0, 1]),
`activations` (the int8 activation grid the integer runtimes use, written by
`write_run` into every run's artifact, `compression.activations.header`:
`bits`, `mode` 'static' | 'dynamic', `input_scale` (the input step: a list
of one per tensor, or input_dim per feature; [] when dynamic or for a
language model) and `fake_quant` (true when the run trained with these
grids, `config.compression.activations`, so the float model rebuilt here
applies them too; false or absent: the float model runs as trained)), `data`
(`name`, `kwargs` and `eval_batch_size` of `config.data`, so the artifact can
be evaluated alone), `methods`, `payload_bytes` P, and `leaves`: one object
per dense leaf with `path`, `shape`, `dtype` ('float32'), `encoding` (e.g.
'prune+kmeans'), `node` (the decoding tree, see `compression.accounting`) and
`blocks`: one `[coding, bits, count, offset, length]` per stream the node
indexes, offset relative to the payload start:

  * 'raw': `count` float32 values (bits 32), 4 * count bytes;
  * 'packed': `count` unsigned codes of `bits` (1..8) bits,
    `accounting.pack_bits` order, ceil(count * bits / 8) bytes;
  * 'huffman': a canonical Huffman code (`accounting.huffman_encode`): a
    table of 4-bit code lengths for the 2^bits alphabet, then the codes
    MSB first.

So the file size is exactly 44 + H + P, with P the accounting total of the
chosen coding (`accounting.sizes`).

Rebuilt parameters: a low-rank kernel is rebuilt as its factor dict
`{'u', 'v'}`, a tensor-train or Kronecker kernel as its cores `{'core_0',
...}` (the model multiplies through them, as in training), every other
leaf as a dense float32 array, bit-identical to `compressor.apply`'s (DCT
kernels to float rounding, < 1e-5).

A damaged or foreign file raises one `InputError` line naming the file and
the problem (`artifact model.rnnc: checksum mismatch (file damaged)`). The
checksum only proves the bytes are the writer's, so the reader also checks
every header field's type and range before it allocates or builds anything
(a well-signed file is still refused when it is hostile):

  * `model.hidden` and `model.embed_dim` 1..16384, `model.layers` 1..64,
    `model.unroll` 1..1024;
  * `info.input_dim` 1..65536, `info.max_len` 1..2^20, `info.num_classes`
    and `info.vocab_size` 1..2^20, `info.horizon` 1..65536; every float of
    `model`, `info`, `hidden_state` and `data` finite;
  * `hidden_state.bits` / `cell_bits` 0..16, `data.eval_batch_size` 1..2^20;
  * `activations` (optional; older files lack it) an object: `bits` 2..16,
    `mode` 'static' or 'dynamic', `input_scale` a list of 0, 1 or
    `info.input_dim` finite positive numbers, `fake_quant` (optional) a
    boolean;
  * at most 4096 leaves of at most 4 dimensions and 2^28 elements in all;
    code widths 1..8 bits; block offsets and lengths inside the payload, a
    Huffman block's count at most 8 symbols per byte;
  * every decoded value finite (NaN or inf is refused).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from compression import accounting
from compression import files
from compression import header as header_lib
from compression.errors import InputError

MAGIC = b'RNNC'
VERSION = 2  # Written; READABLE lists what the reader accepts.
READABLE = (1, 2)
FILENAME = 'model.rnnc'
_PREFIX = struct.Struct('<4sHHI')  # magic, version, reserved, header length.
_DIGEST = 32
OVERHEAD = _PREFIX.size + _DIGEST  # Bytes besides the header and payload.
_MAX_HEADER = 64 << 20  # Inflated header bytes a reader accepts.
_MAX_ELEMENTS = 1 << 28  # Elements of one leaf, and of all leaves together.
_MAX_LEAVES = 4096  # Leaves of one artifact.
_CODINGS = ('raw', 'packed', 'huffman')
# What a reader accepts in the header before it builds anything, as
# (section, key) -> (lowest, highest) for integers; see `_check_header`.
LIMITS = {
    ('model', 'hidden'): (1, 1 << 14),
    ('model', 'layers'): (1, 64),
    ('model', 'embed_dim'): (1, 1 << 14),
    ('model', 'unroll'): (1, 1024),
    ('info', 'input_dim'): (1, 1 << 16),
    ('info', 'max_len'): (1, 1 << 20),
    ('info', 'num_classes'): (1, 1 << 20),
    ('info', 'vocab_size'): (1, 1 << 20),
    ('info', 'horizon'): (1, 1 << 16),
    ('hidden_state', 'bits'): (0, 16),
    ('hidden_state', 'cell_bits'): (0, 16),
    ('data', 'eval_batch_size'): (1, 1 << 20),
}
_TASKS = ('classification', 'forecasting', 'language_model')


class Artifact(NamedTuple):
  """A read artifact."""
  header: dict  # The parsed JSON header.
  params: dict  # Nested dict of float32 numpy arrays (factor dicts kept).
  model: Any  # The Flax module built by models.make.
  file_bytes: int
  # What the file stores per leaf path ('/'-joined), as `records.Record`s
  # (`accounting.leaf_record`; None for float32 leaves): the runtimes that
  # compute with codes, codebooks and positions read these.
  records: dict


# ----------------------------------------------------------------------------
# Writing


def _scalar_info(info: Mapping[str, Any]) -> dict[str, Any]:
  """The JSON-able scalar entries of a dataset's info dict."""
  out = {}
  for k, v in info.items():
    if isinstance(v, (bool, np.bool_)):
      out[k] = bool(v)
    elif isinstance(v, (int, np.integer)):
      out[k] = int(v)
    elif isinstance(v, (float, np.floating)):
      out[k] = float(v)
    elif isinstance(v, str):
      out[k] = v
  return out


def _to_dict(section: Any) -> Any:
  if section is None:
    return None
  return section.to_dict() if hasattr(section, 'to_dict') else dict(section)


def _block_bytes(stream: accounting.Stream, coding: str) -> tuple[str, bytes]:
  how = stream.coding(coding)
  if how == 'raw':
    return how, np.asarray(stream.data, '<f4').tobytes()
  if how == 'huffman':
    return how, accounting.huffman_encode(stream.data, stream.bits)
  return how, accounting.pack_bits(stream.data, stream.bits).tobytes()


def encode(leaves: Sequence[accounting.Leaf], meta: Mapping[str, Any],
           coding: str) -> bytes:
  """The artifact bytes of encoding plans plus header metadata.

  Args:
    leaves: `accounting.plan(..., coding)` output.
    meta: header fields besides `leaves`, `coding` and `payload_bytes`.
    coding: 'fixed' | 'huffman'.

  Returns:
    The whole file.
  """
  payload = bytearray()
  rows = []
  for leaf in leaves:
    blocks = []
    for s in leaf.streams:
      how, data = _block_bytes(s, coding)
      assert len(data) == s.stored_bytes(coding), (leaf.path, how)
      blocks.append([how, s.bits, s.count, len(payload), len(data)])
      payload += data
    rows.append({'path': leaf.path, 'shape': list(leaf.shape),
                 'dtype': 'float32', 'encoding': leaf.encoding,
                 'node': leaf.node, 'blocks': blocks})
  header = {'version': VERSION, **meta, 'payload_bytes': len(payload),
            'leaves': rows}
  return assemble(header, bytes(payload))


def _stored_length(block: list) -> bool:
  """Whether version 2 stores a block's length (only Huffman's is free)."""
  return block[0] == 'huffman'


def _compact(header: dict) -> dict:
  """The version 2 object of a header (see the module docstring)."""
  out = dict(header)
  rows = []
  for row in header['leaves']:
    row = dict(row)
    row.pop('dtype', None)  # Always float32.
    for key, sep in (('path', '/'), ('encoding', '+')):
      if isinstance(row.get(key), str):
        row[key] = row[key].split(sep)
    if isinstance(row.get('blocks'), list):
      row['blocks'] = [
          b[:3] + ([b[4]] if _stored_length(b) else [])
          if isinstance(b, list) and len(b) == 5 else b
          for b in row['blocks']]
    # A leaf is a list of its fields in _ROW order (no key bytes).
    rows.append([row.get(k) for k in _ROW] if set(row) == set(_ROW) else row)
  out['leaves'] = rows
  return out


_ROW = ('path', 'shape', 'encoding', 'node', 'blocks')


def _expand(header: Any) -> Any:
  """The full object of a version 2 header (offsets, lengths restored).

  Malformed input is left for the checks that follow to refuse; this only
  restores what it can.
  """
  if not isinstance(header, dict) or not isinstance(header.get('leaves'),
                                                    list):
    return header
  offset = 0
  rows = []
  for row in header['leaves']:
    if isinstance(row, list) and len(row) == len(_ROW):
      row = dict(zip(_ROW, row))
    if not isinstance(row, dict):
      rows.append(row)
      continue
    row = dict(row)
    row['dtype'] = 'float32'
    for key, sep in (('path', '/'), ('encoding', '+')):
      parts = row.get(key)
      if isinstance(parts, list) and all(isinstance(p, str) for p in parts):
        row[key] = sep.join(parts)
    blocks = []
    for b in row.get('blocks') if isinstance(row.get('blocks'), list) else []:
      if not (isinstance(b, list) and len(b) in (3, 4) and all(
          isinstance(v, int) and not isinstance(v, bool) for v in b[1:])):
        blocks.append(b)
        continue
      how, bits, count = b[:3]
      if how == 'raw':
        length = 4 * count
      elif how == 'packed':
        length = -(-count * bits // 8)
      else:
        length = b[3] if len(b) == 4 else -1
      blocks.append([how, bits, count, offset, length])
      offset += max(length, 0)
    if isinstance(row.get('blocks'), list):
      row['blocks'] = blocks
    rows.append(row)
  return {**header, 'leaves': rows}


def assemble(header: dict, payload: bytes, version: int = VERSION) -> bytes:
  """A whole, signed file of a (full) header object and the payload.

  Args:
    header: the header object (as `parse` returns it).
    payload: the blocks' bytes.
    version: the format to write (1: deflated JSON; 2: compact binary).
  """
  if version == 1:
    text = json.dumps({**header, 'version': 1}, separators=(',', ':'),
                      sort_keys=True)
    head = zlib.compress(text.encode('utf-8'), 9)
  else:
    head = header_lib.pack(_compact({**header, 'version': version}))
  body = _PREFIX.pack(MAGIC, version, 0, len(head)) + head + payload
  return body + hashlib.sha256(body).digest()


def split(blob: bytes, name: str = 'artifact') -> tuple[dict, bytes]:
  """The header object and the payload of a file, nothing checked but the
  framing (for tools and tests that rewrite headers; `parse` checks all)."""
  _, version, _, head_len = _PREFIX.unpack_from(blob)
  try:
    header = _decode_header(version, blob[_PREFIX.size:_PREFIX.size
                                          + head_len])
  except InputError as e:
    raise _fail(name, str(e)) from None
  except (ValueError, UnicodeDecodeError, zlib.error) as e:
    raise _fail(name, f'malformed ({e})') from None
  return header, blob[_PREFIX.size + head_len:-_DIGEST]


def _decode_header(version: int, head: bytes) -> Any:
  """The (full) header object of a version's header bytes, bounded in size."""
  if version == 1:
    inflater = zlib.decompressobj()
    text = inflater.decompress(head, _MAX_HEADER)
    _expect(inflater.eof and not inflater.unconsumed_tail, 'header too '
            'large or cut short')
    return json.loads(text.decode('utf-8'))
  return _expand(header_lib.unpack(head))


def build(*, dense: Any, exports: Any, methods: Sequence[str],
          model_cfg: Any, task: str, info: Mapping[str, Any],
          data_cfg: Any = None, hidden_state: Any = None, label: str = '',
          coding: str = 'huffman', activations: Mapping[str, Any] | None = None,
          early_exit: Mapping[str, Any] | None = None
          ) -> tuple[bytes, list[accounting.Leaf]]:
  """The artifact's bytes (and the encoding plans), written nowhere.

  Args: as `write`, less the path.

  Returns:
    (the whole file, the per-leaf plans).
  """
  nested = _nest(accounting.flatten(_host(dense)))
  leaves = accounting.plan(nested, exports, methods, coding)
  meta = {'config': label, 'task': task, 'model': _to_dict(model_cfg),
          'info': _scalar_info(info), 'methods': list(methods)}
  if data_cfg is not None:
    # What evaluation needs; the training batch size is not.
    d = _to_dict(data_cfg)
    meta['data'] = {k: d[k] for k in ('name', 'kwargs', 'eval_batch_size')
                    if k in d}
    if isinstance(meta['data'].get('kwargs'), dict):
      # Unset keywords (None: the dataset's default) need no bytes.
      meta['data']['kwargs'] = {k: v for k, v in meta['data']['kwargs'].items()
                                if v is not None}
  hidden = _to_dict(hidden_state)
  if hidden and (hidden.get('bits') or hidden.get('cell_bits')):
    meta['hidden_state'] = hidden  # Absent: the state is not quantized.
  if activations is not None:
    meta['activations'] = dict(activations)
  if early_exit is not None:
    meta['early_exit'] = dict(early_exit)  # Absent: no early exit.
  return encode(leaves, meta, coding), leaves


def write(path: str, *, dense: Any, exports: Any, methods: Sequence[str],
          model_cfg: Any, task: str, info: Mapping[str, Any],
          data_cfg: Any = None, hidden_state: Any = None, label: str = '',
          coding: str = 'huffman', activations: Mapping[str, Any] | None = None,
          early_exit: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes the artifact of a compressed model (atomically).

  Args:
    path: the file to write.
    dense: `compressor.apply(params, state)`.
    exports: `compressor.export(params, state)`.
    methods: the chained method names in order.
    model_cfg: `config.model`.
    task: the dataset's task.
    info: the dataset's info dict (scalars are kept).
    data_cfg: `config.data` (lets `read` users evaluate the file alone).
    hidden_state: `config.compression.hidden_state`.
    label: the recipe label.
    coding: 'fixed' or 'huffman' (integer codes Huffman-coded where smaller).
    activations: the header's `activations` entry (`write_run` gives every
      run's: `compression.activations.header`); None writes none.
    early_exit: the header's `early_exit` entry, `{'threshold': tau}`
      (`compression.early_exit.header`); None: the model does not exit early.

  Returns:
    {'file_bytes', 'header_bytes', 'payload_bytes', 'dense_bytes',
    'fixed_width_bytes', 'entropy_coded_bytes', 'leaves': per-leaf rows}.
  """
  blob, leaves = build(dense=dense, exports=exports, methods=methods,
                       model_cfg=model_cfg, task=task, info=info,
                       data_cfg=data_cfg, hidden_state=hidden_state,
                       label=label, coding=coding, activations=activations,
                       early_exit=early_exit)
  files.atomic_write(path, blob)
  report = accounting.account(_nest(accounting.flatten(_host(dense))),
                              exports, methods)
  head_len = _PREFIX.unpack_from(blob)[3]
  payload = sum(l.bytes(coding) for l in leaves)
  report.update(file_bytes=len(blob), header_bytes=head_len + OVERHEAD,
                payload_bytes=payload, path=path, coding=coding)
  return report


def _host(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _host(v) for k, v in tree.items()}
  return np.asarray(tree)


def _nest(flat: Mapping[str, np.ndarray]) -> dict:
  out: dict = {}
  for path, value in flat.items():
    keys = path.split('/')
    node = out
    for k in keys[:-1]:
      node = node.setdefault(k, {})
      if not isinstance(node, dict):
        raise InputError(f'path {path!r} nests under a leaf')
    if keys[-1] in node:
      raise InputError(f'path {path!r} appears twice')
    node[keys[-1]] = value
  return out


def run_contents(config: Any, task: str, info: Mapping[str, Any],
                 compressor: Any, params: Any, comp_state: Any,
                 dense: Any) -> dict[str, Any]:
  """The `write`/`build` keyword arguments of a run's artifact (no coding).

  Args: as `write_run`, less the workdir.
  """
  from compression import activations  # pylint: disable=g-import-not-at-top
  from compression import api  # pylint: disable=g-import-not-at-top
  from compression import early_exit as early_exit_lib  # pylint: disable=g-import-not-at-top
  exports = compressor.export(params, comp_state)
  methods = api.method_names(config.compression)
  model_cfg = _to_dict(config.model)
  # A learned input step goes into the header, not among the leaves.
  dense = activations.strip(dense)
  if 'prune' in methods and config.compression.prune.granularity == 'unit':
    # Unit pruning: the file holds the physically smaller model (the dead
    # units removed, `model.hidden` = the units kept), so it is smaller and
    # the model it rebuilds computes less. The pruned positions no longer
    # exist, so pruning stores nothing; the other methods' records (codes,
    # codebooks) are cut like the weights.
    from compression import pruning  # pylint: disable=g-import-not-at-top
    per_method = [dict(e) for e in (exports if not isinstance(exports, dict)
                                    else [exports])]
    per_method[methods.index('prune')] = {}
    dense, kept, exports = pruning.shrink(dense, model_cfg['cell'],
                                          exports=per_method)
    model_cfg['hidden'] = int(kept)
  return dict(
      dense=dense, exports=exports, methods=methods, model_cfg=model_cfg,
      task=task, info=info, data_cfg=config.data,
      hidden_state=config.compression.hidden_state,
      label=f'{config.name}.py' + (f':{config.arg}' if config.arg else ''),
      activations=activations.header(config.compression, config.data, task,
                                     params),
      early_exit=early_exit_lib.header(config))


def write_run(config: Any, task: str, info: Mapping[str, Any],
              compressor: Any, params: Any, comp_state: Any, dense: Any,
              workdir: str, coding: str = 'huffman') -> dict[str, Any]:
  """Writes `<workdir>/model.rnnc` for a run; the results.json size fields.

  Args:
    config: the run's ConfigDict.
    task: the dataset's task.
    info: the dataset's info.
    compressor: the run's chained Compressor.
    params: the trained parameters (the compressor's representation).
    comp_state: the compression state.
    dense: `compressor.apply(params, comp_state)`.
    workdir: the run directory.
    coding: 'fixed' | 'huffman'.

  Returns:
    {'compressed_bytes' (the file's size on disk), 'compression_ratio',
    'entropy_coded_bytes', 'fixed_width_bytes', 'artifact_header_bytes',
    'artifact'}.
  """
  report = write(os.path.join(workdir, FILENAME), coding=coding,
                 **run_contents(config, task, info, compressor, params,
                                comp_state, dense))
  size = os.path.getsize(report['path'])
  return {
      'artifact': FILENAME,
      'compressed_bytes': size,
      'compression_ratio': report['dense_bytes'] / size,
      'entropy_coded_bytes': report['entropy_coded_bytes'],
      'fixed_width_bytes': report['fixed_width_bytes'],
      'artifact_header_bytes': report['header_bytes'],
  }


# ----------------------------------------------------------------------------
# Reading


def _fail(name: str, why: str) -> InputError:
  return InputError(f'artifact {name}: {why}')


def _expect(cond: bool, what: str) -> None:
  if not cond:
    raise ValueError(what)


def _int(v: Any, lo: int, hi: int, what: str) -> int:
  _expect(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
          f'{what} {v!r} outside {lo}..{hi}')
  return v


def _read_stream(block: Any, payload: memoryview) -> np.ndarray:
  """Decodes one block descriptor to float32 values or integer symbols."""
  _expect(isinstance(block, list) and len(block) == 5, 'bad block descriptor')
  how, bits, count, offset, length = block
  _expect(how in _CODINGS, f'unknown block coding {how!r}')
  count = _int(count, 0, _MAX_ELEMENTS, 'block count')
  offset = _int(offset, 0, len(payload), 'block offset')
  length = _int(length, 0, len(payload) - offset, 'block length')
  data = bytes(payload[offset:offset + length])
  if how == 'raw':
    _expect(bits == 32 and length == 4 * count, 'raw block size mismatch')
    return np.frombuffer(data, '<f4').astype(np.float32)
  bits = _int(bits, 1, 8, 'code width')
  if how == 'packed':
    _expect(length == -(-count * bits // 8), 'packed block size mismatch')
    return accounting.unpack_bits(np.frombuffer(data, np.uint8), bits, count)
  # Every Huffman code is at least one bit long.
  _expect(count <= 8 * length, 'huffman block too short for its count')
  return accounting.huffman_decode(data, bits, count)


def _check_header(header: dict) -> None:
  """Checks the type and range of every header field a reader builds from.

  Integers must lie within `LIMITS`; floats must be finite; the task one of
  the known ones. Runs before any model is built or array allocated.

  Raises:
    ValueError: the first field out of range, named.
  """
  _expect(header.get('task') in _TASKS, f'task {header.get("task")!r} is not '
          f'one of {", ".join(_TASKS)}')
  for section in ('model', 'info', 'hidden_state', 'data'):
    value = header.get(section)
    optional = section in ('hidden_state', 'data')
    _expect(isinstance(value, dict) or (optional and value is None),
            f'{section} is not an object')
    for key, v in (value or {}).items():
      if isinstance(v, float):
        _expect(np.isfinite(v), f'{section}.{key} {v!r} is not finite')
  for (section, key), (lo, hi) in LIMITS.items():
    value = header.get(section) or {}
    if key in value:
      _int(value[key], lo, hi, f'{section}.{key}')
  for key in ('cell', 'pooling', 'dtype'):
    v = header['model'].get(key)
    _expect(v is None or isinstance(v, str), f'model.{key} {v!r} is not text')
  rows = header.get('leaves')
  _expect(isinstance(rows, list) and len(rows) <= _MAX_LEAVES,
          f'header has no leaf list of at most {_MAX_LEAVES} leaves')
  _check_activations(header)
  _check_early_exit(header)


def _check_early_exit(header: dict) -> None:
  """The optional `early_exit` entry: `{'threshold': tau}`, tau in (0, 1].

  Raises:
    ValueError: a malformed entry or a threshold out of range.
  """
  entry = header.get('early_exit')
  if entry is None:
    return  # The model does not exit early.
  _expect(isinstance(entry, dict), 'early_exit is not an object')
  tau = entry.get('threshold')
  _expect(isinstance(tau, (int, float)) and not isinstance(tau, bool)
          and math.isfinite(tau) and 0 < tau <= 1,
          f'early_exit.threshold {tau!r} is not in (0, 1]')
  _expect(header['task'] == 'classification' and header['model'].get(
      'pooling') == 'last', 'early_exit needs a classifier with last-state '
          'pooling')


_ACTIVATION_MODES = ('static', 'dynamic')


def _check_activations(header: dict) -> None:
  """The optional `activations` entry (see the module docstring).

  Raises:
    ValueError: the first field out of range, named.
  """
  act = header.get('activations')
  if act is None:
    return  # Written before the entry existed.
  _expect(isinstance(act, dict), 'activations is not an object')
  _int(act.get('bits'), 2, 16, 'activations.bits')
  _expect(act.get('mode') in _ACTIVATION_MODES,
          f'activations.mode {act.get("mode")!r} is not one of '
          + ', '.join(_ACTIVATION_MODES))
  scales = act.get('input_scale')
  _expect(isinstance(scales, list), 'activations.input_scale is not a list')
  for v in scales:
    _expect(isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and v > 0,
            f'activations.input_scale value {v!r} is not a finite positive '
            'number')
  dim = header['info'].get('input_dim')
  lengths = (0, 1) + ((dim,) if isinstance(dim, int) else ())
  _expect(len(scales) in lengths, f'activations.input_scale has '
          f'{len(scales)} values, not 0, 1 or input_dim ({dim})')
  fake = act.get('fake_quant', False)
  _expect(isinstance(fake, bool), f'activations.fake_quant {fake!r} is not '
          'true or false')


def parse(blob: bytes, name: str = 'artifact',
          stored: dict | None = None) -> tuple[dict, dict]:
  """Validates an artifact's bytes; the header and the flat dense leaves.

  Args:
    blob: the file's bytes.
    name: the file name used in error messages.
    stored: if given, filled with `{path: Record or None}`, what the file
      stores per leaf (`accounting.leaf_record`).

  Returns:
    (header, {path: float32 array}).

  Raises:
    InputError: anything wrong with the file, as one line.
  """
  n = len(blob)
  if n < OVERHEAD:
    raise _fail(name, f'{n} bytes is too short for an artifact (truncated?)')
  magic, version, reserved, head_len = _PREFIX.unpack_from(blob)
  if magic != MAGIC:
    raise _fail(name, f'not an rnnc artifact (magic {magic!r})')
  if version not in READABLE:
    raise _fail(name, f'format version {version} is not supported (this '
                f'reader reads versions {", ".join(map(str, READABLE))})')
  if hashlib.sha256(blob[:-_DIGEST]).digest() != blob[-_DIGEST:]:
    raise _fail(name, 'checksum mismatch (file damaged)')
  try:
    _expect(reserved == 0, 'reserved field is not 0')
    _expect(_PREFIX.size + head_len <= n - _DIGEST, 'header runs past the end')
    header = _decode_header(version,
                            blob[_PREFIX.size:_PREFIX.size + head_len])
    _expect(isinstance(header, dict), 'header is not a JSON object')
    _expect(header.get('version') == version, 'header version mismatch')
    start = _PREFIX.size + head_len
    p_len = _int(header.get('payload_bytes'), 0, n, 'payload_bytes')
    _expect(start + p_len + _DIGEST == n, 'payload size does not match the '
            'file size')
    payload = memoryview(blob)[start:start + p_len]
    _check_header(header)
    rows = header['leaves']
    dense: dict[str, np.ndarray] = {}
    total = 0
    for row in rows:
      _expect(isinstance(row, dict), 'leaf entry is not an object')
      path = row.get('path')
      _expect(isinstance(path, str) and path and path not in dense,
              f'bad or repeated leaf path {path!r}')
      shape = row.get('shape')
      _expect(isinstance(shape, list) and len(shape) <= 4, f'{path}: bad shape')
      shape = tuple(_int(d, 0, _MAX_ELEMENTS, f'{path}: dimension')
                    for d in shape)
      total += math.prod(shape)
      _expect(total <= _MAX_ELEMENTS, f'{path}: too many elements')
      _expect(row.get('dtype') == 'float32', f'{path}: dtype must be float32')
      node = row.get('node')
      _expect(isinstance(node, dict), f'{path}: node is not an object')
      blocks = row.get('blocks')
      _expect(isinstance(blocks, list), f'{path}: no block list')
      streams = [_read_stream(b, payload) for b in blocks]
      # Hostile scales may overflow; the result is refused below, quietly.
      with np.errstate(over='ignore', invalid='ignore'):
        value = accounting.decode_leaf(node, streams, shape, dense)
      _expect(tuple(value.shape) == shape and value.dtype == np.float32,
              f'{path}: decodes to shape {value.shape}')
      _expect(bool(np.all(np.isfinite(value))), f'{path}: holds NaN or inf')
      dense[path] = value
      if stored is not None:
        stored[path] = accounting.leaf_record(node, streams, shape)
  except InputError as e:
    raise _fail(name, str(e)) from None
  except (ValueError, KeyError, TypeError, IndexError, AttributeError,
          OverflowError, UnicodeDecodeError, zlib.error,
          RecursionError) as e:
    raise _fail(name, f'malformed ({e})') from None
  return header, dense


def build_model(header: Mapping[str, Any], name: str = 'artifact') -> Any:
  """The Flax module an artifact header describes (`models.make`).

  Its in-model quantizers are the header's `hidden_state`, or the grids of
  `activations` when the run trained with them (`fake_quant`).
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  import compression  # pylint: disable=g-import-not-at-top
  from compression import activations  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  try:
    model_cfg = ml_collections.ConfigDict(dict(header['model']))
    hidden = header.get('hidden_state') or {'bits': 0, 'cell_bits': 0,
                                            'cell_clip': 4.0}
    hooks = activations.header_hooks(header.get('activations'))
    if hooks and (hidden.get('bits') or hidden.get('cell_bits')):
      raise InputError('hidden_state and activations both quantize h_t')
    if not hooks:
      hooks = compression.model_hooks(
          ml_collections.ConfigDict({'hidden_state': dict(hidden)}))
    return models.make(model_cfg, header['task'], dict(header['info']),
                       **hooks)
  except InputError as e:
    raise _fail(name, f'model: {e}') from None
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise _fail(name, f'model description malformed ({e})') from None


def check_shapes(model: Any, header: Mapping[str, Any],
                 dense: Mapping[str, np.ndarray], name: str = 'artifact'
                 ) -> None:
  """Every parameter of the model is present with its shape (or its factors).

  Raises:
    InputError: a missing, extra or misshapen leaf.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  info = header['info']
  t = int(info.get('max_len', 4) or 4)
  f = int(info.get('input_dim', 1) or 1)
  if header['task'] == 'language_model':
    x = jax.ShapeDtypeStruct((1, t), jnp.int32)
  else:
    x = jax.ShapeDtypeStruct((1, t, f), jnp.float32)
  lengths = jax.ShapeDtypeStruct((1,), jnp.int32)
  shapes = jax.eval_shape(lambda x, l: model.init(jax.random.PRNGKey(0), x, l),
                          x, lengths)['params']
  want = {}
  for kp, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    want['/'.join(str(getattr(k, 'key', k)) for k in kp)] = tuple(leaf.shape)
  seen = set()
  for p, shape in want.items():
    if p in dense:
      if tuple(dense[p].shape) != shape:
        raise _fail(name, f'{p} has shape {tuple(dense[p].shape)}, the model '
                    f'needs {shape}')
      seen.add(p)
    elif f'{p}/u' in dense and f'{p}/v' in dense and len(shape) == 2:
      u, v = dense[f'{p}/u'].shape, dense[f'{p}/v'].shape
      if len(u) != 2 or len(v) != 2 or u[0] != shape[0] or v[1] != shape[1] \
          or u[1] != v[0]:
        raise _fail(name, f'{p} factors {u} x {v} do not make {shape}')
      seen.update((f'{p}/u', f'{p}/v'))
    elif f'{p}/core_0' in dense and len(shape) == 2:
      # Tensor-train / Kronecker cores (`compression.tensor_train`).
      from models import cells  # pylint: disable=g-import-not-at-top
      cores = {k: dense[f'{p}/{k}'] for k in (
          q[len(p) + 1:] for q in dense if q.startswith(f'{p}/core_'))}
      try:
        got = cells.factored_shape(cores)
      except ValueError as e:
        raise _fail(name, f'{p}: {e}') from None
      if got != shape:
        raise _fail(name, f'{p} cores make {got}, the model needs {shape}')
      seen.update(f'{p}/{k}' for k in cores)
    else:
      raise _fail(name, f'parameter {p} is missing')
  extra = sorted(set(dense) - seen)
  if extra:
    raise _fail(name, f'unexpected leaves {", ".join(extra)}')


def read(path: str) -> Artifact:
  """Reads, validates and rebuilds an artifact.

  Args:
    path: the file.

  Returns:
    The Artifact: header, parameters (nested dict) and the Flax module;
    `artifact.model.apply({'params': artifact.params}, x, lengths)` runs it.

  Raises:
    InputError: a missing or damaged file (one line).
  """
  name = os.path.basename(path)
  try:
    with open(path, 'rb') as f:
      blob = f.read()
  except OSError as e:
    raise InputError(f'artifact {path}: cannot be read ({e.strerror})') from None
  stored: dict = {}
  header, dense = parse(blob, name, stored)
  model = build_model(header, name)
  check_shapes(model, header, dense, name)
  return Artifact(header, _nest(dense), model, len(blob), stored)


def predict(artifact: Artifact, x: Any, lengths: Any) -> Any:
  """The model output of an artifact on a batch (logits or forecasts)."""
  return artifact.model.apply({'params': artifact.params}, x, lengths)
