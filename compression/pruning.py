"""Pruning: score, mask and schedule, with masks as pytrees of the parameters.

One method, `'prune'`, whose config section (see `config()`) chooses

* the score of a weight: `magnitude` |w|; `taylor`, the first-order
  sensitivity |w * dL/dw| as an exponential moving average over batches
  (`update` receives the gradients each step); `l1`, magnitude after an L1
  penalty `l1 * sum |w|` (returned by `penalty`) has pushed weights down;
* the granularity: `unstructured` (single weights); `block` (RxC tiles of a
  kernel, `block='1x4'`; a tile's score is the mean or L2 norm, `reduce`, of its
  members' scores; the shape must divide every selected kernel); `unit` (whole
  hidden units, the groups of Wen et al. 2018, "Learning Intrinsic Sparse
  Structures within LSTM", ICLR: unit k of layer i owns columns k + g*H, g =
  0..G-1, of the layer's input and recurrent kernels, the same bias entries
  and `recurrent_bias[k]`, row k of the recurrent kernel, and row k of what
  reads the layer: the next layer's input kernel, or the head's and the
  attention pooling's kernel). A group lasso `group_lasso * sum_units ||unit||_2`
  can push whole units to zero first;
* the allocation: `uniform` (every selected kernel, or every layer for units,
  reaches the target exactly) or `global` (one threshold over the scores of all
  selected kernels; unstructured and block only);
* the schedule: `oneshot` at `begin_step`, or `gradual` (Zhu and Gupta 2017,
  "To prune, or not to prune"): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))^3
  for t in [t0, t1] = [begin_step, end_step], masks recomputed every
  `frequency` steps and at t1.

Masks are recomputed inside the jitted train step (`lax.cond` on the schedule;
thresholds by ranking with a stable argsort, so exactly round(s * n) weights,
tiles or units are removed even with ties). A pruned group is ranked below
every live one, so pruning never revives anything. `apply` masks the weights
(`jnp.where`, so masked entries are exactly 0, also of a quantized kernel when
`prune` is listed before `quantize`: `chain` gives mask(quant(w))), and `update`
zeroes the masked master weights after every optimizer step, so Adam's momentum
cannot bring them back.

Unit pruning only zeroes weights; `shrink` then builds the parameters of a
physically smaller model (smaller `model.hidden`) with the same outputs. A
pruned unit's hidden state stays exactly 0 (its gate pre-activations are 0, so
RNN tanh(0) = 0, GRU (1 - 1/2) tanh(0) + h/2 with h = 0, LSTM c' = c/2 + 0 with
c = 0), so dropping it changes nothing. The model has one `hidden` for all
layers, so unit pruning removes the same number of units from every pruned
layer (`allocation` must be `uniform`) and `shrink` keeps the largest number of
live units of any layer in every layer (a layer with more dead units keeps a
few of them, still zero, still exact).

State (a plain dict, so orbax restores it as it saved it):

  `masks`     pytree mirroring the parameters: a bool array of the parameter's
              shape where the method masks it, a scalar True elsewhere.
  `scores`    taylor: the same structure with the float32 EMA of |w * g|
              (scalar 0 where unmasked); other scores: a scalar 0.
  `sparsity`  float32 scalar: the target of the last mask update.

Export (`export(params, state)`: `{path: entry}` for every masked parameter).
Each entry stores the kept positions (row-major order over the flattened
parameter) in whichever of two encodings takes fewer bytes, plus their values:

  `shape`    int32 array, the parameter's shape.
  `format`   'bitmap' or 'gaps'.
  `bitmap`   ('bitmap') uint8, `np.packbits` of the flattened bool mask
             (big-endian bit order, the last byte zero-padded): ceil(n/8)
             bytes.
  `gaps`     ('gaps') uint8 relative indices as in Deep Compression (Han et
             al. 2016): entry j is the distance from the previous stored
             position (the first from position -1), 1..255; a distance over
             255 is bridged by filler entries of 255 whose value is 0.0.
  `values`   float32, the value at every stored position in order (kept
             weights, and 0.0 for fillers).

`decode(entry)` rebuilds the masked dense float32 array exactly.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from compression import core
from compression import records
from compression.core import Compressor, path_str, select
from compression.errors import InputError

Params = Any
State = Any

SCORES = ('magnitude', 'taylor', 'l1')
GRANULARITIES = ('unstructured', 'block', 'unit')
ALLOCATIONS = ('uniform', 'global')
SCHEDULES = ('oneshot', 'gradual')
REDUCES = ('l2', 'mean')
# Gate blocks per cell (models/cells.py); kept here so the library does not
# import the models package.
GATES = {'rnn': 1, 'lstm': 4, 'gru': 3}
_FIELD = 'compression.prune'
_EPS = 1e-12  # Keeps the group-lasso gradient finite at an all-zero unit.


def _block(text: Any) -> tuple[int, int]:
  """'4x4' -> (4, 4) (an Option converter: ValueError for anything else)."""
  m = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', str(text))
  if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
    raise ValueError(f"{text!r} is not a tile shape like '1x4' or '4x4' "
                     '(positive integers)')
  return int(m.group(1)), int(m.group(2))


def _regex(text: str) -> str | None:
  try:
    re.compile(text)
  except re.error as e:
    return f'invalid regex {text!r} ({e})'
  return None


def _nonnegative(v: float) -> str | None:
  return None if v >= 0 else f'{v} must be >= 0'


def _step(low: int):
  return lambda v: None if v >= low else (
      f'must be an integer >= {low}, got {v!r}')


OPTIONS = core.Options(
    _FIELD,
    core.Option('score', 'magnitude', 'magnitude | taylor | l1.',
                core.one_of(*SCORES)),
    core.Option('granularity', 'unstructured', 'unstructured | block | unit.',
                core.one_of(*GRANULARITIES)),
    core.Option('block', '1x4', "Tile shape 'RxC' for granularity 'block'.",
                convert=_block),
    core.Option('reduce', 'l2', 'Score of a tile or unit from its members: '
                'l2 | mean.', core.one_of(*REDUCES)),
    core.Option('allocation', 'uniform', 'uniform (per kernel / layer) | '
                'global.', core.one_of(*ALLOCATIONS)),
    core.Option('schedule', 'gradual', 'oneshot (at begin_step) | gradual '
                '(Zhu & Gupta).', core.one_of(*SCHEDULES)),
    core.Option('sparsity', 0.8, 'Final fraction removed, in [0, 1).',
                core.in_range(0, 1, hi_open=True)),
    core.Option('initial_sparsity', 0.0, 'Gradual: s_i at begin_step, in '
                '[0, sparsity].', core.at_least(0)),
    core.Option('begin_step', 0, 'First mask update (the one-shot step).',
                _step(0)),
    core.Option('end_step', 1000, 'Gradual: step at which the final sparsity '
                'is reached.', _step(0)),
    core.Option('frequency', 10, 'Gradual: steps between mask updates (dt).',
                _step(1)),
    core.Option('taylor_decay', 0.9, "EMA decay of |w * g| for score 'taylor', "
                'in [0, 1).', core.in_range(0, 1, hi_open=True)),
    core.Option('l1', 0.0, 'L1 coefficient: penalty l1 * sum |w| over the '
                'selected kernels.', _nonnegative),
    core.Option('group_lasso', 0.0, "Group-lasso coefficient (granularity "
                "'unit'): group_lasso * sum of the units' group L2 norms.",
                _nonnegative),
    # The head is left out by default: it is ~4% of the GRU-64 classifier,
    # every weight feeds a logit directly, and its column count (classes)
    # rarely divides a tile shape.
    core.Option('regex', r'rnn/.*_kernel', "Which parameters are pruned "
                "('unit': which layers, by their kernels).", _regex),
)
config = OPTIONS.config
Settings = Any  # A parsed section: `OPTIONS.parse`'s NamedTuple.


def settings(cfg: Any) -> Settings:
  """Validates a `compression.prune` section (one InputError line if bad).

  Args:
    cfg: the section (see `config()`).

  Returns:
    The parsed options (`block` as a (rows, cols) tuple).
  """
  st = OPTIONS.parse(cfg)
  if not st.initial_sparsity <= st.sparsity:
    raise InputError(f'{_FIELD}.initial_sparsity: {st.initial_sparsity} '
                     f'outside [0, sparsity={st.sparsity}]')
  if st.schedule == 'gradual' and st.end_step <= st.begin_step:
    raise InputError(f'{_FIELD}.end_step: {st.end_step} must be > '
                     f'begin_step={st.begin_step} for the gradual schedule')
  if st.score == 'l1' and st.l1 == 0:
    raise InputError(f"{_FIELD}.l1: score 'l1' needs an L1 coefficient > 0")
  if st.group_lasso > 0 and st.granularity != 'unit':
    raise InputError(f'{_FIELD}.group_lasso: needs granularity \'unit\' '
                     f'(got {st.granularity!r}); set it to 0 otherwise')
  if st.granularity == 'unit' and st.allocation == 'global':
    raise InputError(f"{_FIELD}.allocation: 'global' is not supported with "
                     "granularity 'unit' (the model has one hidden size, so "
                     "every layer loses the same number of units); use "
                     "'uniform'")
  return st


# ----------------------------------------------------------------------------
# Schedule


def target_sparsity(st: Settings, step: jax.Array) -> jax.Array:
  """The sparsity the schedule asks for at `step` (0 before begin_step).

  Args:
    st: the settings.
    step: the train step (int, traced or not).

  Returns:
    float32 scalar.
  """
  t = jnp.asarray(step, jnp.float32)
  if st.schedule == 'oneshot':
    return jnp.where(t >= st.begin_step, st.sparsity, 0.0).astype(jnp.float32)
  frac = jnp.clip((t - st.begin_step) / (st.end_step - st.begin_step), 0.0,
                  1.0)
  s = st.sparsity + (st.initial_sparsity - st.sparsity) * (1.0 - frac) ** 3
  return jnp.where(t >= st.begin_step, s, 0.0).astype(jnp.float32)


def is_update_step(st: Settings, step: jax.Array) -> jax.Array:
  """Whether the masks are recomputed at `step` (bool scalar)."""
  t = jnp.asarray(step, jnp.int32)
  if st.schedule == 'oneshot':
    return t == st.begin_step
  inside = (t >= st.begin_step) & (t <= st.end_step)
  return inside & (((t - st.begin_step) % st.frequency == 0)
                   | (t == st.end_step))


# ----------------------------------------------------------------------------
# Which parameters, and the unit groups


@dataclasses.dataclass(frozen=True)
class Layer:
  """Paths of one recurrent layer and what reads its output."""
  index: int
  hidden: int
  gates: int
  input_kernel: str
  recurrent_kernel: str
  bias: str
  recurrent_bias: str | None
  consumers: tuple[str, ...]  # Kernels whose rows are this layer's units.
  pruned: bool


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static facts about a parameter tree, derived from its paths and shapes."""
  paths: tuple[str, ...]
  treedef: Any
  kernels: tuple[str, ...]  # Regex-selected (unstructured / block).
  layers: tuple[Layer, ...]  # Unit granularity only.
  targets: tuple[str, ...]  # Every path with a real mask.


