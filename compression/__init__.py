"""Compression library: pure transforms over Flax parameter pytrees.

`make(config.compression)` chains the methods named (comma-separated) in
`config.compression.methods`, each built by its factory in `METHODS` from the
sibling config section of the same name.

The public names load lazily (PEP 562). JAX itself probes
`from compression import zstd` (the Python 3.14 standard-library package of the
same name) while it initializes, so importing this package must not import JAX;
an unknown name such as `zstd` raises AttributeError, which JAX reads as
"not available".
"""

from __future__ import annotations

import importlib
from typing import Any

from compression.errors import InputError

_PUBLIC = ('Compressor', 'METHODS', 'chain', 'default_section', 'identity',
           'make',
           'method_names', 'model_hooks', 'param_paths', 'report', 'select')

__all__ = ['InputError', *_PUBLIC]


def __getattr__(name: str) -> Any:
  if name in _PUBLIC:
    api = importlib.import_module('compression.api')
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
