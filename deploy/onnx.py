r"""ONNX export of an artifact, and the onnxruntime runtime (`--runtime=onnx`).

`build(artifact)` turns an artifact (`compression.export.read`) into an ONNX
model built with the `onnx` package's helpers; `export` writes it (whole or
not at all), `run` evaluates batches through onnxruntime. The graph uses
ONNX's own recurrent operators, so any ONNX runtime runs it as a recurrent
network rather than as an unrolled loop:

  ==================  ========================================================
  model part          ONNX graph
  ==================  ========================================================
  inputs              `x` (batch, time, F) float32, or (batch, time) int32
                      tokens; `lengths` (batch,) int32 valid steps
  embedding (LM)      `Gather(embed/embedding, x)`
  layer i             `GRU` (linear_before_reset=1) / `LSTM` / `RNN` with
                      `sequence_lens = lengths`, on time-major input;
                      layer i + 1 reads layer i's `Y`
  pooling             last: the operator's `Y_h`; mean: `ReduceSum` of `Y`
                      over time / max(length, 1); attention: `MatMul` scores,
                      masked `Softmax` over valid steps, weighted sum
  head                `MatMul` + bias (per step for the language model)
  output              `output`: logits or forecasts, the shape `model.apply`
                      gives
  ==================  ========================================================

Gates. Our kernels are `input_kernel` (F, G*H) and `recurrent_kernel`
(H, G*H) with gate blocks `[r, z, n]` (GRU), `[i, f, g, o]` (LSTM); ONNX wants
W (1, G*H, F) and R (1, G*H, H) with blocks `[z, r, h]` and `[i, o, f, c]`,
and B (1, 2*G*H) = [input-side biases, recurrent-side biases]. Our `bias` is
the input side; the GRU's `recurrent_bias` is the `h` block of the recurrent
side (the `b_hn` inside `r * (...)`, which `linear_before_reset=1` keeps
there, as `models.cells.gru_step` does); every other recurrent-side bias is 0
(`ConstantOfShape`, no stored bytes). The reordering and transposition are
applied to the stored codes themselves, so no extra graph node touches a
weight.

How each stored leaf (`artifact.records`) becomes a tensor, the smallest form
the format allows (codes in ONNX's 2-, 4- and 8-bit integer types, the
narrowest that holds them; opset 25 has all three):

  * float32 values: a float initializer;
  * integer codes (`value = (u - zero_point) * scale`): the symmetric grid
    as signed int2/int4/int8 codes `u - (2^(bits-1) - 1)` with ONNX's
    default zero point 0, the asymmetric grid (and symmetric codes the
    signed type cannot hold) as uint2/uint4/uint8 codes with their zero
    points, behind `DequantizeLinear` with the per-channel (or per-tensor)
    scales;
  * a codebook (k-means weight sharing): the indices as a uint2/uint4/uint8
    initializer, `Cast` to int64, `Gather` of the float32 centroids;
  * exact zeros (pruning; also a quantizer's zero code and a zero centroid):
    where that is smaller, only the nonzero elements' values (codes, indices
    or floats) plus their positions, scattered (`ScatterND`) into zeros (for
    codes: into zero codes, so the dequantized zeros are exact). The
    positions are the smaller of a bitmap (one bit per element, packed into
    bytes; unpacked by `BitShift` / `BitwiseAnd` / `NonZero`) and Deep
    Compression's relative indices of 2, 4 or 8 bits (`CumSum` /
    `Compress`), as the artifact chooses its own. ONNX's sparse initializers
    are not used: they store int64 indices, 8 bytes per kept weight;
  * low-rank factors (`{'u', 'v'}` kernels): the two factors; the input
    kernel multiplies through them (`MatMul(x, u)` feeds the recurrent
    operator, whose W is v), the head and attention kernels are two
    MatMuls, and the recurrent kernel, which the operator takes as one
    matrix, is their product computed in the graph. A factor shared by two
    kernels (`ref`) is one tensor;
  * tensor-train and Kronecker cores (`{'core_0', ...}` kernels): the cores,
    contracted into the kernel in the graph (`Einsum`);
  * DCT coefficients: the float32 coefficients (sparse as above), and the
    blockwise inverse DCT `D^T C D` in the graph (`Einsum`, the DCT
    matrices computed by `Range` and `Cos`, not stored). Quantized
    coefficients are stored as floats (the artifact's reader hands them over
    decoded).

A file's size is therefore the codes' bits plus scales, positions and the
graph itself; Huffman coding (which the artifact may use) has no ONNX
operator, so an ONNX file is larger than an entropy-coded artifact.

`run` evaluates with onnxruntime's QDQ fusions off (`session`): at its
defaults onnxruntime replaces DequantizeLinear + MatMul with kernels that
quantize the activations to 8 bits, which moves logits by ~1e-2; off, the
session computes exactly the artifact's model in float32.

What ONNX cannot express is refused with one `InputError` line naming it,
before anything is written: quantizers inside the model
(`compression.hidden_state`, `compression.activations`), which act inside
the recurrence, where ONNX's recurrent operators have no hook
(`--export_stablehlo` keeps them), a model that does not compute in
float32 (`model.dtype`), and a parameter the graph would leave unused (a
model part this module does not know), which is never silently dropped.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from compression import accounting
from compression import files
from compression import transforms
from compression.errors import InputError

# The opset: DequantizeLinear on uint4 needs 21, on uint2 25.
OPSET = 25
# ONNX's gate blocks, as indices of ours: GRU [z, r, h] of our [r, z, n],
# LSTM [i, o, f, c] of our [i, f, g, o].
ONNX_GATES = {'gru': (1, 0, 2), 'lstm': (0, 3, 1, 2), 'rnn': (0,)}
OPERATORS = {'gru': 'GRU', 'lstm': 'LSTM', 'rnn': 'RNN'}
# Integer storage: (largest bits, the numpy (ml_dtypes) type that
# `numpy_helper.from_array` stores as ONNX's uint2/uint4/uint8, int2/...).
_WIDTHS = ((2, ml_dtypes.uint2), (4, ml_dtypes.uint4), (8, np.uint8))
_SIGNED = ((2, ml_dtypes.int2), (4, ml_dtypes.int4), (8, np.int8))
# Relative-index widths tried for stored positions (whole ONNX types).
GAP_BITS = (2, 4, 8)


# ----------------------------------------------------------------------------
# A leaf's stored form (numpy)


@dataclasses.dataclass(frozen=True)
class Stored:
  """What an artifact stores for one leaf, over the leaf's whole shape.

  Attributes:
    kind: 'float' (float32 values), 'quant' (integer codes) or 'codebook'.
    grid: the leaf's shape: float32 values, or int64 codes / indices; a
      removed (pruned) element holds the code that decodes to exactly 0.
    nonzero: bool, the leaf's shape: where the decoded value is not 0.
    bits: code width (32 for floats).
    scale: quant: float32 (1,) or one per channel of `axis`.
    zero_point: quant: int64 like `scale`.
    codebook: codebook: float32 centroids.
    axis: the axis the per-channel scales run along.
    symmetric: quant: the symmetric grid (zero point 2^(bits-1) - 1 stored
      nowhere).
  """
  kind: str
  grid: np.ndarray
  nonzero: np.ndarray
  bits: int = 32
  scale: np.ndarray | None = None
  zero_point: np.ndarray | None = None
  codebook: np.ndarray | None = None
  axis: int = -1
  symmetric: bool = False

  def decode(self) -> np.ndarray:
    """The float32 leaf, in numpy (the check that the form is exact)."""
    if self.kind == 'float':
      return np.asarray(self.grid, np.float32)
    if self.kind == 'codebook':
      # Removed elements hold no index; their value is 0.
      return np.where(self.nonzero, self.codebook[self.grid], np.float32(0))
    shape = [1] * self.grid.ndim
    shape[self.axis] = -1
    zero = self.zero_point.astype(np.float32).reshape(shape)
    scale = self.scale.reshape(shape)
    return ((self.grid.astype(np.float32) - zero) * scale).astype(np.float32)


def stored_form(record: Any, dense: np.ndarray) -> Stored:
  """The stored form of a leaf from its record and its dense values.

  Args:
    record: `artifact.records[path]` (a `compression.records.Record` with
      codes or a codebook, positions only, or None for float32 values);
      transforms and references are resolved by the caller.
    dense: the leaf's float32 values (`artifact.params`).

  Returns:
    The leaf's Stored form in the leaf's own layout.
  """
  dense = np.asarray(dense, np.float32)
  shape = dense.shape
  nonzero = dense != 0
  codes = None if record is None else record.codes
  book = None if record is None else record.codebook
  positions = None if record is None else record.positions
  if codes is not None:
    scale = np.asarray(codes.scale, np.float32).reshape(-1)
    if codes.zero_point is None:
      zero = np.full(scale.shape, 2 ** (codes.bits - 1) - 1, np.int64)
    else:
      zero = np.asarray(codes.zero_point, np.int64).reshape(-1)
    grid = np.broadcast_to(zero, shape).copy() if zero.size > 1 else np.full(
        shape, int(zero[0]), np.int64)
    _fill(grid, positions, codes.u)
    return Stored('quant', grid, nonzero, int(codes.bits), scale, zero,
                  axis=len(shape) - 1, symmetric=codes.zero_point is None)
  if book is not None:
    centroids = np.asarray(book.codebook, np.float32)
    grid = np.full(shape, _zero_index(centroids) or 0, np.int64)
    _fill(grid, positions, book.index)
    return Stored('codebook', grid, nonzero, int(book.bits),
                  codebook=centroids)
  return Stored('float', dense, nonzero)


def _fill(grid: np.ndarray, positions: np.ndarray | None, values: Any) -> None:
  flat = grid.reshape(-1)
  values = np.asarray(values, np.int64).reshape(-1)
  if positions is None:
    flat[:] = values
  else:
    flat[np.asarray(positions, np.int64)] = values


def _zero_index(codebook: np.ndarray) -> int | None:
  """A codebook's index of an exact 0 (None: no zero centroid)."""
  zeros = np.flatnonzero(codebook == 0)
  return int(zeros[0]) if zeros.size else None


