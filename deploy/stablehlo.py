r"""StableHLO export of an artifact (`jax.export`), and a fresh-process runtime.

`program(artifact)` exports the jitted inference function
`(x, lengths) -> output` of the artifact's model with `jax.export`, with a
symbolic batch size and sequence length (`x` (b, t, F) float32, or (b, t)
int32 tokens; `lengths` (b,) int32), so one file serves every batch shape.
`export` writes the serialized program (whole or not at all); `run`
(`--runtime=stablehlo`) serializes it, then deserializes and runs it in a
fresh Python process that imports only numpy and jax
(`deploy/stablehlo_main.py`, started with `python -I`, so the repository is
not even on its path): what it computes comes from the file alone. Batches
and outputs cross as `.npz` files written and read with
`allow_pickle=False`; the child also reports every project module it
imported, and `run` refuses a result that came with any.

The parameters are the program's constants, in their stored form: the
program decodes them itself, so the file shrinks as the artifact does.
Per leaf (`deploy.onnx.stored_form` reads the artifact's records):

  * float32 values: a float32 constant;
  * integer codes: packed 1, 2, 4 or 8 bits per code (the smallest power of
    two that holds the code width) in a uint8 constant, unpacked by shifts
    and masks, then `(u - zero_point) * scale` per channel;
  * a codebook: the packed indices and the float32 centroids (a gather);
  * exact zeros: where smaller (as `deploy.onnx.store_sparse` decides),
    only the nonzero elements' values (codes, indices or floats) plus their
    positions, as a packed bitmap or 2/4/8-bit relative indices (the
    smaller; `deploy.onnx.position_code`), scattered into zeros;
  * low-rank factors and tensor-train cores: the factors (the model
    multiplies through them); a factor shared by two kernels once;
  * DCT coefficients: float32 (sparse as above), and the blockwise inverse
    DCT in the program, its DCT matrices computed there (`iota`, `cos`).

The program carries no Python source locations, so an artifact always
gives the same bytes, wherever it is exported from.

The decoded parameters equal the artifact's bit for bit (DCT kernels to
float rounding), and the model code that runs them is the same, so the
outputs match `--runtime=jax`'s (to float rounding: XLA compiles the
program with the parameters as constants). Everything the Flax model does
is in the program, its in-model quantizers (`compression.hidden_state`,
`compression.activations`) included.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable, Iterator, Mapping

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from compression import accounting
from compression import files
from compression import transforms
from compression.errors import InputError
from deploy import onnx as onnx_lib

# The entry point of the fresh process.
MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    'stablehlo_main.py')
# The symbolic dimensions of the exported program's inputs.
SYMBOLS = 'b, t'

Decoder = Callable[[], jax.Array]


# ----------------------------------------------------------------------------
# Constants in their stored form, decoded inside the program


def pack_width(bits: int) -> int:
  """Bits a packed code of `bits` bits takes: 1, 2, 4 or 8."""
  return next(w for w in (1, 2, 4, 8) if bits <= w)


def pack(codes: np.ndarray, width: int) -> np.ndarray:
  """Unsigned codes (< 2^width) packed LSB first into uint8 bytes."""
  codes = np.asarray(codes, np.uint8).reshape(-1)
  per = 8 // width
  padded = np.zeros(-(-codes.size // per) * per, np.uint8)
  padded[:codes.size] = codes
  shifts = (np.arange(per) * width).astype(np.uint8)
  return np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1
                              ).astype(np.uint8)


def unpack(packed: Any, width: int, count: int) -> jax.Array:
  """The inverse of `pack`, in the program: (count,) int32 codes."""
  per = 8 // width
  shifts = jnp.arange(per, dtype=jnp.uint8) * jnp.uint8(width)
  codes = (jnp.asarray(packed)[:, None] >> shifts) & jnp.uint8(
      (1 << width) - 1)
  return codes.reshape(-1)[:count].astype(jnp.int32)


def _positions(nonzero: np.ndarray) -> Decoder:
  """(kept,) int32 positions of the nonzero elements, from their storage."""
  fmt, b, data = onnx_lib.position_code(nonzero)
  n, kept = nonzero.size, int(np.count_nonzero(nonzero))
  if fmt == 'bitmap':
    def decode():
      mask = unpack(data, 1, n) != 0
      return jnp.nonzero(mask, size=kept)[0].astype(jnp.int32)
    return decode
  packed, count = pack(data, b), data.size

  def decode_gaps():
    symbols = unpack(packed, b, count)
    ends = jnp.cumsum(jnp.where(symbols == 0, (1 << b) - 1, symbols)) - 1
    return ends[jnp.nonzero(symbols != 0, size=kept)[0]]
  return decode_gaps


def leaf_decoder(s: onnx_lib.Stored) -> Decoder:
  """A function of no arguments that rebuilds a leaf from its stored form.

  Called inside the traced program, so the numpy arrays it closes over (the
  stored codes, scales, positions) become the program's constants.

  Args:
    s: the leaf's stored form (in the leaf's own layout).

  Returns:
    The decoder: () -> float32 array of the leaf's shape.
  """
  shape, n = s.grid.shape, s.grid.size
  kept = np.flatnonzero(s.nonzero.reshape(-1))
  if kept.size == 0:
    return lambda: jnp.zeros(shape, jnp.float32)
  sparse = onnx_lib.store_sparse(s)
  if s.kind == 'float' and not sparse:
    return lambda: jnp.asarray(s.grid, jnp.float32)
  positions = _positions(s.nonzero) if sparse else None
  values = s.grid.reshape(-1)[kept] if sparse else s.grid.reshape(-1)
  if s.kind == 'float':
    def decode_values(pos):
      del pos
      return jnp.asarray(values, jnp.float32)
  else:
    width, count = pack_width(s.bits), values.size
    packed = pack(values, width)
    if s.kind == 'codebook':
      book = s.codebook

      def decode_values(pos):
        del pos
        return jnp.asarray(book)[unpack(packed, width, count)]
    else:
      scale = s.scale.astype(np.float32)
      zero = s.zero_point.astype(np.float32)

      def decode_values(pos):
        u = unpack(packed, width, count).astype(jnp.float32)
        if scale.size == 1:
          return (u - zero[0]) * scale[0]
        channel = (jnp.arange(n, dtype=jnp.int32) if pos is None
                   else pos) % shape[-1]
        return (u - jnp.asarray(zero)[channel]) * jnp.asarray(scale)[channel]

  def decode():
    if positions is None:
      return decode_values(None).reshape(shape)
    pos = positions()
    flat = jnp.zeros((n,), jnp.float32).at[pos].set(decode_values(pos))
    return flat.reshape(shape)
  return decode


def _dct_matrix(n: int) -> jax.Array:
  """The orthonormal DCT-II matrix (n, n), computed in the program."""
  k = jax.lax.broadcasted_iota(jnp.float32, (n, n), 0)
  i = jax.lax.broadcasted_iota(jnp.float32, (n, n), 1)
  norm = jnp.where(k == 0, math.sqrt(1.0 / n), math.sqrt(2.0 / n))
  return jnp.cos((2 * i + 1) * k * (math.pi / (2 * n))) * norm


def _idct_decoder(coefficients: Decoder, shape: tuple[int, int],
                  block: tuple[int, int]) -> Decoder:
  """A decoder of a DCT kernel: the blockwise inverse of its coefficients."""
  (rows, cols), (br, bc) = shape, block

  def decode():
    c4 = coefficients().reshape(rows // br, br, cols // bc, bc)
    w4 = jnp.einsum('ki,akbl,lj->aibj', _dct_matrix(br), c4, _dct_matrix(bc),
                    precision=jax.lax.Precision.HIGHEST)
    return w4.reshape(rows, cols)
  return decode


def decoders(artifact: Any) -> dict[str, Decoder]:
  """{leaf path: decoder} of every stored leaf of an artifact."""
  flat = accounting.flatten(artifact.params)
  out: dict[str, Decoder] = {}

  def make(path: str) -> Decoder:
    if path in out:
      return out[path]
    record = artifact.records.get(path)
    if record is not None and record.ref is not None:
      out[path] = make(record.ref)
    elif record is not None and record.transform is not None:
      t = record.transform
      if t.kind != 'dct':
        raise InputError(f'{path}: StableHLO export has no {t.kind!r} '
                         f'transform; valid: {", ".join(transforms.KINDS)}')
      coef = leaf_decoder(onnx_lib.stored_form(None, record.coefficients))
      out[path] = _idct_decoder(coef, flat[path].shape, t.block)
    else:
      s = onnx_lib.stored_form(record, flat[path])
      if not np.array_equal(s.decode(), flat[path]):
        raise InputError(f'{path}: the stored codes do not reproduce the '
                         "artifact's values")
      out[path] = leaf_decoder(s)
    return out[path]

  for path in flat:
    make(path)
  return out


def parameters(leaves: Mapping[str, Decoder]) -> dict:
  """The model's nested parameters, decoded (inside a traced program).

  Args:
    leaves: `decoders(artifact)`.

  Returns:
    The float32 parameter tree of `artifact.params`; a leaf shared by two
    paths (one decoder) is decoded, and stored, once.
  """
  decoded = {}
  for decode in leaves.values():
    if decode not in decoded:
      decoded[decode] = decode()
  return _nest({path: decoded[decode] for path, decode in leaves.items()})


def _nest(flat: Mapping[str, Any]) -> dict:
  """The nested tree of {'/'-joined path: value}."""
  out: dict = {}
  for path, value in flat.items():
    node = out
    keys = path.split('/')
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = value
  return out


# ----------------------------------------------------------------------------
# Export


def input_specs(artifact: Any) -> tuple[jax.ShapeDtypeStruct, ...]:
  """The symbolic (x, lengths) input shapes of an artifact's program."""
  b, t = jax_export.symbolic_shape(SYMBOLS)
  if artifact.header['task'] == 'language_model':
    x = jax.ShapeDtypeStruct((b, t), jnp.int32)
  else:
    x = jax.ShapeDtypeStruct((b, t, int(artifact.header['info']['input_dim'])),
                             jnp.float32)
  return x, jax.ShapeDtypeStruct((b,), jnp.int32)


