"""The Compressor interface, `chain`, and regex selection of parameters.

A compression method is a `Compressor`: a NamedTuple of pure functions, in the
spirit of `optax.GradientTransformation`.

* `init(params) -> (params, state)` may re-parameterize the trainable tree
  (factors, coefficients, codebooks) and builds the method's state (masks,
  scales, step counters).
* `apply(params, state) -> dense_params` is the dense view the model runs with;
  fake-quant and masks act here with straight-through gradients, so the
  trainable values keep learning.
* `update(params, state, grads, step) -> (params, state)` runs schedules
  (gradual pruning, mask recomputation) inside the jitted train step.
* `penalty(params, state) -> scalar` is an extra loss term (L1, group lasso);
  zero for most methods.
* `export(params, state) -> {path: records.Record}` says what the artifact
  stores for each dense leaf the method shapes (positions, codes, codebook,
  transform; see `compression.records`); `compression.accounting` turns
  records into bytes.
* `calibrate(params, state, loss_fn) -> state` (optional) tunes the state
  without training, e.g. post-training quantization choosing clipping ranges.
  `params` is the tree the method's `apply` receives; `loss_fn(out)` maps the
  method's `apply` output to the mean loss over the calibration batches
  (`config.compression.calibration_batches`), through the rest of the chain.

Parameters are selected by a regex over '/'-joined paths such as
`layer_0/recurrent_kernel`; `select` reports a regex that matches nothing as
an error, so a typo never silently compresses nothing.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from compression import checks
# Re-exported: methods declare their options with core.Option and these.
from compression.checks import at_least, in_range, one_of  # noqa: F401
from compression.errors import InputError

Params = Any  # A nested dict of arrays (a Flax 'params' collection).
State = Any  # A method's state pytree.


def no_update(params: Params, state: State, grads: Params, step: jax.Array
              ) -> tuple[Params, State]:
  """The default `update`: no schedule, nothing changes."""
  del grads, step
  return params, state


def no_penalty(params: Params, state: State) -> jax.Array:
  """The default `penalty`: zero."""
  del params, state
  return jnp.zeros((), jnp.float32)


def no_export(params: Params, state: State) -> dict:
  """The default `export`: no records (the leaves are stored as float32)."""
  del params, state
  return {}


def no_calibration(params: Params, state: State,
                   loss_fn: Callable[[Params], jax.Array]) -> State:
  """The default `calibrate`: the state is kept."""
  del params, loss_fn
  return state


class Compressor(NamedTuple):
  """A compression method as pure functions over parameter pytrees.

  Only `init` and `apply` are required; the others default to no schedule,
  no penalty, no records and no calibration.
  """
  init: Callable[[Params], tuple[Params, State]]
  apply: Callable[[Params, State], Params]
  update: Callable[[Params, State, Params, jax.Array],
                   tuple[Params, State]] = no_update
  penalty: Callable[[Params, State], jax.Array] = no_penalty
  export: Callable[[Params, State], Any] = no_export
  calibrate: Callable[[Params, State, Callable[[Params], jax.Array]],
                      State] = no_calibration


def identity() -> Compressor:
  """The method that changes nothing (an empty chain)."""
  return Compressor(init=lambda params: (params, ()),
                    apply=lambda params, state: params)


def chain(*methods: Compressor) -> Compressor:
  """Composes methods in order, like `optax.chain`.

  `init` runs first to last, each method seeing the tree the previous one
  produced (so a method listed after low-rank factorization sees the factors).
  `apply` unwinds last to first, so every method maps its own representation
  back to the one the method before it expects, ending at dense parameters.

  Args:
    *methods: the Compressors to compose.

  Returns:
    One Compressor whose state is the tuple of the methods' states.
  """
  if not methods:
    return identity()

  def init(params):
    states = []
    for m in methods:
      params, s = m.init(params)
      states.append(s)
    return params, tuple(states)

  def apply(params, state):
    for m, s in reversed(list(zip(methods, state))):
      params = m.apply(params, s)
    return params

  def update(params, state, grads, step):
    new_states = []
    for m, s in zip(methods, state):
      params, s = m.update(params, s, grads, step)
      new_states.append(s)
    return params, tuple(new_states)

  def penalty(params, state):
    return sum((m.penalty(params, s) for m, s in zip(methods, state)),
               jnp.zeros((), jnp.float32))

  def export(params, state):
    # Each method describes the tree it receives in `apply` (the later
    # methods already applied), so its records match what it computes.
    return tuple(m.export(_after(methods, state, i, params), s)
                 for i, (m, s) in enumerate(zip(methods, state)))

  def calibrate(params, state, loss_fn):
    # Each method calibrates with the later methods' state fixed; the loss it
    # sees is that of the whole chain.
    state = list(state)
    for i, m in enumerate(methods):

      def chained_loss(dense_of_method, i=i):
        # `dense_of_method` is method i's output; unwind the earlier methods.
        out = dense_of_method
        for j in reversed(range(i)):
          out = methods[j].apply(out, state[j])
        return loss_fn(out)

      state[i] = m.calibrate(_after(methods, state, i, params), state[i],
                             chained_loss)
    return tuple(state)

  return Compressor(init, apply, update, penalty, export, calibrate)


def _after(methods, state, i, params):
  """The tree method i receives in `apply`: params unwound by methods > i."""
  for j in reversed(range(i + 1, len(methods))):
    params = methods[j].apply(params, state[j])
  return params


def path_str(path: tuple[Any, ...]) -> str:
  """Joins a pytree key path into 'layer_0/input_kernel' form."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(k.name)
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    else:
      parts.append(str(k))
  return '/'.join(parts)