def _flatten(tree: Params) -> tuple[dict[str, Any], Any, tuple[str, ...]]:
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths = tuple(path_str(p) for p, _ in leaves)
  return dict(zip(paths, (v for _, v in leaves))), treedef, paths


def _unflatten(plan: Plan, flat: dict[str, Any]) -> Params:
  return jax.tree_util.tree_unflatten(plan.treedef,
                                      [flat[p] for p in plan.paths])


def find_layers(flat: dict[str, Any], pattern: str | None = None
                ) -> tuple[Layer, ...]:
  """The recurrent layers of a model's flat parameter dict.

  Args:
    flat: {path: array} with the paths of models/__init__.py.
    pattern: a layer is `pruned` when this regex fully matches its input or
      recurrent kernel path; None marks every layer pruned.

  Returns:
    One Layer per `rnn/layer_{i}`, in order.
  """
  regex = re.compile(pattern) if pattern is not None else None
  count = 0
  while f'rnn/layer_{count}/recurrent_kernel' in flat:
    count += 1
  layers = []
  for i in range(count):
    pre = f'rnn/layer_{i}/'
    hidden, width = np.shape(flat[pre + 'recurrent_kernel'])
    gates = width // hidden
    if i + 1 < count:
      consumers = (f'rnn/layer_{i + 1}/input_kernel',)
    else:
      consumers = tuple(p for p in ('head/kernel', 'attention/kernel')
                        if p in flat and np.shape(flat[p])[0] == hidden)
    names = (pre + 'input_kernel', pre + 'recurrent_kernel')
    pruned = regex is None or any(regex.fullmatch(n) for n in names)
    rbias = pre + 'recurrent_bias'
    layers.append(Layer(i, hidden, gates, names[0], names[1], pre + 'bias',
                        rbias if rbias in flat else None, consumers, pruned))
  return tuple(layers)


