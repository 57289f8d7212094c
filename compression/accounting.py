r"""Exact storage size of a compressed model, and the encoding that achieves it.

Every leaf of the dense tree the model runs with (`compressor.apply(params,
state)`: kernels, biases, embeddings, low-rank factors `<path>/u`, `<path>/v`)
gets one *encoding plan*, a small tree of nodes over *streams* (flat arrays
that are written to the artifact byte for byte). `plan(...)` builds the plans,
`sizes(...)` counts their bytes, `decode_leaf(...)` rebuilds a leaf from its
plan in pure numpy; `compression.export` writes the same streams to disk, so
the artifact's payload is exactly the total counted here.

Composing a chain
-----------------
`compressor.export(params, state)` of a chain gives one `{path: Record}`
dict per method, in chain order (`compression.records`). Accounting never
looks at which method wrote a record, only at its fields; for each dense leaf
it takes, walking the chain from the outermost method (the first, the one
closest to the dense view) inward:

1. *Where* values are stored: the first record with `positions`; nothing is
   stored for the other positions, which decode as exactly 0.
2. *What* is stored there (the value coder): the first record with `codes`
   (integer codes of the kept positions only, plus the scale, per channel or
   per tensor, and an asymmetric grid's zero point) or a `codebook` (indices
   of the kept positions plus the shared values); else float32 values.
3. A record with a `transform` describes the whole leaf: its positions and
   codes (or float coefficients) are over the transform's coefficients, and
   the leaf is the inverse transform. A record with `ref` makes the leaf a
   reference to another leaf, stored once (a shared low-rank factor).

So pruning then quantization stores positions + codes of kept values +
scales; pruning then weight sharing (Deep Compression) positions + indices of
kept values + codebook; factors are dense leaves of their own (`P/u`, `P/v`)
and take records like any other. A leaf without records (biases, embeddings,
the head by default) is float32. When a value coder maps many positions to
exactly 0 (a zero cluster of shared values, the zero code of an integer
grid, or a float leaf full of zeros), the encoder also stores it sparse
when that is smaller: the decoded values are unchanged.

Each plan is checked: `plan` decodes every leaf and compares it with the dense
leaf (bit for bit; an inverse transform, which is float arithmetic, to 1e-5).
Records that do not reproduce their leaf are an error (one line naming the
leaf), never a silent float32 copy, so the artifact never holds a wrong model
and never one larger than its records promise.

Node kinds (JSON-able dicts; `s` fields index the leaf's streams):

  ========  =================================================================
  kind      fields and meaning
  ========  =================================================================
  raw       `v`: float32 values, one per position
  quant     `bits`, `codes` (unsigned codes u of `bits` bits), `scale`
            (float32, 1 or shape[-1] values: per channel, indexed by the
            position's column), `zp` (uint8 zero points, like scale; absent
            for symmetric: 2^(bits-1) - 1); value = (u - zp) * scale
  shared    `bits`, `codes` (cluster indices), `codebook` (float32);
            value = codebook[index]
  sparse    `pos` (position stream), `fmt` ('bitmap' | 'gaps'), `b` (bits of
            a relative index), `count` (kept positions), `v` (the value node
            of the kept positions, in row-major order); others are 0
  (kind)    a transform of `compression.transforms.KINDS`, named by its
            kind: `br`, `bc` (block shape), `c` (a node over the coefficient
            grid); the leaf is the inverse transform of the coefficients
  ref       `path`: the leaf is a copy of another leaf (shared factor)
  ========  =================================================================

Positions: `bitmap` is one bit per element (1 = kept); `gaps` are relative
indices as in Deep Compression with b-bit symbols: symbol d in 1..2^b-1 moves
d positions past the previous kept one (the first from position -1) and keeps
it; symbol 0 moves 2^b-1 positions and keeps nothing (so long runs of removed
weights need no filler values). The encoder picks the format and b in 2..8
that store fewest bytes.

Sizes
-----
An integer stream of n symbols of b bits takes ceil(n b / 8) bytes at fixed
width (`pack_bits` order). Its entropy-coded size is that of a canonical
Huffman code (lengths at most 15): a table of one 4-bit length per symbol of
the 2^b alphabet (ceil(2^b / 2) bytes) plus ceil(sum of code lengths / 8)
bytes, as Deep Compression codes its weight indices and relative positions.
With `coding='huffman'` each integer stream takes the smaller of the two
(an encoder never keeps a code that loses), and the choice of position format
follows the same rule. Float streams take 4 bytes per value, zero points one
byte. The dense size is 4 bytes per parameter of the dense view.
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any, Mapping, Sequence

import numpy as np

from compression import records
from compression import transforms
from compression.errors import InputError

CODINGS = ('fixed', 'huffman')
MAX_CODE_LEN = 15  # Huffman code lengths fit a 4-bit table entry.
# An inverse transform is float arithmetic, exact only to rounding: its
# leaves match to this tolerance times max(1, max|w|).
TRANSFORM_ATOL = 1e-5


# ----------------------------------------------------------------------------
# Huffman


def huffman_code_lengths(freqs: Sequence[int],
                         max_len: int = MAX_CODE_LEN) -> np.ndarray:
  """Code lengths of a Huffman code for symbol frequencies.

  Symbols with frequency 0 get length 0 (no code); a single used symbol gets
  length 1. Lengths over `max_len` are avoided by halving the frequencies
  (keeping them >= 1) and rebuilding, which changes the code only for very
  skewed counts.

  Args:
    freqs: count of each symbol of the alphabet.
    max_len: the longest code allowed.

  Returns:
    int array of code lengths, one per symbol.

  Example:
    >>> huffman_code_lengths([5, 2, 1, 1]).tolist()
    [1, 2, 3, 3]
  """
  f = np.asarray(freqs, np.int64)
  lengths = np.zeros(f.size, np.int64)
  used = np.flatnonzero(f > 0)
  if used.size == 0:
    return lengths
  if used.size == 1:
    lengths[used[0]] = 1
    return lengths
  counts = f[used].copy()
  while True:
    # Heap items (weight, tiebreak, symbols below): ties go to the earlier
    # node, so the code is deterministic.
    heap = [(int(c), i, [i]) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    depth = np.zeros(used.size, np.int64)
    order = used.size
    while len(heap) > 1:
      w1, _, s1 = heapq.heappop(heap)
      w2, _, s2 = heapq.heappop(heap)
      members = s1 + s2
      depth[members] += 1
      heapq.heappush(heap, (w1 + w2, order, members))
      order += 1
    if depth.max() <= max_len:
      lengths[used] = depth
      return lengths
    counts = np.maximum(counts // 2, 1)


def canonical_codes(lengths: Sequence[int]) -> np.ndarray:
  """Canonical Huffman codes for code lengths (codes ordered by (length, symbol)).

  Args:
    lengths: code length per symbol (0 = unused).

  Returns:
    int array: the code of each symbol (its `length` low bits, MSB first).

  Raises:
    InputError: the lengths violate Kraft's inequality (no prefix code).
  """
  lengths = np.asarray(lengths, np.int64)
  codes = np.zeros(lengths.size, np.int64)
  used = [int(s) for s in np.lexsort((np.arange(lengths.size), lengths))
          if lengths[s] > 0]
  code, prev = 0, 0
  for i, s in enumerate(used):
    if i:
      code += 1
    code <<= int(lengths[s]) - prev
    prev = int(lengths[s])
    if code >> prev:
      raise InputError('Huffman table: code lengths violate the Kraft '
                       'inequality')
    codes[s] = code
  return codes


def huffman_payload_bits(symbols: np.ndarray, alphabet: int) -> tuple[int, np.ndarray]:
  """Bits of the Huffman-coded stream and the code lengths used.

  Args:
    symbols: non-negative integer symbols.
    alphabet: alphabet size (symbols < alphabet).

  Returns:
    (sum of code lengths over the stream, the lengths table).
  """
  freqs = np.bincount(np.asarray(symbols, np.int64).reshape(-1),
                      minlength=alphabet)
  lengths = huffman_code_lengths(freqs)
  return int(np.dot(freqs, lengths)), lengths


def huffman_table_bytes(bits: int) -> int:
  """Bytes of the code-length table of a 2^bits alphabet (4 bits each)."""
  return -(-(1 << bits) // 2)


def huffman_encode(symbols: np.ndarray, bits: int) -> bytes:
  """Table (4-bit lengths, low nibble first) + MSB-first code bitstream.

  Args:
    symbols: integers in [0, 2^bits).
    bits: symbol width, 1..8.

  Returns:
    The bytes: `huffman_table_bytes(bits)` table bytes, then the codes.
  """
  symbols = np.asarray(symbols, np.int64).reshape(-1)
  _, lengths = huffman_payload_bits(symbols, 1 << bits)
  codes = canonical_codes(lengths)
  nib = np.zeros(2 * huffman_table_bytes(bits), np.uint8)
  nib[:lengths.size] = lengths
  table = (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)
  lens = lengths[symbols]
  total = int(lens.sum())
  if total == 0:
    return table.tobytes()
  owner = np.repeat(np.arange(symbols.size), lens)
  starts = np.cumsum(lens) - lens
  within = np.arange(total) - starts[owner]
  stream = (codes[symbols][owner] >> (lens[owner] - 1 - within)) & 1
  return table.tobytes() + np.packbits(stream.astype(np.uint8)).tobytes()


def huffman_decode(data: bytes, bits: int, count: int) -> np.ndarray:
  """Inverse of `huffman_encode`: `count` symbols as uint8.

  Raises:
    InputError: a bad table, a code that is not in the table, or a stream that
      ends before `count` symbols.
  """
  tb = huffman_table_bytes(bits)
  raw = np.frombuffer(data, np.uint8)
  if raw.size < tb:
    raise InputError('Huffman block shorter than its table')
  table = raw[:tb]
  lengths = np.stack([table & 15, table >> 4], 1).reshape(-1)[:1 << bits]
  lengths = lengths.astype(np.int64)
  if count == 0:
    return np.zeros(0, np.uint8)
  if not lengths.any():
    raise InputError('Huffman table is empty')
  codes = canonical_codes(lengths)
  top = int(lengths.max())
  # Lookup of every `top`-bit window: (symbol, length) of the code it starts.
  look_sym = np.full(1 << top, -1, np.int64)
  look_len = np.zeros(1 << top, np.int64)
  for s in np.flatnonzero(lengths):
    shift = top - int(lengths[s])
    lo = int(codes[s]) << shift
    look_sym[lo:lo + (1 << shift)] = s
    look_len[lo:lo + (1 << shift)] = lengths[s]
  stream = np.unpackbits(raw[tb:])
  nbits = stream.size
  padded = np.concatenate([stream, np.zeros(top, np.uint8)]).astype(np.int64)
  window = np.zeros(nbits + 1, np.int64)
  for j in range(top):
    window = (window << 1) | padded[j:j + nbits + 1]
  sym_at = look_sym[window].tolist()
  len_at = look_len[window].tolist()
  out = np.empty(count, np.int64)
  p = 0
  for i in range(count):
    if p >= nbits:
      raise InputError('Huffman stream ends early')
    s = sym_at[p]
    if s < 0:
      raise InputError('Huffman stream holds a code not in its table')
    out[i] = s
    p += len_at[p]
  if p > nbits:
    raise InputError('Huffman stream ends early')
  return out.astype(np.uint8)


# ----------------------------------------------------------------------------
# Bit packing

def pack_bits(codes: Any, bits: int) -> np.ndarray:
  """Packs unsigned codes of `bits` bits each into a little-endian bitstream.

  Code i occupies stream bits [i*bits, (i+1)*bits), least significant bit
  first; stream bit j is bit (j mod 8) of byte j // 8. So 4-bit codes
  [a, b] become the byte `a | b << 4`, and 8-bit codes are the bytes
  themselves. The last byte is zero-padded.

  Args:
    codes: integers in [0, 2^bits), any shape (flattened row-major).
    bits: 1..8.

  Returns:
    uint8 array of ceil(n * bits / 8) bytes.

  Raises:
    InputError: bits outside 1..8 or a code that does not fit.
  """
  if not 1 <= int(bits) <= 8:
    raise InputError(f'pack_bits: bits {bits} outside 1..8')
  codes = np.asarray(codes).reshape(-1)
  if codes.size and (codes.min() < 0 or codes.max() >= 2 ** bits):
    raise InputError(f'pack_bits: codes outside [0, {2 ** bits - 1}]')
  codes = codes.astype(np.uint8)
  if bits == 8:
    return codes.copy()
  stream = (codes[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
  return np.packbits(stream.reshape(-1), bitorder='little')


def unpack_bits(packed: Any, bits: int, count: int) -> np.ndarray:
  """Inverse of `pack_bits`: the first `count` codes, as uint8.

  Args:
    packed: the uint8 bytes.
    bits: 1..8, as packed.
    count: number of codes.

  Returns:
    uint8 array of shape (count,).

  Raises:
    InputError: too few bytes for `count` codes, or bits outside 1..8.
  """
  if not 1 <= int(bits) <= 8:
    raise InputError(f'unpack_bits: bits {bits} outside 1..8')
  packed = np.asarray(packed, np.uint8).reshape(-1)
  if packed.size * 8 < count * bits:
    raise InputError(f'unpack_bits: {packed.size} bytes hold fewer than '
                     f'{count} codes of {bits} bits')
  if bits == 8:
    return packed[:count].copy()
  stream = np.unpackbits(packed, bitorder='little', count=count * bits)
  weights = (1 << np.arange(bits)).astype(np.uint16)
  return (stream.reshape(count, bits).astype(np.uint16) @ weights).astype(
      np.uint8)


# ----------------------------------------------------------------------------
# Streams and plans


@dataclasses.dataclass
class Stream:
  """A flat array the artifact stores as one block.

  Attributes:
    data: float32 values ('float') or unsigned integer symbols ('int').
    kind: 'float' | 'int'.
    bits: bits per symbol of an int stream (1..8); 32 for float.
    entropy: whether Huffman coding may be used (int streams).
  """
  data: np.ndarray
  kind: str
  bits: int
  entropy: bool = True

  @property
  def count(self) -> int:
    return int(self.data.size)

  def fixed_bytes(self) -> int:
    if self.kind == 'float':
      return 4 * self.count
    return -(-self.count * self.bits // 8)

  def huffman_bytes(self) -> int:
    """Table + coded stream; the fixed size where Huffman does not apply."""
    if self.kind == 'float' or not self.entropy or not self.count:
      return self.fixed_bytes()
    payload, _ = huffman_payload_bits(self.data, 1 << self.bits)
    return huffman_table_bytes(self.bits) + -(-payload // 8)

  def coding(self, coding: str) -> str:
    """How this stream is written under `coding`: 'raw', 'packed', 'huffman'."""
    if self.kind == 'float':
      return 'raw'
    if coding == 'huffman' and self.entropy and self.count and (
        self.huffman_bytes() < self.fixed_bytes()):
      return 'huffman'
    return 'packed'

  def stored_bytes(self, coding: str) -> int:
    c = self.coding(coding)
    return self.huffman_bytes() if c == 'huffman' else self.fixed_bytes()


@dataclasses.dataclass
class Leaf:
  """The encoding plan of one dense leaf.

  Attributes:
    path: '/'-joined path in the dense tree.
    shape: the leaf's shape.
    methods: the chain methods whose entries shaped it.
    encoding: the names of the methods whose records shaped it, joined by
      '+' ('float32' for none; '+sparse' when its zeros were dropped).
    node: the JSON-able node tree (see the module docstring).
    streams: the streams the node indexes.
    nonzeros: nonzero values of the decoded leaf.
    bits: bits per stored value (32 float, the code width otherwise).
  """
  path: str
  shape: tuple[int, ...]
  methods: tuple[str, ...]
  encoding: str
  node: dict
  streams: list[Stream]
  nonzeros: int
  bits: int

  def bytes(self, coding: str) -> int:
    return sum(s.stored_bytes(coding) for s in self.streams)


def _float_stream(x: np.ndarray) -> Stream:
  return Stream(np.asarray(x, np.float32).reshape(-1), 'float', 32, False)


def _int_stream(x: np.ndarray, bits: int, entropy: bool = True) -> Stream:
  return Stream(np.asarray(x).reshape(-1).astype(np.uint8), 'int', int(bits),
                entropy)


def gap_symbols(positions: np.ndarray, b: int) -> np.ndarray:
  """Relative-index symbols of sorted positions with b-bit symbols."""
  m = (1 << b) - 1
  pos = np.asarray(positions, np.int64)
  d = np.diff(np.concatenate([[-1], pos]))
  esc = (d - 1) // m
  last = d - esc * m
  counts = esc + 1
  out = np.zeros(int(counts.sum()), np.int64)
  out[np.cumsum(counts) - 1] = last
  return out


def gap_positions(symbols: np.ndarray, b: int, n: int, count: int) -> np.ndarray:
  """Inverse of `gap_symbols`, validated against n elements and count kept."""
  m = (1 << b) - 1
  s = np.asarray(symbols, np.int64)
  if s.size and s.max() > m:
    raise InputError(f'relative index {int(s.max())} exceeds {m}')
  pos = np.cumsum(np.where(s == 0, m, s)) - 1
  pos = pos[s != 0]
  if pos.size != count or (pos.size and pos[-1] >= n):
    raise InputError('relative indices do not fit the parameter shape')
  return pos


def _position_stream(positions: np.ndarray, n: int, coding: str
                     ) -> tuple[dict, Stream]:
  """The smallest position encoding under `coding` (bitmap or b-bit gaps)."""
  keep = np.zeros(n, np.uint8)
  keep[positions] = 1
  best = ({'fmt': 'bitmap', 'b': 1}, _int_stream(keep, 1, entropy=False))
  for b in range(2, 9):
    cand = _int_stream(gap_symbols(positions, b), b)
    if cand.stored_bytes(coding) < best[1].stored_bytes(coding):
      best = ({'fmt': 'gaps', 'b': b}, cand)
  return best


def positions_of(node: dict, streams: Sequence[np.ndarray], n: int
                 ) -> np.ndarray:
  """Kept positions of a sparse node (streams already decoded to symbols)."""
  sym = np.asarray(streams[node['pos']])
  count = int(node['count'])
  if node['fmt'] == 'bitmap':
    if sym.size != n or (sym > 1).any():
      raise InputError('bitmap does not fit the parameter shape')
    pos = np.flatnonzero(sym)
    if pos.size != count:
      raise InputError('bitmap count mismatch')
    return pos
  if node['fmt'] == 'gaps':
    b = int(node['b'])
    if not 2 <= b <= 8:
      raise InputError(f'relative index width {b} outside 2..8')
    return gap_positions(sym, b, n, count)
  raise InputError(f"unknown position format {node['fmt']!r}")


# ----------------------------------------------------------------------------
# Decoding (pure numpy; also used by the artifact reader)


def decode_values(node: dict, streams: Sequence[np.ndarray],
                  shape: tuple[int, ...], positions: np.ndarray | None
                  ) -> np.ndarray:
  """Float32 values of a value node at `positions` (None: every element).

  Args:
    node: a 'raw', 'quant', 'shared' or 'sparse' node.
    streams: the leaf's decoded streams (float32 arrays or int symbols).
    shape: the leaf's shape.
    positions: flat positions the values belong to (their columns pick
      per-channel scales), or None for all of them in row-major order.

  Returns:
    float32 array of one value per position.
  """
  n = int(np.prod(shape, dtype=np.int64))
  count = n if positions is None else int(positions.size)
  kind = node['k']
  if kind == 'raw':
    v = np.asarray(streams[node['v']], np.float32)
    if v.size != count:
      raise InputError('float value count does not match the positions')
    return v
  if kind in ('quant', 'shared'):
    u = np.asarray(streams[node['codes']])
    if u.size != count:
      raise InputError('code count does not match the positions')
    if kind == 'shared':
      book = np.asarray(streams[node['codebook']], np.float32)
      if u.size and int(u.max()) >= book.size:
        raise InputError('cluster index beyond the codebook')
      return book[u.astype(np.int64)]
    bits = int(node['bits'])
    if not 1 <= bits <= 8:
      raise InputError(f'code width {bits} outside 1..8')
    scale = np.asarray(streams[node['scale']], np.float32)
    if node.get('zp') is None:
      zero = np.full(scale.shape, 2 ** (bits - 1) - 1, np.float32)
    else:
      zero = np.asarray(streams[node['zp']]).astype(np.float32)
    if zero.size != scale.size or scale.size not in (1, shape[-1] if shape else 1):
      raise InputError('scale / zero point size does not fit the shape')
    if scale.size == 1:
      ch = np.zeros(count, np.int64)
    else:
      pos = np.arange(n) if positions is None else positions
      ch = pos % shape[-1]
    return ((u.astype(np.float32) - zero[ch]) * scale[ch]).astype(np.float32)
  if kind == 'sparse':
    if positions is not None:
      raise InputError('nested sparse node')
    pos = positions_of(node, streams, n)
    out = np.zeros(n, np.float32)
    out[pos] = decode_values(node['v'], streams, shape, pos)
    return out
  raise InputError(f'unknown value node {kind!r}')


def decode_leaf(leaf_node: dict, streams: Sequence[np.ndarray],
                shape: tuple[int, ...],
                resolved: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
  """The dense float32 leaf of a node tree (pure numpy).

  Args:
    leaf_node: the leaf's node.
    streams: its decoded streams (float32 arrays or integer symbols).
    shape: the leaf's shape.
    resolved: leaves decoded so far, for 'ref' nodes.

  Returns:
    float32 array of `shape`.
  """
  kind = leaf_node['k']
  if kind == 'ref':
    src = (resolved or {}).get(leaf_node['path'])
    if src is None or tuple(src.shape) != tuple(shape):
      raise InputError(f"reference to {leaf_node['path']!r} does not resolve")
    return src
  if kind in transforms.KINDS:
    br, bc = int(leaf_node['br']), int(leaf_node['bc'])
    if len(shape) != 2 or br < 1 or bc < 1 or shape[0] % br or shape[1] % bc:
      raise InputError('transform block shape does not divide the kernel')
    c = decode_values(leaf_node['c'], streams, shape, None).reshape(shape)
    return transforms.inverse(kind, c, (br, bc))
  return decode_values(leaf_node, streams, shape, None).reshape(shape)


def _codes_of(node: dict, streams: Sequence[np.ndarray]) -> records.Codes:
  bits = int(node['bits'])
  scale = np.asarray(streams[node['scale']], np.float32)
  zp = (None if node.get('zp') is None
        else np.asarray(streams[node['zp']]).astype(np.int64))
  return records.Codes(np.asarray(streams[node['codes']]).astype(np.int64),
                       bits, scale, zp)


def leaf_record(leaf_node: dict, streams: Sequence[np.ndarray],
                shape: tuple[int, ...]) -> records.Record | None:
  """What a file stores for one leaf, as a Record (None: float32 values).

  The inverse of the encoder's merge, for runtimes that compute with the
  stored form (integer codes, codebooks, kept positions) rather than the
  dense float leaf. One difference from a method's records: when
  `positions` is set, `codes.u` / `codebook.index` hold the codes of the
  kept positions only (row-major order), since removed weights store none.
  A transform's record holds `transform` and its `coefficients` (decoded to
  float32); a copy holds `ref`.

  Args:
    leaf_node: the leaf's node (validated by `decode_leaf` first).
    streams: its decoded streams.
    shape: the leaf's shape.

  Returns:
    The record, or None for a leaf stored as plain float32 values.
  """
  kind = leaf_node['k']
  if kind == 'ref':
    return records.Record(ref=leaf_node['path'])
  if kind in transforms.KINDS:
    coef = decode_values(leaf_node['c'], streams, shape, None).reshape(shape)
    return records.Record(
        transform=records.Transform(kind, (int(leaf_node['br']),
                                           int(leaf_node['bc']))),
        coefficients=coef)
  positions = None
  node = leaf_node
  if kind == 'sparse':
    n = int(np.prod(shape, dtype=np.int64))
    positions = positions_of(node, streams, n)
    node = node['v']
  if node['k'] == 'quant':
    return records.Record(positions=positions, codes=_codes_of(node, streams))
  if node['k'] == 'shared':
    return records.Record(positions=positions, codebook=records.Codebook(
        np.asarray(streams[node['codes']]).astype(np.int64), int(node['bits']),
        np.asarray(streams[node['codebook']], np.float32)))
  return None if positions is None else records.Record(positions=positions)


# ----------------------------------------------------------------------------
# Building plans from a chain's records


def _coder(rec: records.Record | None) -> tuple[str, dict[str, Any]] | None:
  """(node kind, fields) of the value coder a record gives, or None (float)."""
  if rec is None:
    return None
  if rec.codes is not None:
    c = rec.codes
    return 'quant', {
        'bits': int(c.bits), 'u': np.asarray(c.u, np.int64).reshape(-1),
        'scale': np.asarray(c.scale, np.float32).reshape(-1),
        'zp': (None if c.zero_point is None
               else np.asarray(c.zero_point).reshape(-1))}
  if rec.codebook is not None:
    b = rec.codebook
    return 'shared', {'bits': int(b.bits),
                      'u': np.asarray(b.index, np.int64).reshape(-1),
                      'codebook': np.asarray(b.codebook, np.float32)}
  return None


def _value_node(coder: tuple[str, dict] | None, dense_flat: np.ndarray,
                positions: np.ndarray | None, streams: list[Stream]) -> dict:
  """Appends the streams of the values at `positions` and returns the node."""
  sel = slice(None) if positions is None else positions
  if coder is None:
    streams.append(_float_stream(dense_flat[sel]))
    return {'k': 'raw', 'v': len(streams) - 1}
  kind, f = coder
  node: dict[str, Any] = {'k': kind, 'bits': f['bits']}
  streams.append(_int_stream(f['u'][sel], f['bits']))
  node['codes'] = len(streams) - 1
  if kind == 'shared':
    streams.append(_float_stream(f['codebook']))
    node['codebook'] = len(streams) - 1
  else:
    streams.append(_float_stream(f['scale']))
    node['scale'] = len(streams) - 1
    if f['zp'] is not None:
      streams.append(_int_stream(f['zp'], 8, entropy=False))
      node['zp'] = len(streams) - 1
  return node


def _sparse(positions: np.ndarray, n: int, coder, dense_flat, coding: str
            ) -> tuple[dict, list[Stream]]:
  streams: list[Stream] = []
  pos_node, pos_stream = _position_stream(positions, n, coding)
  streams.append(pos_stream)
  node = {'k': 'sparse', 'pos': 0, 'count': int(positions.size), **pos_node}
  node['v'] = _value_node(coder, dense_flat, positions, streams)
  return node, streams


def _values(flat: np.ndarray, positions: np.ndarray | None, coder,
            coding: str) -> tuple[dict, list[Stream]]:
  """The node of a flat value array: all of it, or its kept positions."""
  if positions is not None:
    return _sparse(np.asarray(positions, np.int64), flat.size, coder, flat,
                   coding)
  streams: list[Stream] = []
  return _value_node(coder, flat, None, streams), streams


def _first(found: Sequence[records.Record], field: str
           ) -> records.Record | None:
  """The first record of the chain (outermost method) that sets `field`."""
  for rec in found:
    if getattr(rec, field) is not None:
      return rec
  return None


def _coder_of(found: Sequence[records.Record]):
  """The value coder of the first record with codes or a codebook."""
  for rec in found:
    if rec.codes is not None or rec.codebook is not None:
      return _coder(rec)
  return None


def _encode_leaf(dense: np.ndarray, found: Sequence[records.Record],
                 coding: str, zero_rule: bool = True
                 ) -> tuple[dict, list[Stream], bool]:
  """(node, streams, stored sparse by the zero rule) of one dense leaf.

  The records are in chain order, outermost first. A `ref` makes the leaf a
  reference. The records before the first `transform` describe the leaf
  itself: the first with positions says where values are kept, the first
  with codes or a codebook how they are coded (float32 when none does).
  When none of them does either, a `transform` record describes the whole
  leaf in its domain: its positions and codes (or those of the records after
  it, which act on the coefficients), else its float coefficients.
  """
  n = int(dense.size)
  flat = np.asarray(dense, np.float32).reshape(-1)
  ref = _first(found, 'ref')
  if ref is not None:
    return {'k': 'ref', 'path': ref.ref}, [], False
  t = next((i for i, r in enumerate(found) if r.transform is not None),
           len(found))
  outer = found[:t]
  where = _first(outer, 'positions')
  coder = _coder_of(outer)
  if t < len(found) and where is None and coder is None:
    tr = found[t]
    inner = found[t:]
    coef = (np.asarray(tr.coefficients, np.float32).reshape(-1)
            if tr.coefficients is not None else np.zeros(n, np.float32))
    kept = _first(inner, 'positions')
    node, streams = _values(coef, None if kept is None else kept.positions,
                            _coder_of(inner), coding)
    return {'k': tr.transform.kind, 'br': int(tr.transform.block[0]),
            'bc': int(tr.transform.block[1]), 'c': node}, streams, False
  if where is not None:
    node, streams = _values(flat, where.positions, coder, coding)
    return node, streams, False
  node, streams = _values(flat, None, coder, coding)
  if not zero_rule:
    return node, streams, False
  # Many exact zeros (a zero cluster, zero codes, a sparse float
  # leaf): store only the nonzero positions when that is smaller.
  nz = np.flatnonzero(flat != 0)
  if nz.size < n:
    s_node, s_streams = _sparse(nz, n, coder, flat, coding)
    if sum(s.stored_bytes(coding) for s in s_streams) < sum(
        s.stored_bytes(coding) for s in streams):
      return s_node, s_streams, True
  return node, streams, False


def _leaf_bits(node: dict) -> int:
  if node['k'] in ('sparse',):
    return _leaf_bits(node['v'])
  if node['k'] in transforms.KINDS:
    return _leaf_bits(node['c'])
  if node['k'] in ('quant', 'shared'):
    return int(node['bits'])
  return 0 if node['k'] == 'ref' else 32


def flatten(tree: Any, prefix: str = '') -> dict[str, np.ndarray]:
  """{'/'-joined path: numpy array} of a nested dict of arrays, in key order."""
  out: dict[str, np.ndarray] = {}
  if isinstance(tree, Mapping):
    for key in sorted(tree):
      out.update(flatten(tree[key], f'{prefix}{key}/'))
  else:
    out[prefix[:-1]] = np.asarray(tree)
  return out


def _exports(exports: Any) -> list[dict]:
  if isinstance(exports, Mapping):
    return [dict(exports)] if exports else []
  return [dict(e) for e in exports]


def plan(dense: Any, exports: Any, methods: Sequence[str],
         coding: str = 'huffman', check: bool = True) -> list[Leaf]:
  """The encoding plan of every dense leaf (see the module docstring).

  Args:
    dense: the dense tree the model runs with (`compressor.apply` output).
    exports: `compressor.export(params, state)`: one `{path: Record}` dict
      per chained method (a single dict for one method, {} or () for none).
    methods: the chained method names, in order (`compression.method_names`);
      they only label the leaves (`Leaf.encoding`).
    coding: 'fixed' or 'huffman' (which stored size choices minimise).
    check: decode each plan and compare it with the dense leaf.

  Returns:
    One Leaf per dense leaf, in sorted path order.

  Raises:
    InputError: unknown coding, exports that do not match the methods, a
      value that is not a Record, a record for a leaf the tree lacks, or
      records that do not reproduce their leaf (bit for bit; an inverse transform to 1e-5).
  """
  if coding not in CODINGS:
    raise InputError(f'coding: unknown {coding!r}; valid: {", ".join(CODINGS)}')
  per_method = _exports(exports)
  methods = list(methods)
  if len(per_method) != len(methods):
    raise InputError(f'accounting: {len(per_method)} export dicts for '
                     f'{len(methods)} methods {methods}')
  leaves = flatten(dense)
  for name, entries in zip(methods, per_method):
    for path, rec in entries.items():
      records.check(rec, path)
      if path not in leaves:
        raise InputError(f'accounting: {name} exports {path!r}, which the '
                         'dense tree does not hold')
  out = []
  for path, value in leaves.items():
    found = [(name, entries[path]) for name, entries in zip(methods, per_method)
             if path in entries]
    node, streams, zeros = _encode_leaf(value, [r for _, r in found], coding)
    names = tuple(name for name, _ in found)
    encoding = '+'.join(names) or 'float32'
    if zeros:
      encoding += '+sparse'
    if node['k'] == 'ref':
      encoding = 'shared-factor'
    if check and node['k'] != 'ref':
      _check_decodes(path, encoding, node, streams, value)
    out.append(Leaf(path, tuple(int(d) for d in value.shape), names, encoding,
                    node, streams, int(np.count_nonzero(value)),
                    _leaf_bits(node)))
  return out


def _check_decodes(path: str, encoding: str, node: dict,
                   streams: Sequence[Stream], value: np.ndarray) -> None:
  """Raises unless the planned leaf decodes to `value`."""
  try:
    got = decode_leaf(node, [s.data for s in streams], tuple(value.shape))
    tol = 0.0
    if node['k'] in transforms.KINDS:  # Relative to the leaf's magnitude.
      tol = TRANSFORM_ATOL * max(1.0, float(np.max(np.abs(value),
                                                   initial=0.0)))
    ok = got.shape == value.shape and (
        np.array_equal(got, value.astype(np.float32)) if tol == 0 else
        np.allclose(got, value, rtol=0, atol=tol))
  except (InputError, ValueError, IndexError, KeyError):
    ok = False
  if not ok:
    raise InputError(
        f'accounting: {path}: the records of {encoding} do not decode to the '
        'values the model runs with, so they cannot be stored exactly (this '
        'chain of methods has no exact encoding for this leaf)')


def rebuild(found: Sequence[records.Record], shape: Sequence[int],
            dense: np.ndarray | None = None) -> np.ndarray:
  """The float32 leaf that a chain's records for one leaf decode to.

  The one decoder of records: it builds the leaf's node as `plan` does and
  decodes it as the artifact reader does.

  Args:
    found: the leaf's records, in chain order.
    shape: the leaf's shape.
    dense: the float values for positions no record codes (None: zeros,
      for records that code every stored value).

  Returns:
    float32 array of `shape`.
  """
  shape = tuple(int(d) for d in shape)
  if dense is None:
    dense = np.zeros(shape, np.float32)
  node, streams, _ = _encode_leaf(np.asarray(dense, np.float32),
                                  [records.check(r, 'leaf') for r in found],
                                  'fixed', zero_rule=False)
  return decode_leaf(node, [s.data for s in streams], shape)


@dataclasses.dataclass
class Sizes:
  """Byte totals of a plan."""
  dense_bytes: int  # float32 of every dense parameter.
  fixed_width_bytes: int  # Payload with fixed-width integer codes.
  entropy_coded_bytes: int  # Payload with Huffman-coded integer codes.
  params_total: int
  params_nonzero: int

  def ratio(self, stored: int) -> float:
    return self.dense_bytes / max(1, stored)


def sizes(leaves: Sequence[Leaf]) -> Sizes:
  """Dense, fixed-width and entropy-coded byte totals of a plan.

  Args:
    leaves: `plan(...)` output (its position formats were chosen for the
      plan's coding; for exact numbers size each coding's own plan).

  Returns:
    The Sizes.
  """
  dense = sum(4 * int(np.prod(l.shape, dtype=np.int64)) for l in leaves
              if l.node['k'] != 'ref')
  ref_params = sum(int(np.prod(l.shape, dtype=np.int64)) for l in leaves
                   if l.node['k'] == 'ref')
  return Sizes(
      dense_bytes=dense + 4 * ref_params,
      fixed_width_bytes=sum(l.bytes('fixed') for l in leaves),
      entropy_coded_bytes=sum(l.bytes('huffman') for l in leaves),
      params_total=sum(int(np.prod(l.shape, dtype=np.int64)) for l in leaves),
      params_nonzero=sum(l.nonzeros for l in leaves))


def account(dense: Any, exports: Any, methods: Sequence[str]) -> dict[str, Any]:
  """The size report of a compressed model (payload only, no file header).

  Args:
    dense: `compressor.apply(params, state)`.
    exports: `compressor.export(params, state)`.
    methods: the chained method names.

  Returns:
    {'dense_bytes', 'fixed_width_bytes', 'entropy_coded_bytes',
    'compression_ratio_fixed', 'compression_ratio_entropy', 'leaves': [rows]}
    where each row has path, shape, methods, encoding, bits, nonzeros,
    fixed_bytes and entropy_bytes.
  """
  fixed = plan(dense, exports, methods, 'fixed')
  entropy = plan(dense, exports, methods, 'huffman')
  s_fixed, s_ent = sizes(fixed), sizes(entropy)
  rows = [{'path': a.path, 'shape': list(a.shape),
           'methods': ','.join(a.methods), 'encoding': b.encoding,
           'bits': b.bits, 'nonzeros': b.nonzeros,
           'fixed_bytes': a.bytes('fixed'), 'entropy_bytes': b.bytes('huffman')}
          for a, b in zip(fixed, entropy)]
  return {
      'dense_bytes': s_fixed.dense_bytes,
      'fixed_width_bytes': s_fixed.fixed_width_bytes,
      'entropy_coded_bytes': s_ent.entropy_coded_bytes,
      'compression_ratio_fixed': s_fixed.ratio(s_fixed.fixed_width_bytes),
      'compression_ratio_entropy': s_ent.ratio(s_ent.entropy_coded_bytes),
      'leaves': rows,
  }


def format_table(report: Mapping[str, Any]) -> str:
  """A per-leaf text table plus totals of an `account` report."""
  lines = [f"{'path':40s} {'shape':>12s} {'methods':>16s} {'bits':>4s} "
           f"{'nonzero':>8s} {'fixed B':>8s} {'huff B':>8s}"]
  for r in report['leaves']:
    lines.append(f"{r['path']:40s} {'x'.join(map(str, r['shape'])):>12s} "
                 f"{(r['methods'] or '-'):>16s} {r['bits']:4d} "
                 f"{r['nonzeros']:8d} {r['fixed_bytes']:8d} "
                 f"{r['entropy_bytes']:8d}")
  lines.append(f"total: dense {report['dense_bytes']} B, fixed-width "
               f"{report['fixed_width_bytes']} B "
               f"({report['compression_ratio_fixed']:.1f}x), entropy-coded "
               f"{report['entropy_coded_bytes']} B "
               f"({report['compression_ratio_entropy']:.1f}x)")
  return '\n'.join(lines)

