r"""Tensor-train (TT) factorization of kernels, and the machinery Kronecker shares.

Like low-rank factorization (`compression.lowrank`), tensor-train and
Kronecker factorization (`compression.kronecker`) replace a matched kernel
W (m, n) by a trainable *factor dict* that the model multiplies through
(`models.cells.matmul`, `tt_matmul`), and both use one representation: d
cores

  G_k  of shape (r_{k-1}, m_k, n_k, r_k),  r_0 = r_d = 1,
  m = m_1 ... m_d,  n = n_1 ... n_d,

  W[(i_1..i_d), (j_1..j_d)] = G_1[0, i_1, j_1, :] G_2[:, i_2, j_2, :] ...
                              G_d[:, i_d, j_d, 0]

with row-major multi-indices (i = i_1 m_2..m_d + ... + i_d, i_1 slowest),
stored as `{'core_0': G_1, ..., 'core_{d-1}': G_d}` at the kernel's path.
A sum of r Kronecker products `sum_t A_t (x) B_t` is exactly the case d = 2,
r_1 = r (`A_t = G_1[0, :, :, t]`, `B_t = G_2[t, :, :, 0]`).

The `tt` method (Oseledets 2011, "Tensor-train decomposition"; Novikov et al.
2015, "Tensorizing neural networks"): `cores` = d factors with inner ranks
`ranks`; parameters `sum_k r_{k-1} m_k n_k r_k` per kernel.

Factor shapes (`shapes`): '' chooses them for every matched kernel (the
most balanced factorizations of m and n into d factors, each m_k and n_k
closest to the d-th root of m and n, ties to the fewest parameters; see
`choose_shapes`); otherwise `'[regex=]m_1xn_1,m_2xn_2[,...][;...]'`: entries
separated by ';', each a list of per-core `m_kxn_k`, optionally prefixed by a
regex that the kernel's path must fullmatch (the first matching entry wins,
an entry without a regex matches every kernel; a kernel no entry matches
gets the chosen shapes). Factor shapes whose products are not the kernel's
shape are refused (one line).

Initialization: TT-SVD (Oseledets 2011) of the kernel the method receives
(the trained kernel when the run starts from one, `init_from`, else the fresh
initialization): W is reshaped to the d-way tensor of the (m_k n_k) index
pairs and split by d - 1 successive truncated SVDs; for d = 2 this is Van
Loan and Pitsianis' nearest sum of Kronecker products, the best
approximation in the Frobenius norm (as truncated SVD is for low rank). The
cores are then rescaled to equal Frobenius norms (the product is unchanged)
so every core starts at the same scale and trains at the same pace, as
low-rank's square-rooted singular values do. With `rescale` the product is
also scaled to the replaced kernel's Frobenius norm: the truncation of a
freshly initialized kernel keeps little of its energy (a random matrix has
no dominant Kronecker terms), and a model trained from scratch wants its
kernels at the initializer's scale (on JapaneseVowels, 2-term Kronecker
GRU-64, seeds 0/1/2: 0.962/0.981/0.976 test accuracy without, 0.973/0.978/
0.981 with). A rank larger than its bond
allows (`min(prod_{i<=k} m_i n_i, prod_{i>k} m_i n_i)`) is refused.

`export` gives one float32 record per core (`<path>/core_k`), dense leaves
of their own, so a later method of the chain codes them (an 8-bit model:
`methods='tt,quantize'` with the quantizer's regex matching
`.*kernel/core_\d+`); accounting is exact and the artifact rebuilds the
factor dict (`compression.export.read`). `report` adds the stored and dense
kernel parameter counts to results.json.

Example:
  c.compression.methods = 'tt'
  c.compression.tt = tensor_train.config(cores=3, ranks='4')
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from compression import core
from compression import records
from compression.errors import InputError

Params = core.Params

KERNELS = r'rnn/.*kernel'  # Input and recurrent kernels of every layer.


def shapes_check(v: str) -> str | None:
  """The `shapes` option's check: why `v` does not parse, or None."""
  try:
    parse_shapes(v)
  except ValueError as e:
    return str(e)
  return None


def _ranks_check(v: str) -> str | None:
  try:
    _parse_ranks(v)
  except ValueError as e:
    return str(e)
  return None


