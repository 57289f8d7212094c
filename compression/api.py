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
                   'threshold')


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


def model_hooks(cfg: Any) -> tuple[Any, Any]:
  """The in-model options `cfg` switches on: (state_fn, cell_state_fn).

  Quantizing the recurrent state acts at every step inside the scan, so it is
  an option of the model rather than a transform of its weights.

  Args:
    cfg: the `config.compression` section; `cfg.hidden_state.bits` = 0 is off.

  Returns:
    Functions applied to each new hidden state and LSTM cell state (None: off).
  """
  if not cfg.hidden_state.bits and not cfg.hidden_state.cell_bits:
    return None, None
  from compression import quantization  # pylint: disable=g-import-not-at-top
  return quantization.state_quantizers(cfg.hidden_state)


def make(cfg: Any) -> Compressor:
  """Builds the chained Compressor that `cfg.methods` names.

  Args:
    cfg: the `config.compression` section: `methods` ('' for none, or
      'prune,quantize', ...) plus one sub-section per method name.

  Returns:
    The chain of the named methods (identity for none).

  Raises:
    InputError: a name not in METHODS.
  """
  methods = []
  for name in method_names(cfg):
    if name not in METHODS:
      valid = ', '.join(sorted(METHODS)) or '(none yet)'
      raise InputError(
          f'compression.methods: unknown method {name!r}; valid: {valid}')
    methods.append(METHODS[name](cfg[name]))
  return chain(*methods)