def param_paths(params: Params) -> list[str]:
  """Every leaf's '/'-joined path, in tree order."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return [path_str(p) for p, _ in leaves]


def select(params: Params, pattern: str, field: str = 'regex') -> Params:
  """A pytree of bools: True where the leaf's full path matches `pattern`.

  Args:
    params: the parameter tree.
    pattern: a regex matched against the whole '/'-joined path (re.fullmatch).
    field: the config field named in the error message.

  Returns:
    A tree with the structure of `params` and Python bool leaves.

  Raises:
    InputError: the regex is invalid or matches no parameter.
  """
  try:
    compiled = re.compile(pattern)
  except re.error as e:
    raise InputError(f'{field}: invalid regex {pattern!r} ({e})') from None
  chosen = jax.tree_util.tree_map_with_path(
      lambda p, _: compiled.fullmatch(path_str(p)) is not None, params)
  if not any(jax.tree_util.tree_leaves(chosen)):
    raise InputError(
        f'{field}: {pattern!r} matches no parameter; paths are: '
        + ', '.join(param_paths(params)))
  return chosen


class Option(NamedTuple):
  """One option of a method's config section, declared once.

  `Options` derives from these the section (`config()`), its validation
  (`parse`) and the README's option table (`table`).

  Attributes:
    name: the key (`compression.<method>.<name>`).
    default: the default value; its type is the option's type (an int is
      accepted where the default is a float).
    doc: one line for the README's option table.
    check: `value -> error text or None` (e.g. `one_of`, `in_range`).
    convert: `value -> the parsed value` (e.g. '1x4' -> (1, 4)); it raises
      ValueError with the error text for a bad value.
  """
  name: str
  default: Any
  doc: str
  check: Callable[[Any], str | None] | None = None
  convert: Callable[[Any], Any] | None = None


class Options:
  """A method's options: its config section, validation and README table.

  Example:
    >>> OPTIONS = Options('compression.mine',
    ...                   Option('bits', 8, 'Bits per code.', in_range(2, 8)))
    >>> OPTIONS.parse(OPTIONS.config(bits=4)).bits
    4
  """

  def __init__(self, field: str, *options: Option):
    self.field = field
    self.options = options
    self._parsed = collections.namedtuple(
        'Parsed', [o.name for o in options])

  def config(self, **overrides: Any) -> Any:
    """The section with every option at its default, `overrides` applied.

    Raises:
      InputError: an override key that is not an option.
    """
    import ml_collections  # pylint: disable=g-import-not-at-top
    c = ml_collections.ConfigDict()
    for o in self.options:
      c[o.name] = o.default
    return section(self.field, c, overrides)

  def parse(self, cfg: Any) -> Any:
    """The validated options of a section: a NamedTuple with one field each.

    Raises:
      InputError: a missing option, or a value of the wrong type or out of
        range (one line naming `field.option`).
    """
    values = []
    for o in self.options:
      v = field(cfg, o.name, self.field)
      why = checks.type_error(v, o.default) or (o.check(v) if o.check else None)
      if why is None and o.convert is not None:
        try:
          v = o.convert(v)
        except ValueError as e:
          why = str(e)
      if why is not None:
        raise InputError(f'{self.field}.{o.name}: {why}')
      values.append(float(v) if isinstance(o.default, float) else v)
    return self._parsed(*values)

  def table(self) -> str:
    """The README's option table (markdown) of this section."""
    cell = lambda text: text.replace('|', '\\|')  # Markdown table cells.
    rows = [f'| `{self.field}.{o.name}` | `{cell(repr(o.default))}` | '
            f'{cell(o.doc)} |' for o in self.options]
    return '\n'.join(['| option | default | meaning |', '|---|---|---|']
                     + rows) + '\n'


