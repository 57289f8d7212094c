"""The stored representation: what a compressed tensor is, independent of bytes.

Every method's `export(params, state)` returns `{path: Record}` for the
leaves of the dense tree it shapes (`compressor.apply`'s output), and says
only *what* it stores, never *how* in bytes:

* `positions`: the flat (row-major) positions whose values are stored; every
  other position decodes as exactly 0 (pruning).
* `codes`: integer codes of every element, `value = (u - zero_point) * scale`
  with one scale (and zero point) per tensor or per output channel (the last
  axis) (quantization).
* `codebook`: an index of every element into a table of shared values,
  `value = codebook[index]` (k-means weight sharing).
* `transform`: the values are stored in a transformed domain; `coefficients`
  holds that domain's float values, and `positions` / `codes` describe the
  coefficients rather than the leaf (2-D block DCT).
* `ref`: the leaf is a copy of another dense leaf, stored once (a low-rank
  factor shared by two kernels).

A chain of methods gives each leaf the records of the methods that touch it;
`compression.accounting` merges them by their fields (positions from one,
values from another), chooses every byte (bitmap or relative indices, fixed
width or Huffman, bit packing) and checks that the result decodes to the
dense leaf exactly. A record that does not reproduce the leaf is an error,
never a silent float32 copy.

All arrays are numpy (host) arrays: export runs outside `jit`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from compression.errors import InputError


@dataclasses.dataclass(frozen=True)
class Codes:
  """Integer codes: `value = (u - zero_point) * scale`.

  Attributes:
    u: unsigned integer code of every element (any shape; row-major order).
    bits: code width, 1..8 (u < 2^bits).
    scale: float32, one value (per tensor) or one per output channel (the
      tensor's last axis).
    zero_point: the same size as `scale` (asymmetric grids), or None for the
      symmetric grid, whose zero point is 2^(bits-1) - 1.
  """
  u: np.ndarray
  bits: int
  scale: np.ndarray
  zero_point: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Codebook:
  """Shared values: `value = codebook[index]`.

  Attributes:
    index: index of every element into `codebook` (any shape, row-major).
    bits: index width, 1..8 (len(codebook) <= 2^bits).
    codebook: float32 shared values.
  """
  index: np.ndarray
  bits: int
  codebook: np.ndarray


@dataclasses.dataclass(frozen=True)
class Transform:
  """A 2-D block DCT: the leaf is the inverse DCT of each block.

  Attributes:
    kind: a name in `compression.transforms.KINDS` ('dct': the blockwise
      orthonormal 2-D DCT-II).
    block: (rows, cols) of a block; both divide the leaf's shape.
  """
  kind: str
  block: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Record:
  """What one method stores about one dense leaf (None: not this method's).

  Attributes:
    positions: int64 flat positions kept, sorted; others are exactly 0.
    codes: integer codes of the stored values.
    codebook: shared values of the stored values.
    transform: the domain the stored values live in.
    coefficients: float32 values in the transformed domain (the leaf's shape),
      when `transform` is set and no `codes` are given.
    ref: the path of the dense leaf this leaf copies.
  """
  positions: np.ndarray | None = None
  codes: Codes | None = None
  codebook: Codebook | None = None
  transform: Transform | None = None
  coefficients: np.ndarray | None = None
  ref: str | None = None


def check(record: Any, path: str) -> Record:
  """Returns `record` if it is a Record, else raises one clear error.

  Args:
    record: what a method's export returned for `path`.
    path: the dense leaf's path (for the message).

  Returns:
    The record.

  Raises:
    InputError: anything that is not a `Record`.
  """
  if not isinstance(record, Record):
    raise InputError(f'export of {path}: {type(record).__name__} is not a '
                     'compression.records.Record; a method exports records')
  return record


def positions_of_mask(mask: Any) -> np.ndarray:
  """The sorted flat positions where `mask` is true."""
  return np.flatnonzero(np.asarray(mask, bool).reshape(-1)).astype(np.int64)