def program(artifact: Any) -> jax_export.Exported:
  """The exported inference program of an artifact.

  Args:
    artifact: `compression.export.read(path)`.

  Returns:
    `jax.export.Exported` of `(x, lengths) -> output`, the parameters its
    constants in their stored form.
  """
  leaves = decoders(artifact)
  model = artifact.model

  def infer(x, lengths):
    return model.apply({'params': parameters(leaves)}, x, lengths)

  with _without_source_locations():
    return jax_export.export(jax.jit(infer))(*input_specs(artifact))


@contextlib.contextmanager
def _without_source_locations() -> Iterator[None]:
  """Programs lowered inside carry no Python source locations.

  By default every operation records the Python stack that made it (file
  paths of this machine, lines, columns): about a tenth of a small model's
  file, and different bytes for the same artifact exported from another
  place. Operation names stay.
  """
  name = 'jax_traceback_in_locations_limit'
  old = getattr(jax.config, name)
  jax.config.update(name, 0)
  try:
    yield
  finally:
    jax.config.update(name, old)


def serialize(artifact: Any) -> bytes:
  """The bytes of an artifact's serialized StableHLO program."""
  return bytes(program(artifact).serialize())


def export(artifact: Any, path: str, out: str) -> dict:
  """Writes the artifact's serialized StableHLO program at `out` (atomically).

  Args:
    artifact: the read artifact.
    path: its file.
    out: the file to write (load it with `jax.export.deserialize`).

  Returns:
    {'bytes': the file's size, 'inputs': the symbolic input shapes,
    'platforms', 'artifact_bytes'}.

  Raises:
    InputError: a leaf the program cannot decode; nothing is written.
  """
  del path
  exported = program(artifact)
  blob = bytes(exported.serialize())
  files.atomic_write(out, blob)
  return {'bytes': len(blob), 'platforms': list(exported.platforms),
          'inputs': [str(a) for a in exported.in_avals],
          'artifact_bytes': artifact.file_bytes}


