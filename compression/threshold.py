"""Magnitude-threshold pruning: weights with |w| < theta become exactly 0.

The rule of the design notes: every selected kernel keeps the weights whose
magnitude reaches a threshold theta, either absolute (`threshold`) or
relative to the kernel's largest magnitude (`factor`: theta = factor *
max|w|, per kernel). Unlike `compression.pruning`, which reaches a target
sparsity, the sparsity here is whatever the threshold gives; `report` says
how much it was.

The masks are computed once, from the parameters the run starts with
(`init`): with `init_from` a trained model, that is post-training pruning,
and the fine-tuning that follows trains the kept weights only (the removed
ones stay exactly 0). `export` records the kept positions; accounting
chooses their format.

  c.compression.methods = 'threshold'
  c.compression.threshold = threshold.config(factor=0.1)

Options (`config()`): regex, threshold, factor.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from compression import core
from compression import records
from compression.errors import InputError

_FIELD = 'compression.threshold'


OPTIONS = core.Options(
    _FIELD,
    core.Option('regex', r'rnn/.*_kernel',
                'Kernels pruned (re.fullmatch on the parameter path).'),
    core.Option('threshold', 0.0, 'Absolute theta (> 0), or 0 to use factor.',
                core.at_least(0)),
    core.Option('factor', 0.1, 'theta = factor * max|w| per kernel.',
                core.in_range(0, 1)),
)
config = OPTIONS.config


def _check(cfg: Any) -> Any:
  """The parsed options of a valid section; one line otherwise."""
  o = OPTIONS.parse(cfg)
  if not o.threshold and not o.factor:
    raise InputError(f'{_FIELD}: set threshold (> 0) or factor (in (0, 1])')
  return o


def masks_of(params: core.Params, regex: str, threshold: float,
             factor: float) -> dict[str, np.ndarray]:
  """{path: kept mask} of every selected kernel: |w| >= theta.

  Args:
    params: the parameter tree.
    regex: which parameters (an error if it matches none).
    threshold: absolute theta; 0 means theta = factor * max|w|.
    factor: the relative theta's fraction.

  Returns:
    Boolean masks, True where a weight is kept.
  """
  out = {}
  for keys in core.selected_keys(params, regex, f'{_FIELD}.regex'):
    w = np.abs(np.asarray(core.get_path(params, keys), np.float32))
    theta = threshold or factor * float(w.max(initial=0.0))
    out['/'.join(keys)] = w >= np.float32(theta)
  return out


def make(cfg: Any) -> core.Compressor:
  """Threshold pruning of the kernels `cfg.regex` selects.

  Args:
    cfg: the `compression.threshold` section.

  Returns:
    A Compressor whose state is the masks (fixed from `init`).

  Raises:
    InputError: a bad section (here), or a regex that matches nothing (in
      `init`).
  """
  o = _check(cfg)
  regex, threshold, factor = o.regex, o.threshold, o.factor

  def init(params):
    masks = masks_of(params, regex, threshold, factor)
    return params, {p: jnp.asarray(m) for p, m in masks.items()}

  def apply(params, state):
    for path, mask in state.items():
      w = core.get_path(params, path)
      params = core.set_path(params, path,
                             jnp.where(mask, w, jnp.zeros((), w.dtype)))
    return params

  def export(params, state):
    del params
    return {path: records.Record(positions=records.positions_of_mask(mask))
            for path, mask in state.items()}

  return core.Compressor(init=init, apply=apply, export=export)


def report(cfg: Any, state: Any, dense_params: Any, model_cfg: Any
           ) -> dict[str, Any]:
  """The sparsity the threshold reached over the selected kernels."""
  del cfg, dense_params, model_cfg
  kept = sum(int(np.sum(np.asarray(m))) for m in jax.tree.leaves(state))
  total = sum(int(np.size(m)) for m in jax.tree.leaves(state))
  return {'threshold_sparsity': 1.0 - kept / max(1, total)}


METHODS = {'threshold': make}