OPTIONS = core.Options(
    'compression.tt',
    core.Option('regex', KERNELS, 'Kernels to factor (re.fullmatch).'),
    core.Option('cores', 3, 'Number d of TT cores (used where `shapes` sets '
                'none).', core.at_least(2)),
    core.Option('ranks', '4', "Inner TT ranks: one value for every bond, or "
                "d - 1 comma-separated values.", _ranks_check),
    core.Option('shapes', '', "Core shapes '[regex=]m1xn1,...,mdxnd;...'; '' "
                '= the most balanced, ties to the fewest parameters.',
                shapes_check),
    core.Option('rescale', False, 'Scale the initial factors so their '
                "product has the replaced kernel's Frobenius norm (training "
                'from a fresh initialization).'),
)
config = OPTIONS.config


# ----------------------------------------------------------------------------
# Shapes


def parse_shapes(text: str) -> list[tuple[str | None, list[tuple[int, int]]]]:
  """The entries of a `shapes` option: (regex or None, [(m_k, n_k), ...]).

  Raises:
    ValueError: a malformed entry or regex (the message names it).
  """
  entries = []
  for raw in text.split(';'):
    raw = raw.strip()
    if not raw:
      continue
    pattern, _, dims = raw.rpartition('=')
    pattern = pattern.strip() or None
    if pattern is not None:
      try:
        re.compile(pattern)
      except re.error as e:
        raise ValueError(f'invalid regex {pattern!r} ({e})') from None
    cores = []
    for part in dims.split(','):
      m = re.fullmatch(r'\s*(\d+)\s*x\s*(\d+)\s*', part)
      if m is None or int(m[1]) < 1 or int(m[2]) < 1:
        raise ValueError(f'{part.strip()!r} in {raw!r} is not MxN with '
                         'positive integers (e.g. 8x12,8x16)')
      cores.append((int(m[1]), int(m[2])))
    if len(cores) < 2:
      raise ValueError(f'{raw!r} names {len(cores)} factor; at least 2')
    entries.append((pattern, cores))
  return entries


def _parse_ranks(text: str) -> list[int]:
  try:
    ranks = [int(r) for r in str(text).split(',')]
  except ValueError:
    raise ValueError(f'{text!r} is not comma-separated integers') from None
  if not ranks or any(r < 1 for r in ranks):
    raise ValueError(f'{text!r}: every rank must be >= 1')
  return ranks


