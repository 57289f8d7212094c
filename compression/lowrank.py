"""Low-rank factorization: kernels replaced by truncated-SVD factor pytrees.

A matched kernel W (m, n) with singular value decomposition `A S B^T` becomes
the trainable factor dict `{'u': U, 'v': V}` with `U = A_r sqrt(S_r)` (m, r)
and `V = sqrt(S_r) B_r^T` (r, n): the singular values are split as square
roots so both factors start at the same scale and train at the same pace.
`U @ V` is the best rank-r approximation of W (Eckart-Young), and its squared
Frobenius error is the discarded energy `sum_{k>r} s_k^2`.

`apply` keeps the factor dict as the kernel leaf: `models.cells.matmul(x, w)`
multiplies through it as `(x U) V`, which costs `r (m + n)` multiply-adds per
row instead of `m n`, so a small rank is really cheaper at inference (see
`benchmarks/inference.py`).

The rank of each matched kernel is one of (set at most one in the config;
none means `rank_fraction` = 0.25):

* `rank`: a fixed number r, at most min(m, n);
* `rank_fraction`: ceil(fraction * min(m, n));
* `energy`: the smallest r whose leading singular values keep at least that
  fraction tau of `sum s_k^2`.

Shared factor (`shared=True`; Prabhavalkar et al. 2016, "On the compression
of recurrent neural networks with an application to LVCSR acoustic modeling
for embedded speech recognition"): layer l's recurrent kernel and layer l+1's
input kernel both read h_t of layer l, so the SVD of the stacked
`[W_rec_l, W_in_{l+1}]` (H, 2 G H) gives one U (H, r) shared by the two and
a V for each. The params then hold `{'u': U, 'v': V_rec}` at
`.../layer_l/recurrent_kernel` and only `{'v': V_in}` at
`.../layer_{l+1}/input_kernel`; `apply` completes the latter with the shared U
(so U is trained by the gradients of both products). A pair forms only where
the regex matches both kernels.

Export (`export(params, state)` -> `{path: entry}`), fields of an entry:

  ========  ===============  ==================================================
  field     type             meaning
  ========  ===============  ==================================================
  u         float32 (m, r)   left factor (absent for a shared input kernel)
  v         float32 (r, n)   right factor
  u_of      str              only for a shared input kernel: the path of the
                             entry whose `u` it multiplies
  ========  ===============  ==================================================

`decode(entry, entries)` gives the dense kernel `u @ v` in float32.

Example:
  c.compression.methods = 'lowrank'
  c.compression.lowrank = lowrank.config(rank_fraction=0.25)
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

_FIELD = 'compression.lowrank'
# The rank rule when the section sets none of rank, rank_fraction, energy.
DEFAULT_FRACTION = 0.25
# Layer l's recurrent kernel and layer l+1's input kernel read the same h_t.
_LAYER_RE = re.compile(r'(?P<prefix>(?:.*/)?)layer_(?P<i>\d+)/'
                       r'(?P<kind>recurrent_kernel|input_kernel)')


def _off_or_fraction(v: float) -> str | None:
  return None if v == 0 or 0.0 < v <= 1.0 else f'{v} outside (0, 1]'


OPTIONS = core.Options(
    _FIELD,
    core.Option('regex', r'.*recurrent_kernel|.*layer_[1-9]\d*/input_kernel',
                'Kernels to factor (re.fullmatch); the default: every matrix '
                'that reads a hidden state.'),
    core.Option('rank', 0, 'Fixed rank of every matched kernel; 0 = another '
                'rule.', lambda v: None if v >= 0 else
                f'{v!r} must be an integer >= 1'),
    core.Option('rank_fraction', 0.0, 'ceil(fraction * min(m, n)), in (0, 1]; '
                '0 = off.', _off_or_fraction),
    core.Option('energy', 0.0, 'Smallest rank keeping this share of sum s^2, '
                'in (0, 1]; 0 = off.', _off_or_fraction),
    core.Option('shared', False, "One U for layer l's recurrent kernel and "
                "layer l+1's input kernel."),
)
config = OPTIONS.config


def _check_config(cfg: Any) -> Any:
  """The parsed section; one error line for a bad or ambiguous rank rule."""
  o = OPTIONS.parse(cfg)
  rules = [name for name in ('rank', 'rank_fraction', 'energy')
           if getattr(o, name)]
  if len(rules) > 1:
    raise InputError(
        f'{_FIELD}: set at most one of rank (>= 1), rank_fraction (0, 1] or '
        f'energy (0, 1] (none = rank_fraction {DEFAULT_FRACTION}); got '
        f'rank={o.rank}, rank_fraction={o.rank_fraction}, '
        f'energy={o.energy}')
  return o


def choose_rank(s: np.ndarray, *, rank: int = 0, rank_fraction: float = 0.0,
                energy: float = 0.0, where: str = 'kernel') -> int:
  """The rank one rule picks for singular values `s` (descending).

  Args:
    s: the singular values of the matrix, descending; len(s) = min(m, n).
    rank: a fixed rank (0 = not this rule).
    rank_fraction: ceil(rank_fraction * len(s)) (0 = not this rule).
    energy: the smallest r with sum(s[:r]^2) >= energy * sum(s^2).
    where: the parameter path, for the error message.

  Returns:
    The rank, in 1..len(s).

  Raises:
    InputError: a fixed rank larger than the matrix allows.
  """
  full = len(s)
  if rank:
    if rank > full:
      raise InputError(f'{_FIELD}.rank: {rank} exceeds the full rank {full} '
                       f'of {where}')
    return int(rank)
  if rank_fraction:
    # The small epsilon keeps 0.25 * 64 at 16, not 17, after float rounding.
    return max(1, min(full, math.ceil(rank_fraction * full - 1e-9)))
  sq = np.asarray(s, np.float64) ** 2
  total = sq.sum()
  if total == 0.0:
    return 1
  kept = np.cumsum(sq) / total
  # `energy - 1e-12` so energy = 1 does not miss full rank by rounding.
  return int(min(full, np.searchsorted(kept, energy - 1e-12) + 1))


def factorize(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
  """Truncated-SVD factors `(U, V)` with `U @ V` the best rank-r approximation.

  Args:
    w: (m, n) matrix.
    rank: r, 1 <= r <= min(m, n).

  Returns:
    U (m, r) and V (r, n) float32, each carrying sqrt of the singular values.
  """
  a, s, bt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
  root = np.sqrt(s[:rank])
  return ((a[:, :rank] * root).astype(np.float32),
          (root[:, None] * bt[:rank]).astype(np.float32))


def _is_factored(leaf: Any) -> bool:
  return (isinstance(leaf, Mapping) and 'v' in leaf
          and set(leaf) <= {'u', 'v'})


def _shared_source(path: str) -> str:
  """`.../layer_{i-1}/recurrent_kernel` for `.../layer_{i}/input_kernel`."""
  m = _LAYER_RE.fullmatch(path)
  if m is None or m['kind'] != 'input_kernel' or int(m['i']) == 0:
    raise ValueError(f'{path} has no shared factor source')
  return f"{m['prefix']}layer_{int(m['i']) - 1}/recurrent_kernel"


def _pairs(paths: list[str]) -> dict[str, str]:
  """Matched layer l+1 input kernel -> matched layer l recurrent kernel."""
  chosen = set(paths)
  pairs = {}
  for p in paths:
    m = _LAYER_RE.fullmatch(p)
    if m is not None and m['kind'] == 'input_kernel' and int(m['i']) > 0:
      src = _shared_source(p)
      if src in chosen:
        pairs[p] = src
  return pairs


def _matched_paths(params: Params, regex: str) -> list[str]:
  chosen = core.select(params, regex, field=f'{_FIELD}.regex')
  leaves = jax.tree_util.tree_flatten_with_path(chosen)[0]
  paths = [core.path_str(p) for p, c in leaves if c]
  for p in paths:
    if np.ndim(core.get_path(params, p)) != 2:
      raise InputError(f'{_FIELD}.regex: {p} has shape '
                       f'{np.shape(core.get_path(params, p))}; only 2-D kernels factor')
  return paths


def make(cfg: Any) -> core.Compressor:
  """The low-rank Compressor for a `config()` section.

  Args:
    cfg: the `compression.lowrank` ConfigDict.

  Returns:
    A Compressor whose `init` replaces each matched kernel by `{'u', 'v'}`
    and whose `apply` hands those factor dicts to the model unchanged (shared
    input kernels get their U filled in).

  Raises:
    InputError: a bad rank rule (here), or, in `init`, a regex matching no
      2-D parameter or a rank larger than a matrix.
  """
  o = _check_config(cfg)
  regex, shared = o.regex, o.shared
  rule = dict(rank=o.rank, rank_fraction=o.rank_fraction, energy=o.energy)
  if not any(rule.values()):
    rule['rank_fraction'] = DEFAULT_FRACTION

  def init(params):
    paths = _matched_paths(params, regex)
    pairs = _pairs(paths) if shared else {}
    partner = {src: dst for dst, src in pairs.items()}
    if rule['rank']:
      # Shapes first, so a bad rank fails before any SVD runs.
      for p in paths:
        choose_rank(np.ones(min(np.shape(core.get_path(params, p)))), where=p, **rule)
    out = params
    for p in paths:
      if p in pairs:
        continue  # Factored together with its source below.
      w = np.asarray(core.get_path(params, p), np.float64)
      if p in partner:
        w_in = np.asarray(core.get_path(params, partner[p]), np.float64)
        if w_in.shape[0] != w.shape[0]:
          raise InputError(f'{_FIELD}.shared: {p} and {partner[p]} read '
                           f'different widths {w.shape[0]} != {w_in.shape[0]}')
        stacked = np.concatenate([w, w_in], axis=1)
        where = f'[{p}, {partner[p]}]'
      else:
        stacked, where = w, p
      s = np.linalg.svd(stacked, compute_uv=False)
      r = choose_rank(s, where=where, **rule)
      u, v = factorize(stacked, r)
      n = w.shape[1]
      out = core.set_path(out, p, {'u': jnp.asarray(u), 'v': jnp.asarray(v[:, :n])})
      if p in partner:
        out = core.set_path(out, partner[p], {'v': jnp.asarray(v[:, n:])})
    return out, ()

  def apply(params, state):
    del state
    # Only shared input kernels change: they borrow their source's U.
    out = params
    for path, leaf in _factored_leaves(params):
      if 'u' not in leaf:
        out = core.set_path(out, path, {'u': core.get_path(params, _shared_source(path))['u'],
                               'v': leaf['v']})
    return out

  def export(params, state):
    del state
    out = {}
    for path, leaf in _factored_leaves(params):
      # The factors are dense leaves of their own (`<path>/u`, `<path>/v`),
      # stored as they are unless a later method codes them; a shared U is
      # stored once, with the layer above.
      out[f'{path}/v'] = records.Record()
      out[f'{path}/u'] = (records.Record() if 'u' in leaf else
                          records.Record(ref=f'{_shared_source(path)}/u'))
    return out

  return core.Compressor(init=init, apply=apply, export=export)


def _factored_leaves(params: Params, prefix: str = '') -> list[tuple[str, Any]]:
  """(path, factor dict) for every factored kernel, in tree order."""
  found = []
  for key, value in params.items():
    path = f'{prefix}{key}'
    if _is_factored(value):
      found.append((path, value))
    elif isinstance(value, Mapping):
      found.extend(_factored_leaves(value, path + '/'))
  return found


METHODS = {'lowrank': make}
