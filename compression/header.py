r"""The artifact header's compact binary form (format version 2).

A small model's weights fit in a few hundred bytes, so the description of
the file (model config, dataset, leaf names and shapes, encodings) must not
cost as much again. Version 1 stored it as deflated JSON (604 bytes for
deep_compression's GRU-64 classifier); version 2 stores the same JSON-like
value in a self-describing binary form where every name the project itself
writes is a one-byte reference into a fixed table, deflated when shorter
(265 bytes for that model, of which the model, data and task take 75).

Encoding of one value (a tag byte, then its content):

  ==========  ================================================================
  tag         value
  ==========  ================================================================
  0x00        null
  0x01 0x02   false, true
  0x03        unsigned integer: LEB128 varint follows
  0x04        negative integer -1 - n: varint n follows
  0x05        float64 (8 bytes, little-endian)
  0x06        float32 (4 bytes; used when the float64 value is exactly one)
  0x07        string: varint byte length, then UTF-8
  0x08        list: varint count, then the items
  0x09        object: varint count, then key, value pairs (keys are strings)
  0x10-0x7f   the unsigned integer tag - 0x10 (0..111) in the tag alone
  0x80-0xff   the string TABLE[tag - 0x80]
  ==========  ================================================================

TABLE is part of the format: strings may only ever be appended to it (a
reader meeting an index beyond its table refuses the file with one line).
The reader checks every length against the bytes left and bounds the
nesting depth, so a hostile header is refused, never a crash or a hang.

`pack` prefixes one byte: 0 (the encoding follows) or 1 (it follows as a raw
deflate stream, RFC 1951, used when that is shorter: the leaves' repeated
structure deflates by about a third).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

from compression.errors import InputError

# Names the writer uses, one byte each. Append only.
TABLE = (
    # Header and section keys.
    'version', 'config', 'task', 'model', 'info', 'data', 'methods',
    'payload_bytes', 'leaves', 'hidden_state', 'activations', 'path',
    'shape', 'dtype', 'encoding', 'node', 'blocks', 'name', 'kwargs',
    'eval_batch_size', 'cell', 'hidden', 'layers', 'pooling', 'embed_dim',
    'unroll', 'input_dim', 'max_len', 'num_classes', 'vocab_size',
    'horizon', 'bits', 'cell_bits', 'cell_clip', 'std', 'mean',
    'naive_rmse', 'mode', 'input_scale',
    # Node fields (compression.accounting).
    'k', 'v', 'codes', 'codebook', 'scale', 'zp', 'pos', 'fmt', 'b',
    'count', 'br', 'bc', 'c',
    # Values: tasks, cells, poolings, dtypes, codings, node kinds.
    'classification', 'forecasting', 'language_model', 'gru', 'lstm',
    'rnn', 'last', 'attention', 'float32', 'bfloat16', 'float16', 'raw',
    'packed', 'huffman', 'quant', 'shared', 'sparse', 'ref', 'dct',
    'bitmap', 'gaps', 'static', 'dynamic',
    # Datasets and their keywords.
    'japanese_vowels', 'normalize',
    # Parameter path components.
    'layer_0', 'layer_1', 'layer_2', 'layer_3', 'input_kernel',
    'recurrent_kernel', 'bias', 'recurrent_bias', 'head', 'kernel',
    'embed', 'embedding', 'u', 'proj',
    # Method names.
    'quantize', 'kmeans', 'prune', 'lowrank', 'threshold', 'budget',
    'kronecker', 'tensor_train',
    # Model and header options.
    'matmul_precision', 'default', 'fake_quant', 'early_exit',
)
_INDEX = {s: i for i, s in enumerate(TABLE)}
assert len(_INDEX) == len(TABLE) <= 128, 'at most 128 distinct names'

_MAX_DEPTH = 32
_MAX_INFLATED = 16 << 20  # Bytes a deflated header may inflate to.
_F64 = struct.Struct('<d')
_F32 = struct.Struct('<f')


def _varint(n: int, out: bytearray) -> None:
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return


def _put(value: Any, out: bytearray) -> None:
  if value is None:
    out.append(0x00)
  elif value is True or value is False:
    out.append(0x02 if value else 0x01)
  elif isinstance(value, int):
    if 0 <= value < 0x70:
      out.append(0x10 + value)
    elif value >= 0:
      out.append(0x03)
      _varint(value, out)
    else:
      out.append(0x04)
      _varint(-1 - value, out)
  elif isinstance(value, float):
    if not math.isfinite(value) or _F32.unpack(_F32.pack(value))[0] != value:
      out.append(0x05)
      out += _F64.pack(value)
    else:
      out.append(0x06)
      out += _F32.pack(value)
  elif isinstance(value, str):
    index = _INDEX.get(value)
    if index is not None:
      out.append(0x80 + index)
    else:
      data = value.encode('utf-8')
      out.append(0x07)
      _varint(len(data), out)
      out += data
  elif isinstance(value, (list, tuple)):
    out.append(0x08)
    _varint(len(value), out)
    for item in value:
      _put(item, out)
  elif isinstance(value, dict):
    out.append(0x09)
    _varint(len(value), out)
    for key in sorted(value):
      if not isinstance(key, str):
        raise TypeError(f'header keys are strings, got {key!r}')
      _put(key, out)
      _put(value[key], out)
  else:
    raise TypeError(f'a header cannot hold {type(value).__name__}')


def encode(value: Any) -> bytes:
  """The binary form of a JSON-like value (dicts, lists, str, int, float)."""
  out = bytearray()
  _put(value, out)
  return bytes(out)


class _Reader:
  """Decodes one value from bytes, checking every bound."""

  def __init__(self, data: bytes):
    self.data = memoryview(data)
    self.at = 0

  def _fail(self, why: str) -> InputError:
    return InputError(f'header: {why} at byte {self.at}')

  def _byte(self) -> int:
    if self.at >= len(self.data):
      raise self._fail('cut short')
    b = self.data[self.at]
    self.at += 1
    return b

  def _varint(self) -> int:
    n = shift = 0
    while True:
      b = self._byte()
      n |= (b & 0x7F) << shift
      if not b & 0x80:
        return n
      shift += 7
      if shift > 63:
        raise self._fail('integer too long')

  def _take(self, n: int) -> bytes:
    if n > len(self.data) - self.at:
      raise self._fail(f'length {n} runs past the end')
    out = bytes(self.data[self.at:self.at + n])
    self.at += n
    return out

  def value(self, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
      raise self._fail('nested too deeply')
    tag = self._byte()
    if tag >= 0x80:
      if tag - 0x80 >= len(TABLE):
        raise self._fail(f'string {tag - 0x80} is not in this reader\'s table')
      return TABLE[tag - 0x80]
    if tag >= 0x10:
      return tag - 0x10
    if tag == 0x00:
      return None
    if tag in (0x01, 0x02):
      return tag == 0x02
    if tag == 0x03:
      return self._varint()
    if tag == 0x04:
      return -1 - self._varint()
    if tag == 0x05:
      return _F64.unpack(self._take(8))[0]
    if tag == 0x06:
      return _F32.unpack(self._take(4))[0]
    if tag == 0x07:
      try:
        return self._take(self._varint()).decode('utf-8')
      except UnicodeDecodeError:
        raise self._fail('string is not UTF-8') from None
    if tag == 0x08:
      n = self._varint()
      if n > len(self.data) - self.at:  # Every item takes a byte at least.
        raise self._fail(f'list of {n} items runs past the end')
      return [self.value(depth + 1) for _ in range(n)]
    if tag == 0x09:
      n = self._varint()
      if 2 * n > len(self.data) - self.at:
        raise self._fail(f'object of {n} fields runs past the end')
      out = {}
      for _ in range(n):
        key = self.value(depth + 1)
        if not isinstance(key, str) or key in out:
          raise self._fail(f'bad or repeated key {key!r}')
        out[key] = self.value(depth + 1)
      return out
    raise self._fail(f'unknown tag 0x{tag:02x}')


def decode(data: bytes) -> Any:
  """The value `encode` wrote (every byte must be used).

  Raises:
    InputError: bytes that are not one well-formed value.
  """
  reader = _Reader(data)
  value = reader.value()
  if reader.at != len(data):
    raise InputError(f'header: {len(data) - reader.at} bytes left over')
  return value


def pack(value: Any) -> bytes:
  """`encode`, deflated when that is shorter, behind a one-byte flag."""
  data = encode(value)
  z = zlib.compressobj(9, zlib.DEFLATED, -15)
  deflated = z.compress(data) + z.flush()
  return (b'\x01' + deflated) if len(deflated) < len(data) else b'\x00' + data


def unpack(data: bytes) -> Any:
  """The value `pack` wrote.

  Raises:
    InputError: a bad flag, a broken or oversized deflate stream, or bytes
      that are not one well-formed value.
  """
  if not data or data[0] not in (0, 1):
    raise InputError('header: unknown packing flag')
  if data[0] == 0:
    return decode(data[1:])
  inflater = zlib.decompressobj(-15)
  try:
    raw = inflater.decompress(data[1:], _MAX_INFLATED)
  except zlib.error as e:
    raise InputError(f'header: broken deflate stream ({e})') from None
  if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
    raise InputError('header: deflate stream too large, cut short or '
                     'followed by junk')
  return decode(raw)