def field(section: Any, name: str, where: str) -> Any:
  """`section[name]`, or one error line naming `where.name` when missing."""
  try:
    return section[name]
  except (KeyError, AttributeError):
    raise InputError(f'{where}.{name}: missing from the config') from None


def section(field: str, defaults: Any, overrides: dict[str, Any]) -> Any:
  """A config section: `defaults` with `overrides` applied, unknown keys refused.

  Every method's `config(**overrides)` goes through here, so a misspelt option
  (`sparsty=0.9`) is one error line instead of a silently ignored value.

  Args:
    field: the section's config path, e.g. 'compression.prune' (for messages).
    defaults: a ConfigDict declaring every key with its default.
    overrides: values replacing the defaults.

  Returns:
    `defaults`, updated in place.

  Raises:
    InputError: an override key that `defaults` does not declare.
  """
  for k, v in overrides.items():
    if k not in defaults:
      raise InputError(f'{field}.{k}: unknown field; valid: '
                       + ', '.join(sorted(defaults.keys())))
    defaults[k] = v
  return defaults


# ----------------------------------------------------------------------------
# Path-keyed helpers for nested-dict parameter and state trees

Path = Any  # '/'-joined string ('rnn/layer_0/kernel') or a tuple of keys.


def path_keys(path: Path) -> tuple[str, ...]:
  """('rnn', 'layer_0', 'kernel') of a '/'-joined path or a key tuple."""
  return tuple(path.split('/')) if isinstance(path, str) else tuple(path)


def get_path(tree: Any, path: Path) -> Any:
  """The subtree at `path` (KeyError when a key is missing)."""
  for key in path_keys(path):
    tree = tree[key]
  return tree


def set_path(tree: Any, path: Path, value: Any) -> Any:
  """A copy of `tree` with the subtree at `path` replaced.

  Only the dicts along the path are copied; the inputs are untouched. A
  missing branch is created, so the helper also builds new trees.
  """
  keys = path_keys(path)
  if not keys:
    return value
  out = dict(tree)
  out[keys[0]] = set_path(tree.get(keys[0], {}), keys[1:], value)
  return out


def nest(items: Any) -> dict:
  """The nested dict of `(path, value)` pairs."""
  out: dict = {}
  for path, value in items:
    out = set_path(out, path, value)
  return out


def flatten_dict(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'/'-joined path: leaf} of a nested dict, in sorted key order."""
  out: dict[str, Any] = {}
  for key in sorted(tree):
    value = tree[key]
    if isinstance(value, dict):
      out.update(flatten_dict(value, f'{prefix}{key}/'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def tagged(tree: Any, marker: str, prefix: tuple[str, ...] = ()):
  """(key path, record) of every dict in `tree` holding the key `marker`.

  Method states keep one record per compressed parameter (a dict with, for
  example, 'clip' or 'indices'); this walks to them in sorted key order.
  """
  if isinstance(tree, dict) and marker in tree:
    yield prefix, tree
    return
  if isinstance(tree, dict):
    for k in sorted(tree):
      yield from tagged(tree[k], marker, prefix + (k,))


def selected_keys(params: Params, pattern: str, field: str
                  ) -> list[tuple[str, ...]]:
  """The key paths of the leaves `pattern` selects (error if none)."""
  chosen = select(params, pattern, field=field)
  return [tuple(path_str(p).split('/'))
          for p, hit in jax.tree_util.tree_flatten_with_path(chosen)[0] if hit]