def _unit_members(layer: Layer) -> tuple[str, ...]:
  members = [layer.input_kernel, layer.recurrent_kernel, layer.bias]
  if layer.recurrent_bias:
    members.append(layer.recurrent_bias)
  return tuple(members) + layer.consumers


def make_plan(params: Params, st: Settings) -> Plan:
  """The static Plan of `params` under settings `st` (validates shapes).

  Args:
    params: the parameter tree the method sees.
    st: the settings.

  Returns:
    The Plan.

  Raises:
    InputError: the regex matches nothing, a tile shape does not divide a
      kernel, or unit pruning finds no recurrent layer.
  """
  chosen = select(params, st.regex, field=f'{_FIELD}.regex')
  flat, treedef, paths = _flatten(params)
  picked = dict(zip(paths, jax.tree_util.tree_leaves(chosen)))
  kernels = tuple(p for p in paths if picked[p])
  layers: tuple[Layer, ...] = ()
  if st.granularity == 'unit':
    layers = tuple(l for l in find_layers(flat, st.regex) if l.pruned)
    if not layers:
      raise InputError(f'{_FIELD}.regex: {st.regex!r} selects no recurrent '
                       "layer's input_kernel or recurrent_kernel, which "
                       "granularity 'unit' needs")
    targets = sorted({m for l in layers for m in _unit_members(l)},
                     key=paths.index)
    kernels = ()
  else:
    targets = list(kernels)
  if st.granularity == 'block':
    br, bc = st.block
    for p in kernels:
      shape = np.shape(flat[p])
      if len(shape) != 2 or shape[0] % br or shape[1] % bc:
        raise InputError(f'{_FIELD}.block: {br}x{bc} does not divide {p} of '
                         f'shape {shape}; choose a tile that divides every '
                         'kernel the regex selects')
  return Plan(paths, treedef, kernels, layers, tuple(targets))


