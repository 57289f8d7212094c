r"""Per-tensor and per-layer first-order sensitivity, and removing whole layers.

Sensitivity (the design notes' per-parameter-group version of first-order
Taylor pruning, Molchanov et al. 2017): removing a parameter w_i (setting it
to 0) changes the loss by about -g_i w_i to first order, with g_i = dL/dw_i.
A tensor's sensitivity is the sum of these per-parameter magnitudes over its
entries, accumulated over `batches` training batches (the gradient of each
batch's mean loss, at the trained float parameters):

  S(tensor) = sum_batches sum_{i in tensor} |g_i w_i|

and a layer's is the sum over its tensors (`rnn/layer_{l}/...`: input and
recurrent kernels, biases). Sums, not means, so a layer that holds more of
the model's sensitivity ranks higher even when it holds more parameters. The
ranking by S is `rank(...)`; results.json gets `tensor_sensitivity` and
`layer_sensitivity` of the source model.

Removing layers (`layer_drop` section): a trained stack of L layers becomes
one of L - `remove` layers; the least sensitive removable layers go. Layer l
is *removable* when the layer above can read what layer l read: l >= 1 (its
input is the H-wide state of layer l - 1, as the layer above reads), or l = 0
when the input has H features too. (In a 2-layer GRU-64 on 12 features only
layer 1 qualifies; the ranking is reported all the same.) The kept layers
keep their parameters and are renumbered `layer_0..`, the head is kept, and
the shrunk model is fine-tuned: its config has `model.layers` = L - remove
and `layer_drop.removed` = the source indices removed, so its checkpoint and
artifact hold only the kept layers. train.py chooses before training
(`train.prepare_layer_drop`); a given `removed` (comma-separated source
indices) is used as it is.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp

from compression import core
from compression.errors import InputError

FIELD = 'layer_drop'
_LAYER = re.compile(r'(?P<prefix>(?:.*/)?)layer_(?P<i>\d+)(?P<rest>/.*)')


def _removed_check(v: str) -> str | None:
  try:
    parse_removed(v)
  except ValueError as e:
    return str(e)
  return None


OPTIONS = core.Options(
    FIELD,
    core.Option('remove', 0, 'Whole recurrent layers removed from the trained '
                'init_from stack, least sensitive first; 0 = off.',
                core.at_least(0)),
    core.Option('batches', 8, 'Training batches the first-order '
                'sensitivities are summed over.', core.at_least(1)),
    core.Option('removed', '', 'The source layers removed (comma-separated); '
                "'' = choose by sensitivity. train.py records its choice "
                'here.', _removed_check),
)
config = OPTIONS.config


def parse_removed(text: str) -> list[int]:
  """Sorted distinct layer indices of a `removed` string ('' = none)."""
  if not str(text).strip():
    return []
  try:
    idx = sorted({int(v) for v in str(text).split(',')})
  except ValueError:
    raise ValueError(f'{text!r} is not comma-separated layer indices'
                     ) from None
  if idx[0] < 0:
    raise ValueError(f'{text!r}: layer indices are >= 0')
  return idx


def removed_of(run_config: Any) -> list[int]:
  """The source layers a (prepared) run config removed; [] for none.

  A config.json written before the section existed has none.
  """
  if FIELD not in run_config:
    return []
  return parse_removed(run_config[FIELD].removed)


def removable(layers: int, input_width: int, hidden: int) -> list[int]:
  """The layers whose removal leaves a stack of matching shapes."""
  return [l for l in range(layers) if l >= 1 or input_width == hidden]


def check(section: Any, layers: int, input_width: int, hidden: int,
          has_source: bool) -> None:
  """One error line for a removal that cannot happen.

  Args:
    section: the `layer_drop` section.
    layers: the source stack's layer count (the recipe's `model.layers`).
    input_width: what layer 0 reads (features, or the embedding width).
    hidden: the layers' width H.
    has_source: whether the run starts from a trained model.

  Raises:
    InputError: more layers removed than the stack has or than are
      removable, given indices that do not exist or cannot go, or removal
      without a trained source.
  """
  o = OPTIONS.parse(section)
  given = parse_removed(o.removed)
  if not o.remove and not given:
    return
  if given and len(given) != o.remove:
    raise InputError(f'{FIELD}.removed: names {len(given)} layers, '
                     f'{FIELD}.remove is {o.remove}; give both the same count')
  if o.remove >= layers:
    raise InputError(f'{FIELD}.remove: {o.remove} would leave no layer of the '
                     f'{layers}-layer model (at most {layers - 1})')
  can = removable(layers, input_width, hidden)
  if o.remove > len(can) or any(l not in can for l in given):
    why = (f'layer 0 reads {input_width} input features, the layer above '
           f'reads {hidden}' if input_width != hidden else 'none')
    raise InputError(f'{FIELD}.remove: only layers {can} of {layers} can be '
                     f'removed ({why}); asked for '
                     f'{given or o.remove}')
  if not has_source:
    raise InputError(f'{FIELD}.remove: removes layers of a trained model; '
                     'set init_from (or init_config)')


# ----------------------------------------------------------------------------
# Sensitivity


def taylor_scores(params: Any, grads: Any) -> dict[str, float]:
  """{path: sum_i |g_i w_i|} over every leaf of a parameter tree."""
  flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_g = jax.tree_util.tree_leaves(grads)
  return {core.path_str(p): float(jnp.sum(jnp.abs(g * w)))
          for (p, w), g in zip(flat_p, flat_g)}


def tensor_sensitivity(grad_fn: Callable[[Any, dict], Any], params: Any,
                       batches: Iterable[dict]) -> dict[str, float]:
  """Per-tensor first-order sensitivity, summed over batches.

  Args:
    grad_fn: `(params, batch) -> grads` of the batch's mean loss.
    params: the trained dense parameters.
    batches: the training batches.

  Returns:
    {path: S(tensor)} for every leaf.
  """
  total: dict[str, float] = {}
  for batch in batches:
    for path, s in taylor_scores(params, grad_fn(params, batch)).items():
      total[path] = total.get(path, 0.0) + s
  return total


def layer_sensitivity(tensors: Mapping[str, float]) -> dict[int, float]:
  """{layer index: sum of its tensors' sensitivities} of the recurrent stack."""
  out: dict[int, float] = {}
  for path, s in tensors.items():
    m = _LAYER.fullmatch(path)
    if m is not None and m['prefix'] in ('', 'rnn/'):
      out[int(m['i'])] = out.get(int(m['i']), 0.0) + s
  return dict(sorted(out.items()))


def rank(scores: Mapping[Any, float]) -> list[Any]:
  """Keys from least to most sensitive (ties in key order)."""
  return [k for k, _ in sorted(scores.items(), key=lambda kv: (kv[1],
                                                               str(kv[0])))]


def choose(layer_scores: Mapping[int, float], can_remove: list[int],
           count: int) -> list[int]:
  """The `count` least sensitive removable layers, sorted."""
  return sorted([l for l in rank(layer_scores) if l in can_remove][:count])


# ----------------------------------------------------------------------------
# Shrinking


def kept_layers(layers: int, removed: list[int]) -> list[int]:
  """The source indices of the layers that stay, in order."""
  return [l for l in range(layers) if l not in removed]


def shrink_flat(flat: Mapping[str, Any], removed: list[int]
                ) -> dict[str, Any]:
  """A flat {path: value} tree without the removed layers, renumbered.

  `rnn/layer_{kept[j]}/...` becomes `rnn/layer_{j}/...`; every other path
  (the head, embeddings) is kept as it is.
  """
  if not removed:
    return dict(flat)
  present = sorted({int(m['i']) for m in map(_LAYER.fullmatch, flat)
                    if m is not None})
  new_index = {old: j for j, old in enumerate(
      [l for l in present if l not in removed])}
  out = {}
  for path, value in flat.items():
    m = _LAYER.fullmatch(path)
    if m is None:
      out[path] = value
    elif int(m['i']) in new_index:
      out[f"{m['prefix']}layer_{new_index[int(m['i'])]}{m['rest']}"] = value
  return out


def shrink(params: Any, removed: list[int]) -> dict:
  """The nested parameter tree without the removed layers (`shrink_flat`)."""
  flat = {core.path_str(p): v for p, v in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  return core.nest(shrink_flat(flat, removed).items())


def report(tensors: Mapping[str, float], removed: list[int],
           source_layers: int) -> dict[str, Any]:
  """The results.json fields of a removal."""
  layers = layer_sensitivity(tensors)
  return {
      'removed_layers': list(removed),
      'source_layers': source_layers,
      'layer_sensitivity': {f'layer_{l}': s for l, s in layers.items()},
      'layer_sensitivity_rank': [f'layer_{l}' for l in rank(layers)],
      'tensor_sensitivity': dict(sorted(tensors.items())),
      'tensor_sensitivity_rank': rank(tensors),
  }