def storage_bits(bits: int) -> int:
  """Bits an ONNX element of a `bits`-bit code takes (2, 4, 8 or 32)."""
  for width, _ in _WIDTHS:
    if bits <= width:
      return width
  return 32


def position_code(nonzero: np.ndarray) -> tuple[str, int, np.ndarray]:
  """The smallest encoding of the kept positions of a bool mask.

  Args:
    nonzero: where the kept elements are (flattened row-major).

  Returns:
    ('bitmap', 1, packed bytes, LSB first) or ('gaps', b, b-bit relative
    indices as in `accounting.gap_symbols`).
  """
  flat = np.asarray(nonzero, bool).reshape(-1)
  best = ('bitmap', 1, np.packbits(flat, bitorder='little'))
  best_bytes = best[2].size
  positions = np.flatnonzero(flat)
  for b in GAP_BITS:
    symbols = accounting.gap_symbols(positions, b)
    size = -(-symbols.size * b // 8)
    if size < best_bytes:
      best, best_bytes = ('gaps', b, symbols), size
  return best


def position_bytes(code: tuple[str, int, np.ndarray]) -> int:
  """Bytes of a `position_code` result as stored."""
  fmt, b, data = code
  return data.size if fmt == 'bitmap' else -(-data.size * b // 8)


def store_sparse(s: Stored) -> bool:
  """Whether kept values + positions take fewer bytes than every element."""
  n, kept = s.grid.size, int(np.count_nonzero(s.nonzero))
  if kept == n:
    return False
  width = storage_bits(s.bits)
  dense = -(-n * width // 8)
  sparse = position_bytes(position_code(s.nonzero)) + -(-kept * width // 8)
  return sparse < dense or (s.kind == 'codebook'
                             and _zero_index(s.codebook) is None)


# ----------------------------------------------------------------------------
# Layouts: where a leaf's elements go in the tensor an operator reads


@dataclasses.dataclass(frozen=True)
class Layout:
  """A leaf's target tensor: a gate reordering and transposition.

  Attributes:
    name: 'plain' (the leaf as it is) or 'gates' (gate blocks of the last
      axis in ONNX order, a 2-D kernel transposed to (G*H, K)).
    order: the ONNX gate blocks as indices of ours ('gates').
  """
  name: str = 'plain'
  order: tuple[int, ...] = ()

  def permutation(self, width: int) -> np.ndarray:
    """Indices of our last axis in ONNX order."""
    h = width // len(self.order)
    return np.concatenate([np.arange(g * h, (g + 1) * h) for g in self.order])

  def array(self, a: np.ndarray) -> np.ndarray:
    """A leaf-shaped array in the target layout."""
    if self.name == 'plain':
      return a
    a = a[..., self.permutation(a.shape[-1])]
    return a.T if a.ndim == 2 else a

  def apply(self, s: Stored) -> Stored:
    """A Stored form in the target layout (per-channel scales follow)."""
    if self.name == 'plain':
      return s
    scale, zero = s.scale, s.zero_point
    if scale is not None and scale.size > 1:
      perm = self.permutation(scale.size)
      scale, zero = scale[perm], zero[perm]
    return dataclasses.replace(
        s, grid=self.array(s.grid), nonzero=self.array(s.nonzero),
        scale=scale, zero_point=zero, axis=0)


PLAIN = Layout()


# ----------------------------------------------------------------------------
# Graph construction


def _integer_type(bits: int, signed: bool) -> Any:
  """The numpy (ml_dtypes) type of an ONNX integer tensor of `bits` codes."""
  table = _SIGNED if signed else _WIDTHS
  for width, dtype in table:
    if bits <= width:
      return dtype
  raise InputError(f'code width {bits} has no ONNX integer type')


class _Graph:
  """Nodes and initializers of a graph under construction.

  Initializers are named after the leaves they store; intermediate tensors
  get short generated names (they cost bytes at every use).
  """

  def __init__(self):
    self.nodes: list[onnx.NodeProto] = []
    self.initializers: list[onnx.TensorProto] = []
    self._used: set[str] = set()
    self._consts: dict[tuple, str] = {}
    self._count = 0

  def name(self, base: str) -> str:
    """`base`, or `base.2`, `base.3`, ... if taken."""
    name, i = base, 1
    while name in self._used:
      i += 1
      name = f'{base}.{i}'
    self._used.add(name)
    return name

  def init(self, base: str, array: np.ndarray) -> str:
    """An initializer (sub-byte dtypes are stored packed)."""
    name = self.name(base)
    self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
    return name

  def codes(self, base: str, values: np.ndarray, bits: int,
            signed: bool = False) -> str:
    """Integer codes as an int2/int4/int8 or uint2/uint4/uint8 initializer."""
    dtype = _integer_type(bits, signed)
    values = np.asarray(values, np.int64)
    return self.init(base, values.astype(np.int8 if signed else np.uint8)
                     .astype(dtype))

  def const(self, values: Any, dtype: Any = np.int64) -> str:
    """A small shared constant (shapes, axes, scalars)."""
    array = np.asarray(values, dtype)
    key = (array.dtype.str, array.shape, array.tobytes())
    if key not in self._consts:
      self._consts[key] = self.init('c', array)
    return self._consts[key]

  def op(self, op_type: str, inputs: list[str], outputs: int = 1,
         name: str | None = None, **attrs: Any) -> Any:
    """Appends a node; its output name(s) (`name` for a single output)."""
    names = []
    for _ in range(outputs):
      if name is None:
        self._count += 1
        names.append(self.name(f't{self._count}'))
      else:
        names.append(name)  # A reserved graph output name.
    self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
    return names[0] if outputs == 1 else names

  def zeros(self, shape: tuple[int, ...],
            dtype: int = TensorProto.FLOAT) -> str:
    """A tensor of zeros (no stored values)."""
    value = helper.make_tensor('v', dtype, [1], [0])
    return self.op('ConstantOfShape', [self.const(shape)], value=value)


def _positions(g: _Graph, base: str, nonzero: np.ndarray) -> str:
  """(kept, 1) int64 flat positions of the nonzero elements, from storage."""
  fmt, b, data = position_code(nonzero)
  n = nonzero.size
  if fmt == 'bitmap':
    rows = g.op('Unsqueeze', [g.init(f'{base}:bitmap', data), g.const([1])])
    shifted = g.op('BitShift', [rows, g.const(np.arange(8), np.uint8)],
                   direction='RIGHT')
    bits = g.op('BitwiseAnd', [shifted, g.const(1, np.uint8)])
    flat = g.op('Reshape', [bits, g.const([-1])])
    mask = g.op('Slice', [flat, g.const([0]), g.const([n])])
    mask = g.op('Cast', [mask], to=TensorProto.BOOL)
    return g.op('Transpose', [g.op('NonZero', [mask])], perm=[1, 0])
  symbols = g.op('Cast', [g.codes(f'{base}:gaps', data, b)],
                 to=TensorProto.INT64)
  escape = g.op('Equal', [symbols, g.const(0)])
  steps = g.op('Where', [escape, g.const((1 << b) - 1), symbols])
  ends = g.op('Sub', [g.op('CumSum', [steps, g.const(0)]), g.const(1)])
  found = g.op('Compress', [ends, g.op('Not', [escape])], axis=0)
  return g.op('Unsqueeze', [found, g.const([1])])


def _emit_quant(g: _Graph, base: str, s: Stored, kept: np.ndarray | None
                ) -> str:
  """DequantizeLinear of integer codes: all of them, or the `kept` ones."""
  shape, n = s.grid.shape, s.grid.size
  per_channel = s.scale.size > 1
  channel = [1] * len(shape)
  channel[s.axis] = -1
  scale = g.init(f'{base}:scale',
                 s.scale if per_channel else s.scale.reshape(()))
  zero = s.zero_point if per_channel else s.zero_point.reshape(())
  # The symmetric grid as signed codes with ONNX's default zero point 0
  # (where they fit the signed type: a code 2^bits - 1 on the symmetric grid
  # does not); otherwise unsigned codes with their zero points.
  centered = s.grid - s.zero_point.reshape(channel)
  top = 2 ** (storage_bits(s.bits) - 1)
  signed = s.symmetric and -top <= centered.min() and centered.max() < top
  codes = centered if signed else s.grid
  if kept is None:
    inputs = [g.codes(base, codes, s.bits, signed), scale]
    if not signed:
      inputs.append(g.codes(f'{base}:zero_point', zero, s.bits))
    return g.op('DequantizeLinear', inputs, axis=s.axis)
  # Kept codes scattered into a tensor of zero codes, so the removed elements
  # decode to exactly 0.
  values = g.op('Cast', [g.codes(base, codes.reshape(-1)[kept], s.bits,
                                 signed)],
                to=TensorProto.INT8 if signed else TensorProto.UINT8)
  if signed:
    fill, inputs = g.zeros((n,), TensorProto.INT8), [scale]
  else:
    zero = g.init(f'{base}:zero_point', zero.astype(np.uint8))
    inputs = [scale, zero]
    fill = zero
    if per_channel:
      fill = g.op('Reshape', [fill, g.const(channel)])
      fill = g.op('Reshape', [g.op('Expand', [fill, g.const(shape)]),
                              g.const([-1])])
    else:
      fill = g.op('Expand', [fill, g.const([n])])
  grid = g.op('ScatterND', [fill, _positions(g, base, s.nonzero), values])
  grid = g.op('Reshape', [grid, g.const(shape)])
  return g.op('DequantizeLinear', [grid] + inputs, axis=s.axis)


def _emit(g: _Graph, base: str, s: Stored) -> str:
  """The float32 tensor of a Stored form (in its layout)."""
  shape, n = s.grid.shape, s.grid.size
  kept = np.flatnonzero(s.nonzero.reshape(-1))
  if kept.size == 0:
    return g.zeros(shape)
  sparse = store_sparse(s)
  if s.kind == 'quant':
    return _emit_quant(g, base, s, kept if sparse else None)
  if not sparse:
    if s.kind == 'float':
      return g.init(base, s.grid)
    index = g.op('Cast', [g.codes(base, s.grid, s.bits)],
                 to=TensorProto.INT64)
    return g.op('Gather', [g.init(f'{base}:codebook', s.codebook), index])
  values = s.grid.reshape(-1)[kept]
  if s.kind == 'codebook':
    index = g.op('Cast', [g.codes(base, values, s.bits)],
                 to=TensorProto.INT64)
    values = g.op('Gather', [g.init(f'{base}:codebook', s.codebook), index])
  else:
    values = g.init(base, values)
  flat = g.op('ScatterND', [g.zeros((n,)), _positions(g, base, s.nonzero),
                            values])
  return g.op('Reshape', [flat, g.const(shape)])


def _dct_matrix(g: _Graph, n: int) -> str:
  """The orthonormal DCT-II matrix (n, n), computed in the graph."""
  f32 = np.float32
  k = g.op('Range', [g.const(0, f32), g.const(n, f32), g.const(1, f32)])
  rows = g.op('Unsqueeze', [k, g.const([1])])
  odd = g.op('Add', [g.op('Mul', [k, g.const(2, f32)]), g.const(1, f32)])
  cols = g.op('Unsqueeze', [odd, g.const([0])])
  angle = g.op('Mul', [g.op('Mul', [rows, cols]),
                       g.const(math.pi / (2 * n), f32)])
  norm = g.op('Where', [g.op('Equal', [rows, g.const(0, f32)]),
                        g.const(math.sqrt(1.0 / n), f32),
                        g.const(math.sqrt(2.0 / n), f32)])
  return g.op('Mul', [g.op('Cos', [angle]), norm])


def _relayout(g: _Graph, x: str, ndim: int, layout: Layout) -> str:
  """A leaf-shaped tensor in the target layout, in the graph."""
  if layout.name == 'plain':
    return x
  parts = len(layout.order)
  blocks = g.op('Split', [x], outputs=parts, axis=ndim - 1,
                num_outputs=parts) if parts > 1 else [x]
  y = g.op('Concat', [blocks[i] for i in layout.order], axis=ndim - 1)
  return g.op('Transpose', [y], perm=[1, 0]) if ndim == 2 else y


class _Leaves:
  """The tensors of an artifact's leaves, each built once per layout."""

  def __init__(self, g: _Graph, artifact: Any):
    self.g = g
    self.flat = accounting.flatten(artifact.params)
    self.records = artifact.records
    self.made: dict[tuple[str, Layout], str] = {}

  def factored(self, path: str) -> bool:
    """Whether the kernel at `path` is stored as low-rank factors."""
    return f'{path}/u' in self.flat and f'{path}/v' in self.flat

  def cores(self, path: str) -> list[str]:
    """The tensor-train core paths of the kernel at `path` (none: not TT)."""
    out = []
    while f'{path}/core_{len(out)}' in self.flat:
      out.append(f'{path}/core_{len(out)}')
    return out

  def kernel(self, path: str, layout: Layout = PLAIN) -> str:
    """A dense kernel, or one a tensor train gives, in `layout`.

    A tensor-train (or Kronecker) kernel is contracted from its stored cores
    in the graph (`Einsum`), then laid out there.
    """
    cores = self.cores(path)
    if not cores:
      return self(path, layout)
    t, (rows, cols) = None, (1, 1)
    for core in cores:
      r0, m, n, r1 = self.flat[core].shape
      if t is None:
        t = self.g.op('Squeeze', [self(core), self.g.const([0])])
      else:
        t = self.g.op('Einsum', [t, self(core)], equation='abr,rcds->acbds')
        t = self.g.op('Reshape', [t, self.g.const([rows * m, cols * n, r1])])
      rows, cols = rows * m, cols * n
    w = self.g.op('Reshape', [t, self.g.const([rows, cols])])
    return _relayout(self.g, w, 2, layout)

  def __call__(self, path: str, layout: Layout = PLAIN) -> str:
    """The float32 tensor of the leaf at `path`, in `layout`."""
    key = (path, layout)
    if key not in self.made:
      self.made[key] = self._build(path, layout)
    return self.made[key]

  def _build(self, path: str, layout: Layout) -> str:
    record = self.records.get(path)
    if record is not None and record.ref is not None:
      return self(record.ref, layout)
    dense = self.flat[path]
    if record is not None and record.transform is not None:
      t = record.transform
      if t.kind != 'dct':
        raise InputError(f'{path}: ONNX export has no {t.kind!r} transform; '
                         f'valid: {", ".join(transforms.KINDS)}')
      c = _emit(self.g, path, stored_form(None, record.coefficients))
      (rows, cols), (br, bc) = dense.shape, t.block
      c4 = self.g.op('Reshape', [c, self.g.const(
          [rows // br, br, cols // bc, bc])])
      w4 = self.g.op('Einsum', [_dct_matrix(self.g, br), c4,
                                _dct_matrix(self.g, bc)],
                     equation='ki,akbl,lj->aibj')
      w = self.g.op('Reshape', [w4, self.g.const(dense.shape)])
      return _relayout(self.g, w, dense.ndim, layout)
    s = stored_form(record, dense)
    if not np.array_equal(s.decode(), dense):
      raise InputError(f'{path}: the stored codes do not reproduce the '
                       "artifact's values")
    return _emit(self.g, path, layout.apply(s))

  def matmul(self, x: str, path: str) -> str:
    """`x @ kernel`, through the factors of a low-rank kernel."""
    if self.factored(path):
      x = self.g.op('MatMul', [x, self(f'{path}/u')])
      return self.g.op('MatMul', [x, self(f'{path}/v')])
    return self.g.op('MatMul', [x, self.kernel(path)])


# The model's in-model quantizers (`models.make` arguments), if any.
_HOOKS = ('state_fn', 'cell_state_fn', 'gate_fn', 'input_fn', 'features_fn')


def check_expressible(artifact: Any, name: str) -> None:
  """Refuses, in one line, a model that an ONNX graph cannot express.

  Args:
    artifact: the read artifact.
    name: its name for the message.

  Raises:
    InputError: quantizers inside the model (hidden state, activations), a
      model that does not compute in float32, an unknown cell.
  """
  header = artifact.header
  hooks = [h for h in _HOOKS if getattr(artifact.model, h, None) is not None]
  if hooks:
    hidden = header.get('hidden_state') or {}
    if hidden.get('bits') or hidden.get('cell_bits'):
      what = (f"compression.hidden_state (bits={hidden.get('bits')}, "
              f"cell_bits={hidden.get('cell_bits')})")
    else:
      what = 'compression.activations (quantized gates, inputs and states)'
    raise InputError(
        f'artifact {name}: ONNX cannot express {what}: it quantizes inside '
        "the recurrence, where ONNX's GRU/LSTM/RNN operators have no hook "
        f'({", ".join(hooks)}); --export_stablehlo keeps it')
  model = header['model']
  if model.get('dtype', 'float32') != 'float32':
    raise InputError(f"artifact {name}: model.dtype {model['dtype']!r}: the "
                     'ONNX graph computes in float32 only')
  if model['cell'] not in OPERATORS:
    raise InputError(f"artifact {name}: model.cell {model['cell']!r} has no "
                     f'ONNX operator; valid: {", ".join(OPERATORS)}')


def _recurrent_layer(g: _Graph, leaves: _Leaves, x: str, cell: str,
                     hidden: int, i: int) -> tuple[str, str]:
  """One layer: (Y (T, B, H), Y_h (1, B, H)) of ONNX's recurrent operator."""
  pre = f'rnn/layer_{i}'
  gates = Layout('gates', ONNX_GATES[cell])
  if leaves.factored(f'{pre}/input_kernel'):
    # x u feeds the operator, whose W is v: two products, as in training.
    x = g.op('MatMul', [x, leaves(f'{pre}/input_kernel/u')])
    w = leaves(f'{pre}/input_kernel/v', gates)
  else:
    w = leaves.kernel(f'{pre}/input_kernel', gates)
  if leaves.factored(f'{pre}/recurrent_kernel'):
    # The operator takes R whole: (u v)^T reordered = v^T u^T.
    u = g.op('Transpose', [leaves(f'{pre}/recurrent_kernel/u')], perm=[1, 0])
    r = g.op('MatMul', [leaves(f'{pre}/recurrent_kernel/v', gates), u])
  else:
    r = leaves.kernel(f'{pre}/recurrent_kernel', gates)
  if cell == 'gru':
    recurrent_side = g.op('Concat', [g.zeros((2 * hidden,)),
                                     leaves(f'{pre}/recurrent_bias')], axis=0)
  else:
    recurrent_side = g.zeros((len(ONNX_GATES[cell]) * hidden,))
  b = g.op('Concat', [leaves(f'{pre}/bias', gates), recurrent_side], axis=0)
  w, r, b = (g.op('Unsqueeze', [t, g.const([0])]) for t in (w, r, b))
  attrs = {'hidden_size': hidden}
  if cell == 'gru':
    attrs['linear_before_reset'] = 1
  y, y_h = g.op(OPERATORS[cell], [x, w, r, b, 'lengths'], outputs=2, **attrs)
  return g.op('Squeeze', [y, g.const([1])]), y_h


def _attention(g: _Graph, leaves: _Leaves, top: str, steps: str) -> str:
  """Softmax-weighted mean of top (T, B, H) over valid steps: (B, H)."""
  scores = g.op('Squeeze', [leaves.matmul(top, 'attention/kernel'),
                            g.const([2])])
  scores = g.op('Transpose', [scores], perm=[1, 0])
  t = g.op('Unsqueeze', [g.op('Range', [g.const(0), steps, g.const(1)]),
                         g.const([0])])
  valid = g.op('Unsqueeze', [g.op('Cast', ['lengths'], to=TensorProto.INT64),
                             g.const([1])])
  mask = g.op('Less', [t, valid])
  scores = g.op('Where', [mask, scores,
                          g.const(np.finfo(np.float32).min, np.float32)])
  weights = g.op('Softmax', [scores], axis=1)
  weights = g.op('Where', [mask, weights, g.const(0, np.float32)])
  weights = g.op('Unsqueeze', [weights, g.const([1])])
  pooled = g.op('MatMul', [weights, g.op('Transpose', [top],
                                         perm=[1, 0, 2])])
  return g.op('Squeeze', [pooled, g.const([1])])


def _output_shape(task: str, info: dict) -> list[Any]:
  """The graph output's shape (symbolic batch and time)."""
  if task == 'language_model':
    return ['batch', 'time', int(info['vocab_size'])]
  if task == 'forecasting':
    return ['batch', int(info['horizon'])]
  return ['batch', int(info['num_classes'])]


def build(artifact: Any, name: str = 'artifact') -> onnx.ModelProto:
  """The ONNX model of an artifact (checked by `onnx.checker`).

  Args:
    artifact: `compression.export.read(path)`.
    name: the artifact's name for error messages.

  Returns:
    The model: inputs `x`, `lengths`; output `output`.

  Raises:
    InputError: a model ONNX cannot express (one line naming what).
  """
  check_expressible(artifact, name)
  header = artifact.header
  model, info, task = header['model'], header['info'], header['task']
  cell, hidden = model['cell'], int(model['hidden'])
  g = _Graph()
  leaves = _Leaves(g, artifact)
  for reserved in ('x', 'lengths', 'output'):
    g.name(reserved)
  if task == 'language_model':
    x_info = helper.make_tensor_value_info('x', TensorProto.INT32,
                                           ['batch', 'time'])
    seq = g.op('Gather', [leaves('embed/embedding'), 'x'])
  else:
    x_info = helper.make_tensor_value_info(
        'x', TensorProto.FLOAT, ['batch', 'time', int(info['input_dim'])])
    seq = 'x'
  x = g.op('Transpose', [seq], perm=[1, 0, 2])  # Time-major for the ops.
  y_h = None
  for i in range(int(model['layers'])):
    x, y_h = _recurrent_layer(g, leaves, x, cell, hidden, i)
  if task == 'language_model':
    features = g.op('Transpose', [x], perm=[1, 0, 2])
  elif task == 'forecasting' or model.get('pooling', 'last') == 'last':
    features = g.op('Squeeze', [y_h, g.const([0])])
  elif model['pooling'] == 'mean':
    total = g.op('ReduceSum', [x, g.const([0])], keepdims=0)
    count = g.op('Cast', [g.op('Max', ['lengths', g.const(1, np.int32)])],
                 to=TensorProto.FLOAT)
    features = g.op('Div', [total, g.op('Unsqueeze', [count,
                                                      g.const([1])])])
  elif model['pooling'] == 'attention':
    steps = g.op('Gather', [g.op('Shape', ['x']), g.const(1)])
    features = _attention(g, leaves, x, steps)
  else:
    raise InputError(f"artifact {name}: model.pooling {model['pooling']!r} "
                     'has no ONNX graph; valid: attention, last, mean')
  g.op('Add', [leaves.matmul(features, 'head/kernel'), leaves('head/bias')],
       name='output')
  unused = sorted(set(leaves.flat) - {path for path, _ in leaves.made})
  if unused:
    raise InputError(f'artifact {name}: the ONNX graph has no place for '
                     f'the parameters {", ".join(unused)}')
  graph = helper.make_graph(
      g.nodes, 'rnnc', [x_info, helper.make_tensor_value_info(
          'lengths', TensorProto.INT32, ['batch'])],
      [helper.make_tensor_value_info('output', TensorProto.FLOAT,
                                     _output_shape(task, info))],
      initializer=g.initializers)
  opset = [helper.make_opsetid('', OPSET)]
  onnx_model = helper.make_model(
      graph, opset_imports=opset, producer_name='rnnc',
      ir_version=helper.find_min_ir_version_for(opset))
  helper.set_model_props(onnx_model, {'task': task,
                                      'config': str(header.get('config', ''))})
  onnx.checker.check_model(onnx_model)
  return onnx_model


def serialize(artifact: Any, name: str = 'artifact') -> bytes:
  """The bytes of the artifact's ONNX file."""
  return build(artifact, name).SerializeToString()


def export(artifact: Any, path: str, out: str) -> dict:
  """Writes the artifact's model as an ONNX file at `out` (atomically).

  Args:
    artifact: the read artifact.
    path: its file (for messages).
    out: the ONNX file to write.

  Returns:
    {'bytes': the file's size, 'opset', 'artifact_bytes'}.

  Raises:
    InputError: a model ONNX cannot express; nothing is written.
  """
  blob = serialize(artifact, os.path.basename(path))
  files.atomic_write(out, blob)
  return {'bytes': len(blob), 'opset': OPSET,
          'artifact_bytes': artifact.file_bytes}


def session(blob: bytes) -> Any:
  """An onnxruntime CPU session that computes what the graph says.

  onnxruntime's QDQ fusions would replace DequantizeLinear + MatMul with its
  integer kernels (MatMulNBits at its default accuracy level quantizes the
  activations to 8 bits), which moves logits by ~1e-2; they are switched
  off, so the session computes the artifact's model in float32.
  """
  import onnxruntime  # pylint: disable=g-import-not-at-top
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  options.add_session_config_entry('session.disable_quant_qdq', '1')
  return onnxruntime.InferenceSession(blob, options,
                                      providers=['CPUExecutionProvider'])


def run(artifact: Any, path: str, batches: list[dict]
        ) -> tuple[list[np.ndarray], dict]:
  """Evaluates batches through onnxruntime (`--runtime=onnx`).

  Args:
    artifact: the read artifact.
    path: its file.
    batches: `data.eval_batches` batches (`x`, `lengths`, ...).

  Returns:
    (each batch's output, {'onnx_bytes': the ONNX file's size}).
  """
  blob = serialize(artifact, os.path.basename(path))
  sess = session(blob)
  tokens = artifact.header['task'] == 'language_model'
  outs = []
  for b in batches:
    x = np.asarray(b['x'], np.int32 if tokens else np.float32)
    outs.append(sess.run(['output'], {
        'x': x, 'lengths': np.asarray(b['lengths'], np.int32)})[0])
  return outs, {'onnx_bytes': len(blob)}