def _ordered_factorizations(n: int, d: int) -> list[tuple[int, ...]]:
  """Every way to write n as an ordered product of d positive integers."""
  if d == 1:
    return [(n,)]
  out = []
  for first in range(1, n + 1):
    if n % first == 0:
      out.extend((first,) + rest
                 for rest in _ordered_factorizations(n // first, d - 1))
  return out


def tt_params(cores: list[tuple[int, int]], ranks: list[int]) -> int:
  """Parameters of TT cores of shapes (m_k, n_k) with inner ranks `ranks`."""
  full = [1] + list(ranks) + [1]
  return sum(full[k] * m * n * full[k + 1] for k, (m, n) in enumerate(cores))


def max_ranks(cores: list[tuple[int, int]]) -> list[int]:
  """The largest useful rank at each bond: min(left, right) sizes."""
  sizes = [m * n for m, n in cores]
  return [min(math.prod(sizes[:k + 1]), math.prod(sizes[k + 1:]))
          for k in range(len(cores) - 1)]


def choose_shapes(m: int, n: int, d: int, ranks: list[int]
                  ) -> list[tuple[int, int]] | None:
  """The most balanced d core shapes of an (m, n) kernel.

  Balanced as tensor-train layers are usually built (Novikov et al. 2015:
  64 = 4 x 4 x 4): every m_k and n_k as close as possible to the d-th roots
  of m and n (the sum of |log m_k - log(m) / d| + |log n_k - log(n) / d|),
  ties to the fewest parameters, then to the first in lexicographic order.
  Every core must read or write more than one value (m_k n_k > 1) and every
  rank must fit its bond.

  Returns:
    [(m_1, n_1), ..., (m_d, n_d)], or None when no shape qualifies.
  """
  best, best_key = None, None
  log_m, log_n = math.log(m) / d, math.log(n) / d
  for ms in _ordered_factorizations(m, d):
    for ns in _ordered_factorizations(n, d):
      cores = list(zip(ms, ns))
      if any(a * b == 1 for a, b in cores):
        continue
      if any(r > top for r, top in zip(ranks, max_ranks(cores))):
        continue
      spread = sum(abs(math.log(a) - log_m) + abs(math.log(b) - log_n)
                   for a, b in cores)
      key = (round(spread, 9), tt_params(cores, ranks), cores)
      if best_key is None or key < best_key:
        best, best_key = cores, key
  return best


# ----------------------------------------------------------------------------
# Cores


def tt_svd(w: np.ndarray, cores: list[tuple[int, int]], ranks: list[int],
           rescale: bool = False) -> list[np.ndarray]:
  """TT cores of W by successive truncated SVDs (Oseledets 2011).

  Args:
    w: (m, n) kernel, m = prod m_k, n = prod n_k.
    cores: [(m_k, n_k)].
    ranks: the d - 1 inner ranks, each at most `max_ranks(cores)`.
    rescale: multiply the product by ||W|| / ||product|| (Frobenius).

  Returns:
    The d float32 cores (r_{k-1}, m_k, n_k, r_k), with equal Frobenius
    norms (the product unchanged by that balancing).
  """
  d = len(cores)
  ms, ns = [c[0] for c in cores], [c[1] for c in cores]
  t = np.asarray(w, np.float64).reshape(ms + ns)
  # Interleave to (m_1, n_1, m_2, n_2, ...): core k owns the pair (i_k, j_k).
  t = t.transpose([a for k in range(d) for a in (k, d + k)])
  out = []
  r_prev = 1
  rest = t.reshape(-1)
  for k in range(d - 1):
    mat = rest.reshape(r_prev * ms[k] * ns[k], -1)
    u, s, vt = np.linalg.svd(mat, full_matrices=False)
    r = int(ranks[k])
    out.append(u[:, :r].reshape(r_prev, ms[k], ns[k], r))
    rest = s[:r, None] * vt[:r]
    r_prev = r
  out.append(rest.reshape(r_prev, ms[-1], ns[-1], 1))
  norms = np.array([np.linalg.norm(c) for c in out])
  if np.all(norms > 0):
    target = np.exp(np.mean(np.log(norms)))
    if rescale:
      # The product's norm is that of the kept singular values.
      kept = np.linalg.norm(tt_dense(out))
      target *= (np.linalg.norm(w) / kept) ** (1.0 / d) if kept > 0 else 1.0
    out = [c * (target / nrm) for c, nrm in zip(out, norms)]
  return [c.astype(np.float32) for c in out]


def tt_dense(cores: list[Any]) -> np.ndarray:
  """The (m, n) kernel that TT cores stand for (float64, numpy)."""
  first = np.asarray(cores[0], np.float64)
  acc = first[0]  # (m_1, n_1, r_1)
  for c in cores[1:]:
    c = np.asarray(c, np.float64)
    rows, cols = acc.shape[0] * c.shape[1], acc.shape[1] * c.shape[2]
    acc = np.einsum('abr,rcds->acbds', acc, c).reshape(rows, cols, c.shape[3])
  return acc[:, :, 0]


def _is_cores(leaf: Any) -> bool:
  return isinstance(leaf, Mapping) and 'core_0' in leaf


def factored_leaves(params: Params, prefix: str = ''
                    ) -> list[tuple[str, Mapping[str, Any]]]:
  """(path, core dict) of every TT / Kronecker-factored kernel, tree order."""
  found = []
  for key, value in params.items():
    path = f'{prefix}{key}'
    if _is_cores(value):
      found.append((path, value))
    elif isinstance(value, Mapping):
      found.extend(factored_leaves(value, path + '/'))
  return found


# ----------------------------------------------------------------------------
# The methods


def factor_method(field: str, regex: str, d: int, ranks: list[int],
                  shapes: list[tuple[str | None, list[tuple[int, int]]]],
                  rescale: bool = False) -> core.Compressor:
  """The Compressor factoring every kernel `regex` matches into TT cores.

  Args:
    field: the config section ('compression.kronecker' | 'compression.tt').
    regex: the kernels to factor.
    d: cores where no `shapes` entry applies.
    ranks: one rank (every bond) or d - 1 ranks.
    shapes: parsed `shapes` entries.
    rescale: see `tt_svd`.

  Returns:
    A Compressor whose `init` replaces each matched kernel by its cores
    `{'core_0', ...}` (TT-SVD of the kernel), whose `apply` hands them to the
    model unchanged and whose `export` gives one float32 record per core.
  """

  def bond_ranks(n_cores: int) -> list[int]:
    if len(ranks) == 1:
      return ranks * (n_cores - 1)
    if len(ranks) != n_cores - 1:
      raise InputError(f'{field}.ranks: {len(ranks)} ranks for {n_cores} '
                       f'cores; give one, or {n_cores - 1}')
    return list(ranks)

  def plan(path: str, shape: tuple[int, ...]) -> tuple[list, list[int]]:
    """(core shapes, ranks) of one kernel; one error line if impossible."""
    if len(shape) != 2:
      raise InputError(f'{field}.regex: {path} has shape {shape}; only 2-D '
                       'kernels factor')
    m, n = shape
    for pattern, cores in shapes:
      if pattern is None or re.fullmatch(pattern, path):
        rows = math.prod(c[0] for c in cores)
        cols = math.prod(c[1] for c in cores)
        if (rows, cols) != (m, n):
          text = ' * '.join(f'{a}x{b}' for a, b in cores)
          raise InputError(f'{field}.shapes: factors {text} make a ({rows}, '
                           f'{cols}) kernel, {path} is ({m}, {n})')
        r = bond_ranks(len(cores))
        for k, (want, top) in enumerate(zip(r, max_ranks(cores))):
          if want > top:
            raise InputError(f'{field}: rank {want} exceeds the largest '
                             f'useful rank {top} at bond {k + 1} of {path} '
                             f'(cores {cores})')
        return cores, r
    r = bond_ranks(d)
    cores = choose_shapes(m, n, d, r)
    if cores is None:
      raise InputError(f'{field}: no {d}-factor shape of {path} ({m}, {n}) '
                       f'fits ranks {r}; lower the ranks or give shapes')
    return cores, r

  def init(params):
    chosen = core.select(params, regex, field=f'{field}.regex')
    paths = [core.path_str(p) for p, c in
             jax.tree_util.tree_flatten_with_path(chosen)[0] if c]
    # Every shape is checked before any SVD runs.
    plans = {p: plan(p, tuple(np.shape(core.get_path(params, p))))
             for p in paths}
    out = params
    for p, (cores, r) in plans.items():
      w = np.asarray(core.get_path(params, p), np.float64)
      found = tt_svd(w, cores, r, rescale)
      out = core.set_path(out, p, {f'core_{k}': jnp.asarray(c)
                                   for k, c in enumerate(found)})
    return out, ()

  def apply(params, state):
    del state
    return params

  def export(params, state):
    del state
    # Each core is a dense leaf of its own, stored as it is unless a later
    # method in the chain codes it.
    return {f'{path}/{key}': records.Record()
            for path, leaf in factored_leaves(params) for key in sorted(leaf)}

  return core.Compressor(init=init, apply=apply, export=export)


def make(cfg: Any) -> core.Compressor:
  """The tensor-train Compressor for a `config()` section.

  Args:
    cfg: the `compression.tt` ConfigDict.

  Returns:
    The Compressor of `factor_method`.

  Raises:
    InputError: a bad option (here), or, in `init`, a regex matching no 2-D
      kernel, core shapes that do not make a kernel, a number of ranks that
      fits neither one per bond nor one for all, or a rank larger than its
      bond allows.
  """
  o = OPTIONS.parse(cfg)
  return factor_method('compression.tt', o.regex, o.cores,
                       _parse_ranks(o.ranks), parse_shapes(o.shapes),
                       o.rescale)


def kernel_params(dense: Params) -> tuple[int, int]:
  """(stored, dense) parameter counts of every kernel of a dense view.

  A kernel is a leaf (or factor dict) whose last path component ends in
  'kernel'; a factor dict counts its factors as stored and its product's
  shape as dense.
  """
  stored = full = 0

  def walk(tree: Mapping[str, Any]) -> None:
    nonlocal stored, full
    for key, value in tree.items():
      if key.endswith('kernel') and isinstance(value, Mapping):
        from models import cells  # pylint: disable=g-import-not-at-top
        rows, cols = cells.factored_shape(value)
        stored += sum(int(np.size(v)) for v in value.values())
        full += rows * cols
      elif key.endswith('kernel'):
        stored += int(np.size(value))
        full += int(np.size(value))
      elif isinstance(value, Mapping):
        walk(value)

  walk(dense)
  return stored, full


def report(cfg: Any, state: Any, dense_params: Params, model_cfg: Any
           ) -> dict[str, Any]:
  """results.json fields: kernel parameters stored and dense, their ratio."""
  del cfg, state, model_cfg
  stored, full = kernel_params(dense_params)
  return {'factored_kernel_params': stored, 'dense_kernel_params': full,
          'kernel_reduction': full / max(stored, 1),
          'factored_kernels': {p: [list(np.shape(c)) for _, c in sorted(
              leaf.items())] for p, leaf in factored_leaves(dense_params)}}


METHODS = {'tt': make}
