r"""Compression to a byte budget: one setting per tensor, chosen to fit.

The `budget` method holds, for every parameter its regex selects, a mask
(the kept weights) and a bit width (0 = float32 values). Its `apply` keeps
the masked weights and rounds them to a symmetric grid of that width (one
scale per output channel for kernels, per tensor for 1-D leaves, as
`compression.quantization` does; the straight-through gradient reaches the
kept weights only), and its `export` stores exactly that: the kept positions
and the integer codes. Before any allocation every setting is "float32, all
kept", so the method is the identity.

`allocate` chooses the settings (train.py calls it once, before training,
on the trained float model `init_from` loads):

1. Candidates per tensor: float32, and every pair (sparsity s, bits b) of
   `sparsities` x `bits` (1-D leaves take s = 0 only). Sparsity is by
   magnitude within the tensor.
2. Sensitivity of a candidate: the increase of the training loss on the
   calibration batches (`compression.calibration_batches`) with only that
   tensor compressed, every other at float32 (a first-order-free, direct
   measurement; it ignores interactions between tensors, which the
   fine-tuning afterwards absorbs).
3. Bytes of a candidate: its exact payload in the artifact at fixed-width
   coding, from `compression.accounting.plan` on its records (not an
   estimate). Fixed width is an upper bound of what the file stores: the
   writer takes Huffman codes only where they are smaller.
4. The choice: minimise the summed sensitivity subject to payload <= B minus
   the header, a multiple-choice knapsack solved exactly by dynamic
   programming over bytes. The header's size is then measured by encoding
   the chosen plan with the run's real header; if the file would exceed B
   the payload budget is lowered by the excess and the program solved
   again (the header varies by a few bytes with the encodings chosen).

Settings are fixed for the fine-tuning that follows: each tensor keeps its
count of weights, widths and codebook sizes, so the file the run writes has
the planned structure. With `ramp_steps` the masks are reached gradually
(Zhu & Gupta's cubic ramp, masks by magnitude on the training weights), and
every codebook follows its weights by one k-means step per update. The
final positions may then code in a few more bytes than the allocation's
masks did, so a last check before the artifact is written (`fit_run`)
removes one code bit at a time from the least sensitive tensor until the
file fits (`budget_repairs` in results.json counts them).

The allocation goes to results.json (`allocation`: tensor, setting, bytes,
sensitivity) and is printed as a table.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from compression import accounting
from compression import core
from compression import records
from compression.core import Compressor
from compression.errors import InputError

_FIELD = 'compression.budget'
FAMILIES = ('float', 'quantize', 'kmeans', 'prune')


def _floats(text: str) -> tuple[float, ...]:
  try:
    return tuple(float(t) for t in str(text).split(',') if t.strip())
  except ValueError:
    raise ValueError(f'expected comma-separated numbers, got {text!r}'
                     ) from None


def _ints(text: str) -> tuple[int, ...]:
  vals = _floats(text)
  if any(v != int(v) for v in vals):
    raise ValueError(f'expected comma-separated integers, got {text!r}')
  return tuple(int(v) for v in vals)


def _int_list(text: str, lo: int, hi: int, what: str) -> tuple[int, ...]:
  vals = _ints(text)
  if not vals or any(not lo <= b <= hi for b in vals):
    raise ValueError(f'{what} must be in {lo}..{hi}, got {text!r}')
  return tuple(sorted(set(vals)))


def _bits_list(text: str) -> tuple[int, ...]:
  return _int_list(text, 2, 8, 'bit widths')


def _sparsity_list(text: str) -> tuple[float, ...]:
  vals = _floats(text)
  if any(not 0 <= s < 1 for s in vals):
    raise ValueError(f'sparsities must be in [0, 1), got {text!r}')
  return tuple(sorted(set(vals) | {0.0}))


def _fractions(text: str) -> tuple[float, ...]:
  vals = _floats(text)
  if any(not 0 < f <= 1 for f in vals):
    raise ValueError(f'width fractions must be in (0, 1], got {text!r}')
  return tuple(sorted(set(vals), reverse=True))


def _families(text: str) -> tuple[str, ...]:
  names = tuple(t.strip() for t in str(text).split(',') if t.strip())
  bad = [n for n in names if n not in FAMILIES]
  if bad or not names:
    raise ValueError(f'unknown candidate {", ".join(bad) or "(none)"}; '
                     f'valid: {", ".join(FAMILIES)}')
  return names


def _budget_check(v: Any) -> str | None:
  return None if v >= 0 else f'must be > 0 bytes, got {v}'


def _ratio_check(v: Any) -> str | None:
  return None if v >= 0 else f'must be > 0, got {v}'


OPTIONS = core.Options(
    _FIELD,
    core.Option('bytes', 0, 'The whole artifact file must fit in this many '
                'bytes (header included); 0: use `ratio`.', _budget_check),
    core.Option('ratio', 0.0, 'Or: at least this many times smaller than '
                'the float32 model; 0: use `bytes`.', _ratio_check),
    core.Option('candidates', 'float,quantize,kmeans,prune', 'Setting '
                'families each tensor may take: float (float32), quantize '
                '(the `bits`), kmeans (`clusters` shared values), prune (the '
                '`sparsities`).', convert=_families),
    core.Option('bits', '2,3,4,5,6,8', 'Candidate bit widths, 2..8.',
                convert=_bits_list),
    core.Option('clusters', '2,4,16', 'Candidate codebook sizes, 2..16.',
                convert=lambda t: _int_list(t, 2, 16, 'codebook sizes')),
    core.Option('sparsities', '0.5,0.75,0.9,0.95', 'Candidate sparsities '
                'of kernels, [0, 1).', convert=_sparsity_list),
    core.Option('ramp_steps', 0, 'Gradual pruning: the removed fraction '
                'rises to each tensor\'s sparsity over this many training '
                'steps, masks chosen by magnitude every `ramp_every` steps '
                '(0: the allocation\'s masks from the start).',
                lambda v: None if v >= 0 else f'must be >= 0, got {v}'),
    core.Option('ramp_every', 10, 'Steps between mask updates of the ramp.',
                lambda v: None if v >= 1 else f'must be >= 1, got {v}'),
    core.Option('widths', '', 'Candidate hidden widths, as fractions of the '
                'source model\'s (e.g. 0.5,0.25): each recurrent layer keeps '
                'that share of its units (the largest by L2 norm, as unit '
                'pruning ranks them) and the model shrinks; \'\' = the '
                'source width only.', convert=_fractions),
    core.Option('width', 0, 'The hidden width the run uses (set by the width '
                'search; 0 = search `widths`, or keep the source width).',
                lambda v: None if v >= 0 else f'must be >= 0, got {v}'),
    core.Option('regex', '.*', 'Parameters the budget allocates (the '
                'others stay float32).', lambda r: None if r else
                f'expected a non-empty regex, got {r!r}'),
)
config = OPTIONS.config


def parse(section: Any) -> Any:
  """The validated section; exactly one of bytes / ratio must be set."""
  o = OPTIONS.parse(section)
  if (o.bytes > 0) == (o.ratio > 0):
    raise InputError(f'{_FIELD}: set exactly one of bytes (> 0) and ratio '
                     f'(> 0); got bytes={o.bytes}, ratio={o.ratio}')
  return o


# ----------------------------------------------------------------------------
# One tensor's setting, held in the state

MAX_CLUSTERS = 16  # The state's codebook holds this many slots.


class Setting(NamedTuple):
  """What one tensor becomes.

  Attributes:
    sparsity: the fraction of its weights removed (smallest magnitudes).
    bits: width of the symmetric grid's codes, 2..8; 0 for none.
    per_channel: one grid step per output channel (else one per tensor).
    clusters: size of a codebook of the kept weights (k-means), 2..16; 0
      for none. With neither bits nor clusters the values are float32.
  """
  sparsity: float = 0.0
  bits: int = 0
  per_channel: bool = True
  clusters: int = 0

  def label(self) -> str:
    if self.clusters:
      v = f'{self.clusters} shared values'
    elif self.bits:
      v = f'{self.bits}-bit' + ('' if self.per_channel else ' per tensor')
    else:
      v = 'float32'
    return v if self.sparsity == 0 else f'{v}, {self.sparsity:.0%} pruned'


def _scale(w: jax.Array, qmax: jax.Array, per_channel: jax.Array
           ) -> jax.Array:
  """Symmetric absmax step: per output channel (the last axis of a 2-D+
  tensor, when `per_channel`) or per tensor (broadcast to the channels)."""
  m = jnp.max(jnp.abs(w))
  if w.ndim >= 2:
    m = jnp.where(per_channel,
                  jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1))), m)
  safe_q = jnp.maximum(qmax, 1.0)
  return jnp.where(m > 0, m * (1.0 / safe_q), 1.0).astype(jnp.float32)


def codes(w: jax.Array, rec: dict) -> tuple[jax.Array, jax.Array]:
  """(q, scale): signed grid codes (as float32) of the masked weights."""
  bits = rec['bits']
  qmax = jnp.where(bits > 0, 2.0 ** (bits - 1) - 1, 0.0)
  wm = jnp.where(rec['mask'], w, 0.0)
  scale = _scale(wm, qmax, rec['per_channel'])
  q = jnp.clip(jnp.round(wm * (1.0 / scale)), -qmax, qmax)
  return q, scale


def assignments(w: jax.Array, rec: dict) -> jax.Array:
  """The nearest of the first `clusters` codebook entries of every weight."""
  slots = jnp.arange(MAX_CLUSTERS)
  dist = jnp.abs(w[..., None] - rec['codebook'])
  dist = jnp.where(slots < rec['clusters'], dist, jnp.inf)
  return jnp.argmin(dist, axis=-1)


def _forward(w: jax.Array, rec: dict) -> jax.Array:
  q, scale = codes(w, rec)
  shared = rec['codebook'][assignments(w, rec)]
  value = jnp.where(rec['clusters'] > 0, shared,
                    jnp.where(rec['bits'] > 0, q * scale, w))
  return jnp.where(rec['mask'], value, 0.0).astype(w.dtype)


@jax.custom_vjp
def compress(w: jax.Array, rec: dict) -> jax.Array:
  """The tensor a setting (`rec`, the state's record) gives.

  The gradient is straight-through for the kept weights and 0 for the
  removed ones (every kept weight lies inside the absmax grid's range).
  """
  return _forward(w, rec)


def _compress_fwd(w, rec):
  return _forward(w, rec), rec


def _compress_bwd(rec, g):
  zeros = jax.tree.map(jnp.zeros_like, rec)
  return jnp.where(rec['mask'], g, 0.0).astype(g.dtype), zeros


compress.defvjp(_compress_fwd, _compress_bwd)
# The allocation evaluates hundreds of settings of the same few shapes: one
# compiled program per shape instead of op-by-op dispatch.
_compress_jit = jax.jit(compress)
_codes_jit = jax.jit(codes)
_assignments_jit = jax.jit(assignments)


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
  """Keeps the round((1 - sparsity) * n) largest |w| (ties: lower index)."""
  w = np.asarray(w)
  n = w.size
  keep = n - int(round(sparsity * n))
  order = np.argsort(-np.abs(w).reshape(-1), kind='stable')
  mask = np.zeros(n, bool)
  mask[order[:keep]] = True
  return mask.reshape(w.shape)


def state_record(w: np.ndarray, setting: Setting) -> dict:
  """The state record of a setting, from the float weights: the mask, and
  for a codebook the k-means centroids of the kept weights."""
  from compression import clustering  # pylint: disable=g-import-not-at-top
  w = np.asarray(w, np.float32)
  mask = magnitude_mask(w, setting.sparsity)
  book = np.zeros(MAX_CLUSTERS, np.float32)
  if setting.clusters:
    book[:setting.clusters], _ = clustering.kmeans_1d(
        w[mask], setting.clusters, 30)
  return {'mask': jnp.asarray(mask),
          'bits': jnp.asarray(setting.bits, jnp.float32),
          'per_channel': jnp.asarray(setting.per_channel),
          'codebook': jnp.asarray(book),
          'clusters': jnp.asarray(setting.clusters, jnp.int32),
          'sparsity': jnp.asarray(setting.sparsity, jnp.float32)}


def setting_of(rec: dict) -> Setting:
  """The Setting a state record holds (host values)."""
  mask = np.asarray(rec['mask'])
  return Setting(1.0 - float(mask.mean()) if mask.size else 0.0,
                 int(np.asarray(rec['bits'])),
                 bool(np.asarray(rec['per_channel'])),
                 int(np.asarray(rec['clusters'])))


def record(w: np.ndarray, rec: dict) -> records.Record | None:
  """What the artifact stores for one tensor (None: all kept, float32)."""
  from compression import clustering  # pylint: disable=g-import-not-at-top
  setting = setting_of(rec)
  mask = np.asarray(rec['mask'], bool)
  positions = None if mask.all() else records.positions_of_mask(mask)
  if setting.clusters:
    # Every element's index (a method's record); the accounting stores the
    # kept positions' only.
    index = np.asarray(jax.device_get(_assignments_jit(jnp.asarray(w), rec)))
    return records.Record(positions=positions, codebook=records.Codebook(
        index=index.astype(np.uint8),
        bits=clustering.index_bits(setting.clusters),
        codebook=np.asarray(rec['codebook'])[:setting.clusters]))
  if not setting.bits:
    return None if positions is None else records.Record(positions=positions)
  q, scale = jax.device_get(_codes_jit(jnp.asarray(w), rec))
  scale = np.asarray(scale, np.float32).reshape(-1)
  if not setting.per_channel or np.asarray(w).ndim < 2:
    scale = scale[:1]  # One step (broadcast to the channels in `apply`).
  qmax = 2 ** (setting.bits - 1) - 1
  return records.Record(positions=positions, codes=records.Codes(
      u=(np.asarray(q) + qmax).astype(np.uint8), bits=setting.bits,
      scale=scale))


def lloyd_step(w: jax.Array, rec: dict) -> dict:
  """One k-means step on the kept weights: each centroid moves to the mean
  of the weights nearest to it (an empty one stays)."""
  idx = assignments(w, rec)
  onehot = jax.nn.one_hot(idx, MAX_CLUSTERS, dtype=jnp.float32)
  onehot = onehot * rec['mask'][..., None]
  axes = tuple(range(w.ndim))
  counts = jnp.sum(onehot, axis=axes)
  sums = jnp.sum(onehot * w[..., None], axis=axes)
  book = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0),
                   rec['codebook'])
  return {**rec, 'codebook': jnp.where(rec['clusters'] > 0, book,
                                       rec['codebook'])}


def ramp_mask(w: jax.Array, sparsity: jax.Array, step: jax.Array,
              ramp_steps: int) -> jax.Array:
  """The magnitude mask of the ramp at `step` (jit-safe, exact count).

  The removed fraction follows Zhu & Gupta's cubic schedule,
  `s * (1 - (1 - t / T)^3)`, reaching the tensor's sparsity s at T.
  """
  t = jnp.minimum(step.astype(jnp.float32) / ramp_steps, 1.0)
  frac = sparsity * (1.0 - (1.0 - t) ** 3)
  n = w.size
  keep = n - jnp.round(frac * n).astype(jnp.int32)
  keep = jnp.where(t >= 1.0, n - jnp.round(sparsity * n).astype(jnp.int32),
                   keep)
  order = jnp.argsort(-jnp.abs(w).reshape(-1), stable=True)
  rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  return (rank < keep).reshape(w.shape)


def make(section: Any) -> Compressor:
  """The 'budget' method (settings start as float32, all kept).

  Args:
    section: `config.compression.budget`.

  Returns:
    A Compressor whose state holds one record per selected tensor:
    `mask`, `bits`, `per_channel`, `codebook` (MAX_CLUSTERS slots),
    `clusters` and `sparsity`. During training every codebook follows its
    weights by one k-means step per update, and with `ramp_steps` the masks
    follow the ramp (`ramp_mask`).
  """
  spec = parse(section)

  def init(params):
    items = []
    for keys in core.selected_keys(params, spec.regex, f'{_FIELD}.regex'):
      w = np.asarray(core.get_path(params, keys))
      items.append((keys, state_record(w, Setting())))
    return params, core.nest(items)

  def apply(params, state):
    out = params
    for keys, rec in core.tagged(state, 'mask'):
      out = core.set_path(out, keys, compress(core.get_path(params, keys),
                                              rec))
    return out

  def update(params, state, grads, step):
    del grads
    for keys, rec in list(core.tagged(state, 'mask')):
      w = core.get_path(params, keys)
      if spec.ramp_steps:
        due = (step <= spec.ramp_steps) & (step % spec.ramp_every == 0)
        rec = {**rec, 'mask': jnp.where(
            due, ramp_mask(w, rec['sparsity'], step, spec.ramp_steps),
            rec['mask'])}
      state = core.set_path(state, keys, lloyd_step(w, rec))
    return params, state

  def export(params, state):
    out = {}
    for keys, rec in core.tagged(state, 'mask'):
      r = record(np.asarray(core.get_path(params, keys)),
                 jax.device_get(rec))
      if r is not None:
        out['/'.join(keys)] = r
    return out

  return Compressor(init=init, apply=apply, update=update, export=export)


METHODS = {'budget': make}


# ----------------------------------------------------------------------------
# The allocation


class Candidate(NamedTuple):
  """One setting of one tensor and what it costs."""
  path: str
  setting: Setting
  bytes: int  # Exact payload at fixed-width coding.
  sensitivity: float  # Loss increase with only this tensor compressed.


def candidate_settings(spec: Any, shape: Sequence[int]) -> list[Setting]:
  """The settings a tensor of `shape` may take under `spec`.

  Kernels take one grid step per output channel or one per tensor (at a few
  hundred bytes, 4-byte per-channel steps can cost more than the codes);
  1-D leaves have one step and are never pruned.
  """
  kernel = len(shape) >= 2
  sparsities = spec.sparsities if ('prune' in spec.candidates
                                   and kernel) else (0.0,)
  out = []
  for s in sparsities:
    if 'float' in spec.candidates:
      out.append(Setting(s))
    if 'quantize' in spec.candidates:
      for b in spec.bits:
        out.append(Setting(s, b, True))
        if kernel:
          out.append(Setting(s, b, False))
    if 'kmeans' in spec.candidates:
      out.extend(Setting(s, clusters=k) for k in spec.clusters)
  if not any(c.bits or c.clusters or 'float' in spec.candidates
             for c in out):
    raise InputError(f'{_FIELD}.candidates: prune alone leaves no value '
                     'format; add float, quantize or kmeans')
  return out


def leaf_bytes(path: str, w: np.ndarray, rec: dict) -> int:
  """The exact fixed-width payload bytes of one tensor under one record."""
  r = record(w, rec)
  dense = np.asarray(jax.device_get(_compress_jit(jnp.asarray(w), rec)))
  tree = core.nest([(path, dense)])
  exports = {path: r} if r is not None else {}
  (leaf,) = accounting.plan(tree, [exports], ['budget'], 'fixed', check=False)
  return leaf.bytes('fixed')


_MEASURED: dict[str, list[list[Candidate]]] = {}


def _key(spec: Any, params: Any) -> str:
  import hashlib  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256(repr(spec._replace(width=0)).encode())
  for path, leaf in sorted(accounting.flatten(jax.device_get(params)).items()):
    h.update(path.encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


def measure(spec: Any, params: Any, state: Any,
            loss_fn: Callable[[Any], float]) -> list[list[Candidate]]:
  """Every selected tensor's candidates with their exact bytes and loss cost.

  A process measures the same parameters under the same options once (the
  width search measures the width the run then allocates).

  Args:
    spec: the parsed section.
    params: the float parameters.
    state: the method's state (which tensors are selected).
    loss_fn: dense parameters -> mean loss on the calibration batches.

  Returns:
    One list of Candidates per selected tensor, in path order.
  """
  key = _key(spec, params)
  if key in _MEASURED:
    return _MEASURED[key]
  base = float(loss_fn(params))
  out = []
  for keys, _ in core.tagged(state, 'mask'):
    path = '/'.join(keys)
    w = np.asarray(core.get_path(params, keys))
    row = []
    for setting in candidate_settings(spec, w.shape):
      rec = state_record(w, setting)
      loss = float(loss_fn(core.set_path(params, keys,
                                         _compress_jit(jnp.asarray(w), rec))))
      sens = loss - base if math.isfinite(loss) else math.inf
      row.append(Candidate(path, setting, leaf_bytes(path, w, rec), sens))
    out.append(row)
  _MEASURED[key] = out
  return out


def choose(cands: Sequence[Sequence[Candidate]], payload: int
           ) -> list[Candidate] | None:
  """The candidates (one per tensor) of least summed sensitivity within
  `payload` bytes, by exact dynamic programming; None when none fits.

  Sensitivities below zero (noise: the loss fell) count as zero, and among
  choices of equal cost the one with more bytes (finer settings) wins.
  """
  if payload < 0:
    return None
  size = payload + 1
  best = np.zeros(size)  # best[b]: least cost using at most b bytes.
  picks = []
  rows_desc = [sorted(row, key=lambda c: -c.bytes) for row in cands]
  for row in rows_desc:
    new = np.full(size, np.inf)
    pick = np.full(size, -1, np.int64)
    for i, c in enumerate(row):
      if c.bytes > payload:
        continue
      cost = max(c.sensitivity, 0.0)
      shifted = np.full(size, np.inf)
      shifted[c.bytes:] = best[:size - c.bytes] + cost
      better = shifted < new
      new = np.where(better, shifted, new)
      pick = np.where(better, i, pick)
    best = new
    picks.append(pick)
  if not np.isfinite(best[payload]):
    return None
  chosen, b = [], payload
  for row, pick in zip(reversed(rows_desc), reversed(picks)):
    c = row[int(pick[b])]
    chosen.append(c)
    b -= c.bytes
  return chosen[::-1]


def set_state(state: Any, params: Any, chosen: Sequence[Candidate]) -> Any:
  """The method state realizing a choice (masks from the float weights)."""
  for c in chosen:
    keys = tuple(c.path.split('/'))
    state = core.set_path(state, keys, state_record(
        np.asarray(core.get_path(params, keys)), c.setting))
  return state


def smallest(cands: Sequence[Sequence[Candidate]]) -> list[Candidate]:
  """The choice of fewest bytes."""
  return [min(row, key=lambda c: c.bytes) for row in cands]


def allocate(spec: Any, params: Any, state: Any,
             loss_fn: Callable[[Any], float],
             file_bytes: Callable[[Any], int], dense_bytes: int,
             log: Callable[[str], None] = print
             ) -> tuple[Any, list[Candidate], int]:
  """Chooses every tensor's setting so the artifact fits the budget.

  Args:
    spec: the parsed section.
    params: the trained float parameters.
    state: the method's initial state.
    loss_fn: dense parameters -> mean calibration loss.
    file_bytes: method state -> the size of the artifact it would write (the
      run's real header and the fixed-width payload).
    dense_bytes: the float32 model's size (for `ratio`).
    log: where progress lines go.

  Returns:
    (state, the chosen candidates, the budget in bytes).

  Raises:
    InputError: a budget below the smallest file the candidates allow (the
      message gives that size).
  """
  budget = spec.bytes if spec.bytes > 0 else int(dense_bytes / spec.ratio)
  cands = measure(spec, params, state, loss_fn)
  least_choice = smallest(cands)
  floor = sum(c.bytes for c in least_choice)
  least = file_bytes(set_state(state, params, least_choice))
  if budget < least:
    raise InputError(f'{_FIELD}: {budget} bytes is below the smallest file '
                     f'these candidates allow, {least} bytes (payload '
                     f'{floor}); raise the budget or add candidates')
  # The header: measured on the smallest plan, corrected after each solve.
  header = least - floor
  for _ in range(8):
    chosen = choose(cands, budget - header)
    if chosen is None:  # The header estimate grew past the slack.
      header -= 1
      continue
    new_state = set_state(state, params, chosen)
    size = file_bytes(new_state)
    if size <= budget:
      log(f'budget {budget} B: planned file {size} B')
      return new_state, chosen, budget
    header += size - budget
  # The smallest plan fits (checked above): fall back to it.
  return set_state(state, params, least_choice), least_choice, budget


def table(chosen: Sequence[Candidate]) -> str:
  """The allocation as a text table."""
  lines = [f"{'tensor':32s} {'setting':>30s} {'bytes':>6s} "
           f"{'sensitivity':>11s}"]
  for c in chosen:
    lines.append(f'{c.path:32s} {c.setting.label():>30s} {c.bytes:6d} '
                 f'{c.sensitivity:11.4f}')
  lines.append(f"{'payload':32s} {'':>30s} "
               f"{sum(c.bytes for c in chosen):6d}")
  return '\n'.join(lines)


def rows(chosen: Sequence[Candidate]) -> list[dict]:
  """The allocation for results.json."""
  return [{'tensor': c.path, 'setting': c.setting.label(),
           **c.setting._asdict(), 'bytes': c.bytes,
           'sensitivity': c.sensitivity} for c in chosen]


def lower(state: Any, chosen: list[Candidate]
          ) -> tuple[Any, list[Candidate]] | None:
  """One code bit less for the least sensitive tensor that has one to lose
  (a grid's width, or half a codebook), or None.

  The repair step when a written file would exceed the budget (the ramp's
  final masks may code their positions in a few more bytes than the
  allocation's): fewer code bits never grow a fixed-width payload.
  """
  order = sorted(range(len(chosen)), key=lambda i: chosen[i].sensitivity)
  for i in order:
    c = chosen[i]
    st = c.setting
    keys = tuple(c.path.split('/'))
    rec = dict(core.get_path(state, keys))
    if st.clusters > 2:
      st = st._replace(clusters=st.clusters // 2)
      rec['clusters'] = jnp.asarray(st.clusters, jnp.int32)
    elif st.bits > 2 and not st.clusters:
      st = st._replace(bits=st.bits - 1)
      rec['bits'] = jnp.asarray(st.bits, jnp.float32)
    else:
      continue
    chosen = list(chosen)
    chosen[i] = c._replace(setting=st)
    return core.set_path(state, keys, rec), chosen
  return None


# ----------------------------------------------------------------------------
# A run's allocation (train.py)

ALLOCATION_FILE = 'allocation.json'


def _names(config: Any) -> list[str]:
  from compression import api  # pylint: disable=g-import-not-at-top
  return api.method_names(config.compression)


def enabled(config: Any) -> bool:
  """Whether a run's chain has the budget method."""
  return 'budget' in _names(config)


def file_size_fn(config: Any, task: str, info: Any, compressor: Any,
                 params: Any, coding: str = 'fixed') -> Callable[[Any], int]:
  """Budget state -> bytes of the artifact the run would write with it."""
  from compression import export  # pylint: disable=g-import-not-at-top
  params = jax.device_get(params)

  def size(state: Any) -> int:
    comp_state = (state,)
    dense = jax.device_get(compressor.apply(params, comp_state))
    blob, _ = export.build(coding=coding, **export.run_contents(
        config, task, info, compressor, params, comp_state, dense))
    return len(blob)

  return size


def check_run(config: Any, task: str, info: Any, compressor: Any,
              params: Any, comp_state: Any, dense_bytes: int) -> None:
  """Input checks of a budget run, before anything trains.

  The method allocates every tensor itself, so it chains with no other; and
  the budget must admit the smallest file the candidates allow (measured on
  the freshly initialized parameters: the same shapes and encodings).

  Raises:
    InputError: one line for either.
  """
  names = _names(config)
  if names != ['budget']:
    raise InputError(f'compression.methods: budget chooses every tensor\'s '
                     f'setting itself; use it alone (got {",".join(names)})')
  spec = parse(config.compression.budget)
  if int(config.compression.calibration_batches) <= 0:
    raise InputError('compression.calibration_batches: the budget method '
                     'measures sensitivities on calibration batches; set it '
                     '> 0')
  budget = spec.bytes if spec.bytes > 0 else int(dense_bytes / spec.ratio)
  params = jax.device_get(params)
  state = comp_state[0]
  least = []
  for keys, _ in core.tagged(state, 'mask'):
    path = '/'.join(keys)
    w = np.asarray(core.get_path(params, keys))
    settings = candidate_settings(spec, w.shape)
    top = max(st.sparsity for st in settings)  # Fewest values: fewest bytes.
    least.append(min(
        (Candidate(path, st, leaf_bytes(path, w, state_record(w, st)), 0.0)
         for st in settings if st.sparsity == top),
        key=lambda c: c.bytes))
  size = file_size_fn(config, task, info, compressor, params)(
      set_state(state, params, least))
  if budget < size:
    what = (f'{budget} bytes' if spec.bytes > 0 else
            f'ratio {spec.ratio:g} ({budget} bytes)')
    raise InputError(f'{_FIELD}: {what} is below the smallest file these '
                     f'candidates allow, about {size} bytes; raise the budget '
                     'or add candidates (higher sparsities, fewer bits)')


def allocate_run(config: Any, task: str, info: Any, compressor: Any,
                 params: Any, comp_state: Any,
                 loss_fn: Callable[[Any], float], dense_bytes: int,
                 workdir: str, log: Callable[[str], None]) -> Any:
  """Allocates a run's budget; writes `<workdir>/allocation.json`.

  Returns:
    The chain state with the budget method's settings.
  """
  from compression import files  # pylint: disable=g-import-not-at-top
  spec = parse(config.compression.budget)
  params = jax.device_get(params)
  size = file_size_fn(config, task, info, compressor, params)
  state, chosen, budget = allocate(spec, params, comp_state[0], loss_fn,
                                   size, dense_bytes, log)
  log(table(chosen))
  files.atomic_write(os.path.join(workdir, ALLOCATION_FILE), json.dumps(
      {'budget_bytes': budget, 'allocation': rows(chosen)}, indent=1).encode())
  return (state,)


def fit_run(config: Any, task: str, info: Any, compressor: Any, params: Any,
            comp_state: Any, workdir: str, log: Callable[[str], None]
            ) -> tuple[Any, dict]:
  """Makes sure the artifact the run writes fits; its results.json fields.

  The file is written with Huffman codes where smaller, so it is at most the
  planned fixed-width size, save a few header bytes; should it exceed the
  budget, the least sensitive tensor loses one bit at a time until it fits.

  Returns:
    (chain state, {'budget_bytes', 'allocation', 'budget_repairs': bits
    removed to fit}).
  """
  with open(os.path.join(workdir, ALLOCATION_FILE)) as f:
    saved = json.load(f)
  budget = int(saved['budget_bytes'])
  chosen = [Candidate(r['tensor'], Setting(*(r[f] for f in Setting._fields)),
                      r['bytes'], r['sensitivity'])
            for r in saved['allocation']]
  size = file_size_fn(config, task, info, compressor, params, 'huffman')
  state = comp_state[0]
  repairs = 0
  while size(state) > budget:
    repairs += 1
    lowered = lower(state, chosen)
    if lowered is None:
      raise InputError(f'{_FIELD}: the file exceeds {budget} bytes and no '
                       'tensor can lose a bit')
    state, chosen = lowered
    log(f'file over {budget} B: one bit less for the least sensitive '
        'tensor that can lose one')
  return (state,), {'budget_bytes': budget, 'allocation': rows(chosen),
                    'budget_repairs': repairs}


# ----------------------------------------------------------------------------
# The hidden width


def width_of(config: Any) -> int:
  """The width a run cuts its source to (0: none)."""
  if not enabled(config):
    return 0
  return int(config.compression.budget.width)


def widths(spec: Any, hidden: int) -> list[int]:
  """The candidate widths of a `hidden`-unit source: itself and its shares."""
  return sorted({hidden} | {max(1, round(f * hidden)) for f in spec.widths},
                reverse=True)


def shrink_to(params: Any, cell: str, width: int) -> Any:
  """The parameters of the same model with `width` units per layer.

  Each recurrent layer keeps its `width` units of largest L2 norm over
  their weights (unit pruning's score: `compression.pruning`, magnitude,
  one shot), and the tree shrinks to them (`pruning.shrink`).

  Args:
    params: the float parameters (a nested dict).
    cell: 'gru' | 'lstm' | 'rnn'.
    width: units to keep, 1..hidden.

  Returns:
    The shrunk nested dict (numpy arrays).
  """
  from compression import pruning  # pylint: disable=g-import-not-at-top
  host = jax.tree.map(np.asarray, params)
  hidden = int(np.shape(host['rnn']['layer_0']['recurrent_kernel'])[0])
  if width >= hidden:
    return host
  comp = pruning.make(pruning.config(
      score='magnitude', granularity='unit', schedule='oneshot',
      sparsity=1.0 - width / hidden, begin_step=0, regex='rnn/.*_kernel'))
  p, state = comp.init(host)
  p, state = comp.update(p, state, jax.tree.map(np.zeros_like, p),
                         jnp.zeros((), jnp.int32))
  small, kept = pruning.shrink(jax.device_get(comp.apply(p, state)), cell)
  if kept != width:  # A kept unit whose weights are all zero: keep width.
    raise InputError(f'{_FIELD}.widths: shrinking to {width} units left '
                     f'{kept}; the source has units with all-zero weights')
  return jax.tree.map(np.asarray, small)
