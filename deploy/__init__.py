"""Where a compressed model leaves Python: runtimes and exporters of artifacts.

Every runtime and exporter reads an artifact (`compression.export.read`): its
header (model, task, data) and its stored records (`Artifact.records`), never
a checkpoint. `eval.py --artifact=X --runtime=NAME` evaluates the test split
through one of them, and `--export_<format>=PATH` writes a deployable file.

A runtime module (named in RUNTIMES) defines

    run(artifact, path, batches) -> (outputs, extras)

where `batches` is a list of test batches (`data.eval_batches`: `x`,
`lengths`, `weight`, padded to a fixed batch size), `outputs` the model's
output on each (logits or forecasts, numpy, the shape `model.apply` gives),
and `extras` a dict of facts the runtime reports beside the metrics (say,
`flash_bytes`). An exporter module (named in EXPORTERS) defines

    export(artifact, path, out) -> dict

which writes `out` whole or not at all (`compression.files.atomic_write`),
and returns what it reports (at least `bytes`). A model a runtime or exporter
cannot express raises `compression.errors.InputError`, one line saying what
is missing, before anything is written.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# --runtime names and the modules that run them ('jax': the float rebuild).
RUNTIMES = {
    'jax': 'deploy.float_jax',
    'int': 'deploy.integer',
    'c': 'deploy.c',
    'onnx': 'deploy.onnx',
    'stablehlo': 'deploy.stablehlo',
}
# --export_<name> formats and their modules.
EXPORTERS = {
    'c': 'deploy.c',
    'onnx': 'deploy.onnx',
    'stablehlo': 'deploy.stablehlo',
}


def module(table: dict[str, str], name: str) -> ModuleType:
  """The module of a runtime or exporter name (imported on first use)."""
  return importlib.import_module(table[name])