# ----------------------------------------------------------------------------
# The runtime: a fresh process


def run_program(blob: bytes, batches: list[dict], x_dtype: Any
                ) -> list[np.ndarray]:
  """Runs a serialized program on batches in a fresh process.

  Args:
    blob: the serialized program.
    batches: batches with `x` and `lengths`.
    x_dtype: the program's input dtype (float32 or int32 tokens).

  Returns:
    Each batch's output.

  Raises:
    RuntimeError: the process failed, or it imported project modules.
  """
  with tempfile.TemporaryDirectory() as tmp:
    prog = os.path.join(tmp, 'program.stablehlo')
    inputs = os.path.join(tmp, 'batches.npz')
    outputs = os.path.join(tmp, 'outputs.npz')
    with open(prog, 'wb') as f:
      f.write(blob)
    arrays = {'count': np.asarray(len(batches))}
    for i, b in enumerate(batches):
      arrays[f'x_{i}'] = np.asarray(b['x'], x_dtype)
      arrays[f'lengths_{i}'] = np.asarray(b['lengths'], np.int32)
    np.savez(inputs, allow_pickle=False, **arrays)
    proc = subprocess.run([sys.executable, '-I', MAIN, prog, inputs, outputs],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
      raise RuntimeError('the StableHLO process failed: '
                         + proc.stderr.strip()[-2000:])
    with np.load(outputs, allow_pickle=False) as z:
      outs = [np.asarray(z[f'output_{i}']) for i in range(len(batches))]
      imported = [str(m) for m in z['project_modules']]
  if imported:
    raise RuntimeError('the StableHLO process imported project modules: '
                       + ', '.join(imported))
  return outs


def run(artifact: Any, path: str, batches: list[dict]
        ) -> tuple[list[np.ndarray], dict]:
  """Evaluates batches through the deserialized program (`--runtime=stablehlo`).

  Args:
    artifact: the read artifact.
    path: its file.
    batches: `data.eval_batches` batches.

  Returns:
    (each batch's output, {'stablehlo_bytes': the program's size}).
  """
  del path
  blob = serialize(artifact)
  tokens = artifact.header['task'] == 'language_model'
  outs = run_program(blob, batches, np.int32 if tokens else np.float32)
  return outs, {'stablehlo_bytes': len(blob)}