# ----------------------------------------------------------------------------
# Scores and masks


def _unit_sums(v: dict[str, jax.Array], layer: Layer) -> jax.Array:
  """Sum over each unit's group members of `v` (H,), each entry counted once."""
  g, h = layer.gates, layer.hidden
  ik = v[layer.input_kernel]
  rk = v[layer.recurrent_kernel].reshape(h, g, h)
  total = ik.reshape(ik.shape[0], g, h).sum((0, 1))
  total += rk.sum((0, 1)) + rk.sum((1, 2))
  # Entry (k, g, k) is both in unit k's columns and its row.
  total -= jnp.diagonal(rk, axis1=0, axis2=2).sum(0)
  total += v[layer.bias].reshape(g, h).sum(0)
  if layer.recurrent_bias:
    total += v[layer.recurrent_bias]
  for c in layer.consumers:
    total += v[c].sum(1)
  return total


def _unit_masks(layers: tuple[Layer, ...], keeps: list[jax.Array],
                shapes: dict[str, tuple[int, ...]]) -> dict[str, jax.Array]:
  """Element masks of every unit-group member from per-layer keep vectors."""
  masks = {}

  def put(path, m):
    m = jnp.broadcast_to(m, shapes[path])
    masks[path] = masks[path] & m if path in masks else m

  for layer, keep in zip(layers, keeps):
    cols = jnp.tile(keep, layer.gates)
    put(layer.input_kernel, cols[None, :])
    put(layer.recurrent_kernel, keep[:, None] & cols[None, :])
    put(layer.bias, cols)
    if layer.recurrent_bias:
      put(layer.recurrent_bias, keep)
    for c in layer.consumers:
      put(c, keep[:, None])
  return masks


