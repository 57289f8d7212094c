r"""K-means weight sharing (Han et al. 2016, "Deep Compression").

Each selected kernel is replaced by a codebook of `clusters` shared values and
an index per weight. `init` runs 1-D k-means (Lloyd's algorithm, centroids
initialised linearly between the weights' min and max, as Deep Compression
found best) on the host; the indices are then fixed and the centroids train:
the dense kernel is `centroids[indices]`, so the gradient of each centroid is
automatically the sum of its weights' gradients.

Parameters: the kernel leaf at `<path>` becomes `{'centroids': (k,) float32}`,
so its path is `<path>/centroids` (a later method's regex such as
`.*centroids` can e.g. quantize the codebook; `.*kernel` no longer matches).

Zeros: a kernel that holds exact zeros (a pruned one) keeps them exactly.
Index 0 is then reserved for a zero cluster whose centroid is pinned at 0
(never trained: `apply` replaces it by 0, so its gradient is zero) and the
other k - 1 centroids cluster the nonzero weights. A kernel without zeros uses
all k centroids. The choice is made once in `init` and recorded in the state
(`zero_cluster`).

State per clustered parameter (a nested dict mirroring its path):
`{'indices': int32 array shaped like the kernel, 'zero_cluster': bool ()}`.

`export` gives, per clustered parameter (the encoding `decode` reads):

  =========  =================================================================
  field      encoding
  =========  =================================================================
  codebook   float32 (k,), the effective centroids (entry 0 is exactly 0 when
             the zero cluster is kept)
  indices    uint8, the indices row-major as a little-endian bitstream of
             `bits` bits each (`quantization.pack_bits`)
  bits       int, ceil(log2 k), 1..8
  shape      int32 array, the kernel's shape
  =========  =================================================================

and `decode(entry) = codebook[indices]` is bit-identical to `apply`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from compression import core
from compression import records
from compression.core import Compressor
from compression.errors import InputError

Params = Any
State = Any

MAX_CLUSTERS = 256  # Indices fit one byte.


OPTIONS = core.Options(
    'compression.kmeans',
    core.Option('clusters', 16, 'Shared values per kernel, 2..256 (16 = '
                '4-bit indices).', lambda k: None if 2 <= k <= MAX_CLUSTERS
                else f'{k!r} outside 2..{MAX_CLUSTERS}'),
    core.Option('regex', '.*kernel', 'Parameters to cluster (re.fullmatch on '
                'the path).', lambda r: None if r else
                f'expected a non-empty regex, got {r!r}'),
    core.Option('iterations', 30, 'Lloyd iterations of the initial k-means.',
                lambda it: None if it >= 1 else
                f'must be an integer >= 1, got {it!r}'),
)
config = OPTIONS.config
parse = OPTIONS.parse


def index_bits(clusters: int) -> int:
  """Bits per stored index: ceil(log2 clusters), at least 1."""
  return max(1, math.ceil(math.log2(clusters)))


def kmeans_1d(values: np.ndarray, k: int, iterations: int
              ) -> tuple[np.ndarray, np.ndarray]:
  """1-D k-means with linear initialisation (deterministic, numpy).

  Args:
    values: the weights (any shape; flattened).
    k: number of centroids (>= 1).
    iterations: Lloyd iterations (stops early when assignments settle).

  Returns:
    (centroids (k,) float32 sorted ascending, indices (n,) int32). A centroid
    that loses all its weights keeps its previous value.
  """
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    return np.zeros(k, np.float32), np.zeros(0, np.int32)
  c = np.linspace(x.min(), x.max(), k)
  idx = None
  for _ in range(iterations):
    # Nearest centroid of sorted centroids: search among the midpoints.
    new_idx = np.searchsorted((c[1:] + c[:-1]) / 2, x)
    if idx is not None and np.array_equal(new_idx, idx):
      break
    idx = new_idx
    sums = np.bincount(idx, weights=x, minlength=k)
    counts = np.bincount(idx, minlength=k)
    c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
    c = np.sort(c)  # Means of ordered intervals stay ordered; sort is a guard.
  idx = np.searchsorted((c[1:] + c[:-1]) / 2, x)
  return c.astype(np.float32), idx.astype(np.int32)


def cluster(w: np.ndarray, k: int, iterations: int
            ) -> tuple[np.ndarray, np.ndarray, bool]:
  """Codebook and indices of one kernel, with the zero rule of the module.

  Args:
    w: the kernel.
    k: clusters.
    iterations: Lloyd iterations.

  Returns:
    (centroids (k,) float32, indices shaped like w (int32), zero_cluster).
  """
  w = np.asarray(w, np.float32)
  flat = w.reshape(-1)
  zeros = flat == 0
  if not zeros.any():
    c, idx = kmeans_1d(flat, k, iterations)
    return c, idx.reshape(w.shape), False
  c = np.zeros(k, np.float32)
  idx = np.zeros(flat.shape, np.int32)
  if (~zeros).any():
    c_nz, idx_nz = kmeans_1d(flat[~zeros], k - 1, iterations)
    c[1:] = c_nz
    idx[~zeros] = idx_nz + 1
  return c, idx.reshape(w.shape), True


def _effective(centroids: jax.Array, zero_cluster: jax.Array) -> jax.Array:
  """Centroids with entry 0 pinned at 0 where the zero cluster is kept."""
  first = jnp.arange(centroids.shape[0]) == 0
  return jnp.where(first & zero_cluster, 0.0, centroids).astype(
      centroids.dtype)


def make(section: Any) -> Compressor:
  """The 'kmeans' method: shared-value kernels with trainable centroids.

  Args:
    section: `config.compression.kmeans` (see `config`).

  Returns:
    A Compressor.

  Raises:
    InputError: a bad field (when called) or a regex matching nothing (in
      `init`).
  """
  spec = parse(section)
  bits = index_bits(spec.clusters)

  def init(params):
    paths = core.selected_keys(params, spec.regex, 'compression.kmeans.regex')
    state_items = []
    for keys in paths:
      w = np.asarray(core.get_path(params, keys))
      if not np.issubdtype(w.dtype, np.floating):
        raise InputError(f'compression.kmeans.regex: {"/".join(keys)} is not '
                         f'a float parameter ({w.dtype})')
      c, idx, has_zero = cluster(w, spec.clusters, spec.iterations)
      params = core.set_path(params, keys, {'centroids': jnp.asarray(c)})
      state_items.append((keys, {'indices': jnp.asarray(idx),
                                 'zero_cluster': jnp.asarray(has_zero)}))
    return params, core.nest(state_items)

  def apply(params, state):
    for keys, rec in core.tagged(state, 'indices'):
      c = _effective(core.get_path(params, keys)['centroids'], rec['zero_cluster'])
      params = core.set_path(params, keys, jnp.take(c, rec['indices'], axis=0))
    return params

  def export(params, state):
    out = {}
    for keys, rec in core.tagged(state, 'indices'):
      c = _effective(core.get_path(params, keys)['centroids'],
                     rec['zero_cluster'])
      out['/'.join(keys)] = records.Record(codebook=records.Codebook(
          index=np.asarray(rec['indices']), bits=bits,
          codebook=np.asarray(c, np.float32)))
    return out

  return Compressor(
      init=init,
      apply=apply,
      export=export)


METHODS = {'kmeans': make}
