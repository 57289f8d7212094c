"""The METHODS registry and `make`, re-exported by the package.

Each method module in `_METHOD_MODULES` defines a module-level dict
`METHODS = {'name': factory}`; the registry is their union.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable

from compression.core import Compressor, chain, identity, param_paths, select
from compression.errors import InputError

_METHOD_MODULES = ('quantization', 'clustering', 'pruning', 'lowrank', 'dct',
                   'threshold', 'budget', 'kronecker', 'tensor_train')


def _collect() -> dict[str, Any]:
  """Method name -> the module that defines it."""
  modules: dict[str, Any] = {}
  for name in _METHOD_MODULES:
    if importlib.util.find_spec(f'compression.{name}') is None:
      continue  # A method family this checkout does not have.
    module = importlib.import_module(f'compression.{name}')
    for method in getattr(module, 'METHODS', {}):
      modules[method] = module
  return modules


_MODULES = _collect()
# name -> factory(section_config) -> Compressor.
METHODS: dict[str, Callable[[Any], Compressor]] = {
    name: module.METHODS[name] for name, module in _MODULES.items()}


def default_section(name: str) -> Any:
  """The config section of method `name` with its documented defaults.

  Every recipe declares one section per registered method (configs/common.py),
  so `--config.compression.methods=...` works on any recipe and every option
  can be set from the command line.

  Args:
    name: a key of METHODS.

  Returns:
    The module's `config()` ConfigDict.
  """
  return _MODULES[name].config()


def report(cfg: Any, state: Any, dense_params: Any, model_cfg: Any
           ) -> dict[str, Any]:
  """The results.json fields the chained methods add (e.g. achieved sparsity).

  A method module may define `report(section, state, dense_params,
  model_cfg) -> dict`; methods without one add nothing.
  """
  out: dict[str, Any] = {}
  for name, s in zip(method_names(cfg), state):
    fn = getattr(_MODULES[name], 'report', None)
    if fn is not None:
      out.update(fn(cfg[name], s, dense_params, model_cfg))
  return out


def method_names(cfg: Any) -> list[str]:
  """The method names listed in `cfg.methods`, in order."""
  return [m.strip() for m in str(cfg.methods).split(',') if m.strip()]


def model_hooks(cfg: Any, train: Any = None) -> dict[str, Any]:
  """The in-model options `cfg` switches on, as `models.make` arguments.

  Quantizing the recurrent state (`hidden_state`) or every activation
  (`activations`, `compression.activations`) acts at every step inside the
  scan, so these are options of the model rather than transforms of its
  weights: `models.make(config.model, task, info, **model_hooks(...))`.

  Args:
    cfg: the `config.compression` section; `cfg.hidden_state.bits` = 0 and
      `cfg.activations.bits` = 0 (or no `activations` section) are off.
    train: the training split (`x`, `lengths`), from which a static input
      step is calibrated (`activations.input_step`).

  Returns:
    Some of `state_fn`, `cell_state_fn` (each new hidden / LSTM cell state),
    `gate_fn`, `input_fn`, `features_fn`; {} when all is off.

  Raises:
    InputError: both sections on (activations fix h_t's and c_t's grids).
  """
  from compression import activations  # pylint: disable=g-import-not-at-top
  hidden = cfg.hidden_state
  if activations.enabled(cfg):
    if hidden.bits or hidden.cell_bits:
      raise InputError(
          'compression.hidden_state: compression.activations already puts '
          'h_t (and an LSTM\'s c_t) on the integer grids; set '
          'hidden_state.bits=0 and hidden_state.cell_bits=0')
    section = activations.section_of(cfg)
    step = None
    if activations.parse(section).mode == 'static':
      step = activations.input_step(section, train)
    return activations.hooks(section, step)
  if not hidden.bits and not hidden.cell_bits:
    return {}
  from compression import quantization  # pylint: disable=g-import-not-at-top
  state_fn, cell_state_fn = quantization.state_quantizers(hidden)
  return {'state_fn': state_fn, 'cell_state_fn': cell_state_fn}


def make(cfg: Any) -> Compressor:
  """Builds the chained Compressor that `cfg.methods` names.

  Args:
    cfg: the `config.compression` section: `methods` ('' for none, or
      'prune,quantize', ...) plus one sub-section per method name.

  Returns:
    The chain of the named methods (identity for none), with the learned
    input step's parameter when `cfg.activations` learns it.

  Raises:
    InputError: a name not in METHODS, or a bad `activations` section.
  """
  methods = []
  for name in method_names(cfg):
    if name not in METHODS:
      valid = ', '.join(sorted(METHODS)) or '(none yet)'
      raise InputError(
          f'compression.methods: unknown method {name!r}; valid: {valid}')
    methods.append(METHODS[name](cfg[name]))
  from compression import activations  # pylint: disable=g-import-not-at-top
  if activations.learned(cfg):
    # The learned input step is a parameter beside the methods' (see
    # `compression.activations`); the chain's state is unchanged.
    return activations.with_learned_step(chain(*methods))
  return chain(*methods)