def _reduce(st: Settings, total: jax.Array, total_sq: jax.Array,
            count: jax.Array) -> jax.Array:
  return jnp.sqrt(total_sq) if st.reduce == 'l2' else total / count


def _tiles(x: jax.Array, block: tuple[int, int]) -> jax.Array:
  br, bc = block
  r, c = x.shape
  return x.reshape(r // br, br, c // bc, bc)


def _keep_lowest_out(scores: jax.Array, k: jax.Array) -> jax.Array:
  """Bool keep mask of a 1-D score vector: all but the k lowest (stable)."""
  rank = jnp.argsort(jnp.argsort(scores, stable=True), stable=True)
  return rank >= k


def _count(s: jax.Array, n: int) -> jax.Array:
  return jnp.round(s * n).astype(jnp.int32)


def compute_masks(plan: Plan, st: Settings, params: Params, scores: Params,
                  masks: Params, sparsity: jax.Array) -> Params:
  """New masks at `sparsity`, given element scores and the current masks.

  Args:
    plan: the static plan.
    st: the settings.
    params: current parameters (magnitude and l1 scores).
    scores: the taylor EMA tree (ignored for other scores).
    masks: the current masks; what they prune ranks below everything alive.
    sparsity: float32 scalar target.

  Returns:
    The new mask tree.
  """
  flat = _flatten(params)[0]
  old = _flatten(masks)[0]
  if st.score == 'taylor':
    elem = {p: _flatten(scores)[0][p] for p in plan.targets}
  else:
    elem = {p: jnp.abs(flat[p]).astype(jnp.float32) for p in plan.targets}

  # Group scores per allocation unit, and which groups are pruned already.
  groups, dead = [], []
  if st.granularity == 'unstructured':
    for p in plan.kernels:
      groups.append(elem[p].reshape(-1))
      dead.append(~old[p].reshape(-1))
  elif st.granularity == 'block':
    for p in plan.kernels:
      t = _tiles(elem[p], st.block)
      n = st.block[0] * st.block[1]
      groups.append(_reduce(st, t.sum((1, 3)), (t * t).sum((1, 3)), n
                            ).reshape(-1))
      dead.append(~_tiles(old[p], st.block).any((1, 3)).reshape(-1))
  else:
    sq = {p: e * e for p, e in elem.items()}
    ones = {p: jnp.ones_like(e) for p, e in elem.items()}
    for layer in plan.layers:
      groups.append(_reduce(st, _unit_sums(elem, layer), _unit_sums(sq, layer),
                            _unit_sums(ones, layer)))
      dead.append(~old[layer.bias][:layer.hidden])
  groups = [jnp.where(d, -1.0, g) for g, d in zip(groups, dead)]

  if st.allocation == 'global':
    allg = jnp.concatenate(groups)
    keep_all = _keep_lowest_out(allg, _count(sparsity, allg.size))
    keeps, start = [], 0
    for g in groups:
      keeps.append(keep_all[start:start + g.size])
      start += g.size
  else:
    keeps = [_keep_lowest_out(g, _count(sparsity, g.size)) for g in groups]

  new = dict(old)
  if st.granularity == 'unstructured':
    for p, k in zip(plan.kernels, keeps):
      new[p] = k.reshape(flat[p].shape)
  elif st.granularity == 'block':
    br, bc = st.block
    for p, k in zip(plan.kernels, keeps):
      r, c = flat[p].shape
      k = k.reshape(r // br, 1, c // bc, 1)
      new[p] = jnp.broadcast_to(k, (r // br, br, c // bc, bc)).reshape(r, c)
  else:
    shapes = {p: flat[p].shape for p in plan.targets}
    new.update(_unit_masks(plan.layers, keeps, shapes))
  return _unflatten(plan, new)


def _mask_tree(plan: Plan, params: Params) -> Params:
  flat = _flatten(params)[0]
  return _unflatten(plan, {
      p: (jnp.ones(np.shape(flat[p]), bool) if p in plan.targets
          else jnp.ones((), bool)) for p in plan.paths})


def _split(params: Params, masks: Params) -> tuple[Params, Params]:
  """(the top-level entries the masks cover, every other entry)."""
  own = {k: v for k, v in params.items() if k in masks}
  return own, {k: v for k, v in params.items() if k not in masks}


def apply_masks(params: Params, masks: Params) -> Params:
  """Masked parameters: exactly 0 where a mask is False.

  Args:
    params: the parameter tree.
    masks: the mask tree (scalar True leaves leave a parameter untouched).

  Returns:
    The masked tree.
  """
  def one(w, m):
    if np.ndim(m) == 0:
      return w
    return jnp.where(m, w, jnp.zeros((), w.dtype))
  return jax.tree_util.tree_map(one, params, masks)


def group_lasso_value(plan: Plan, params: Params) -> jax.Array:
  """Sum over pruned layers' units of the L2 norm of the unit's group."""
  flat = _flatten(params)[0]
  sq = {p: jnp.square(flat[p].astype(jnp.float32)) for p in plan.targets}
  return sum((jnp.sqrt(_unit_sums(sq, l) + _EPS).sum() for l in plan.layers),
             jnp.zeros((), jnp.float32))


# ----------------------------------------------------------------------------
# The Compressor


def make(cfg: Any) -> Compressor:
  """The 'prune' method from its config section.

  Args:
    cfg: the `compression.prune` section (see `config()`).

  Returns:
    A Compressor whose state is {'masks', 'scores', 'sparsity'}.

  Raises:
    InputError: a bad value (checked here and, against the shapes, in init).
  """
  st = settings(cfg)

  def init(params):
    plan = make_plan(params, st)
    masks = _mask_tree(plan, params)
    if st.score == 'taylor':
      flat = _flatten(params)[0]
      scores = _unflatten(plan, {
          p: (jnp.zeros(np.shape(flat[p]), jnp.float32) if p in plan.targets
              else jnp.zeros((), jnp.float32)) for p in plan.paths})
    else:
      scores = jnp.zeros((), jnp.float32)
    sparsity = jnp.zeros((), jnp.float32)
    # Scores that need no gradient prune at init when step 0 is an update
    # step, so post-training pruning (train.steps = 0) works too; `update` at
    # step 0 then recomputes the same masks.
    if st.score != 'taylor' and bool(is_update_step(st, 0)):
      sparsity = target_sparsity(st, 0)
      masks = compute_masks(plan, st, params, scores, masks, sparsity)
    return params, {'masks': masks, 'scores': scores, 'sparsity': sparsity}

  def apply(params, state):
    own, extra = _split(params, state['masks'])
    return {**apply_masks(own, state['masks']), **extra}

  def update(params, state, grads, step):
    # Later methods of a chain may add top-level entries (quantize's learned
    # step sizes); pruning acts on the tree it saw at init and passes the
    # rest through.
    params, extra = _split(params, state['masks'])
    grads = _split(grads, state['masks'])[0]
    params, state = _update(params, state, grads, step)
    return {**params, **extra}, state

  def _update(params, state, grads, step):
    plan = make_plan(params, st)
    scores = state['scores']
    if st.score == 'taylor':
      def ema(acc, w, g):
        if np.ndim(acc) == 0:
          return acc
        return (st.taylor_decay * acc + (1.0 - st.taylor_decay)
                * jnp.abs(w * g).astype(jnp.float32))
      scores = jax.tree_util.tree_map(ema, scores, params, grads)
    s = target_sparsity(st, step)
    do = is_update_step(st, step)
    masks = jax.lax.cond(
        do, lambda: compute_masks(plan, st, params, scores, state['masks'], s),
        lambda: state['masks'])
    params = apply_masks(params, masks)
    sparsity = jnp.where(do, s, state['sparsity'])
    return params, {'masks': masks, 'scores': scores, 'sparsity': sparsity}

  def penalty(params, state):
    del state
    total = jnp.zeros((), jnp.float32)
    if st.l1 == 0 and st.group_lasso == 0:
      return total
    plan = make_plan(params, st)
    flat = _flatten(params)[0]
    if st.l1:
      l1_paths = plan.kernels or tuple(
          p for l in plan.layers for p in (l.input_kernel, l.recurrent_kernel))
      total += st.l1 * sum(jnp.abs(flat[p]).sum() for p in l1_paths)
    if st.group_lasso:
      total += st.group_lasso * group_lasso_value(plan, params)
    return total

  def export(params, state):
    plan = make_plan(params, st)
    flat = _flatten(params)[0]
    masks = _flatten(state['masks'])[0]
    del flat
    return {p: records.Record(
        positions=records.positions_of_mask(np.asarray(masks[p])))
            for p in plan.targets}

  return Compressor(init, apply, update, penalty, export)


METHODS = {'prune': make}


# ----------------------------------------------------------------------------
# Structured shrink


def _selections(flat: dict[str, Any], cell: str, atol: float
                ) -> tuple[dict[str, tuple[np.ndarray | None, ...]], int]:
  """Which rows and columns of every leaf the shrunk model keeps.

  Returns:
    ({path: (rows or None, cols or None)} for the leaves that shrink (1-D
    leaves: (entries,)), kept_hidden).
  """
  if cell not in GATES:
    raise InputError(f'model.cell: unknown cell {cell!r}; valid: '
                     + ', '.join(GATES))
  layers = find_layers(flat)
  if not layers or any(l.gates != GATES[cell] for l in layers):
    raise InputError(f'shrink: the parameters hold no {cell} layers '
                     f'(rnn/layer_i/recurrent_kernel of shape (H, '
                     f'{GATES[cell]}*H))')
  alive = []
  for layer in layers:
    v = {p: (np.abs(np.asarray(flat[p])) > atol).astype(np.float32)
         for p in _unit_members(layer)}
    alive.append(np.asarray(_unit_sums(v, layer)) > 0)
  kept = max(1, max(int(a.sum()) for a in alive))
  index = []
  for a in alive:
    # Live units first (in order), then dead ones to fill up to `kept`.
    order = np.concatenate([np.flatnonzero(a), np.flatnonzero(~a)])
    index.append(np.sort(order[:kept]))
  take: dict[str, tuple[np.ndarray | None, ...]] = {}
  for layer, idx in zip(layers, index):
    cols = np.concatenate([idx + g * layer.hidden for g in range(layer.gates)])
    take[layer.input_kernel] = (index[layer.index - 1] if layer.index > 0
                                else None, cols)
    take[layer.recurrent_kernel] = (idx, cols)
    take[layer.bias] = (cols,)
    if layer.recurrent_bias:
      take[layer.recurrent_bias] = (idx,)
    if layer.index == len(layers) - 1:
      for c in layer.consumers:
        take[c] = (idx, None)
  return take, kept


def _take(x: np.ndarray, sel: tuple[np.ndarray | None, ...]) -> np.ndarray:
  x = np.asarray(x)
  if len(sel) == 1:
    return x[sel[0]]
  rows, cols = sel
  if rows is not None:
    x = x[rows]
  return x if cols is None else x[:, cols]


def _take_record(rec: Any, sel: tuple[np.ndarray | None, ...],
                 shape: tuple[int, ...], path: str) -> Any:
  """A method's record of one leaf, cut like the leaf (codes of every
  element, per-channel scales and zero points by the kept columns)."""
  if rec.positions is not None or rec.transform is not None or rec.ref:
    raise InputError(f'shrink: {path} stores positions, a transform or a '
                     'shared factor, which the unit shrink cannot cut; '
                     'chain unit pruning with quantize or kmeans only')
  out = rec
  if rec.codes is not None:
    c = rec.codes

    def pick(v):  # A per-channel vector follows the kept columns.
      v = np.asarray(v).reshape(-1)
      return v if v.size == 1 or sel[-1] is None else v[sel[-1]]

    out = dataclasses.replace(out, codes=dataclasses.replace(
        c, u=_take(np.asarray(c.u).reshape(shape), sel), scale=pick(c.scale),
        zero_point=None if c.zero_point is None else pick(c.zero_point)))
  if rec.codebook is not None:
    b = rec.codebook
    out = dataclasses.replace(out, codebook=dataclasses.replace(
        b, index=_take(np.asarray(b.index).reshape(shape), sel)))
  return out


def shrink(dense_params: Params, cell: str, atol: float = 0.0,
           exports: Any = None) -> Any:
  """Parameters of a physically smaller model without the dead units.

  A unit is dead when every member of its group (see the module docstring) is
  at most `atol` in magnitude (exactly zero by default, as unit pruning
  leaves it). Every layer keeps the same number of units, the largest count of
  live units of any layer (the model has one `hidden`), filling with dead
  units, which stay zero and change nothing.

  Args:
    dense_params: the masked dense parameters (`compressor.apply` output).
    cell: 'gru', 'lstm' or 'rnn' (fixes the number of gate blocks).
    atol: magnitude at or below which a weight counts as zero.
    exports: optionally, other methods' records of the dense leaves (one
      `{path: Record}` dict per method, as `accounting.plan` takes them):
      cut the same way (integer codes, per-channel scales, codebook indices),
      so a unit-pruned and quantized model is stored as the small one.

  Returns:
    (small_params, kept_hidden), or with `exports` (small_params,
    kept_hidden, small_exports): a tree for `models.make` with
    `model.hidden = kept_hidden`, whose outputs equal the masked model's.

  Raises:
    InputError: unknown cell, the tree has no recurrent layers of that cell,
      or a record the cut cannot follow (positions, transforms, factors).
  """
  host = jax.tree_util.tree_map(np.asarray, dense_params)
  flat, treedef, paths = _flatten(host)
  take, kept = _selections(flat, cell, atol)
  out = {p: (_take(v, take[p]) if p in take else v) for p, v in flat.items()}
  small = jax.tree_util.tree_unflatten(treedef, [out[p] for p in paths])
  if exports is None:
    return small, kept
  cut = []
  for entries in ([exports] if isinstance(exports, dict) else exports):
    cut.append({p: (_take_record(r, take[p], np.shape(flat[p]), p)
                    if p in take else r) for p, r in entries.items()})
  return small, kept, cut


def report(cfg: Any, state: Any, dense_params: Params, model_cfg: Any
           ) -> dict[str, Any]:
  """Fields for results.json: the achieved sparsity, and for unit pruning
  the hidden size and size of the physically shrunk model.

  Args:
    cfg: the `config.compression.prune` section.
    state: this method's state after training.
    dense_params: the dense (masked) parameters.
    model_cfg: `config.model`.

  Returns:
    A flat dict of JSON-serializable values.
  """
  out = {'prune_sparsity': float(state['sparsity'])}
  if cfg.granularity == 'unit':
    small, kept = shrink(dense_params, model_cfg.cell)
    total = int(sum(np.size(x) for x in jax.tree.leaves(small)))
    out.update(kept_hidden=int(kept), shrunk_params_total=total,
               shrunk_dense_bytes=4 * total)
  return out
