r"""Evaluates the latest checkpoint of a workdir, or an artifact alone.

Usage:
  python eval.py --config=configs/gru_baseline.py --workdir=runs/gru_baseline
  python eval.py --workdir=runs/gru_baseline   # the workdir's config.json
  python eval.py --config=configs/gru_prune.py --workdir=runs/gru_prune --export
  python eval.py --artifact=runs/gru_prune/model.rnnc
  python eval.py --artifact=runs/gru_prune/model.rnnc --runtime=onnx
  python eval.py --artifact=runs/gru_prune/model.rnnc --export_onnx=m.onnx

Prints the task's metrics and writes them to `workdir/eval.json`. The numbers
equal the test metrics that train.py wrote to `results.json` for the same
checkpoint, because both call the same `train.evaluate_params`.

`--export` also writes the compressed artifact `workdir/model.rnnc` from the
checkpoint and prints a per-leaf table (path, shape, methods, bits, nonzeros,
bytes) with the totals. `--artifact=PATH` needs no config and no checkpoint:
it reads the file (validated; a damaged one is one error line), rebuilds the
model and its parameters from it alone, evaluates them on the test split of
the dataset its header names and writes `<PATH>.eval.<runtime>.json`.

`--runtime` picks what computes the model (`deploy.RUNTIMES`): `jax` (the
float rebuild in its Flax model), `int` (the integer reference), `c` (the
generated C library, compiled), `onnx` (onnxruntime) or `stablehlo` (the
serialized program in a fresh process). Every runtime's outputs go through
the same metric code, so the reports compare key for key.
`--export_c=DIR`, `--export_onnx=PATH` and `--export_stablehlo=PATH` write
the artifact's model in a deployable form (whole or not at all).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

import checkpoints
import cli
import compression
from compression import accounting
from compression import early_exit
from compression import export as export_lib
from compression.errors import InputError
import data
import deploy
from models import tasks
import train

EXPORT_FLAG = flags.DEFINE_bool(
    'export', False, 'Also write the artifact <workdir>/model.rnnc and print '
    'its per-leaf size table.')
ARTIFACT_FLAG = flags.DEFINE_string(
    'artifact', None, 'Evaluate this artifact alone (no --config, no '
    'checkpoint).')
RUNTIME_FLAG = flags.DEFINE_enum(
    'runtime', 'jax', list(deploy.RUNTIMES),
    'With --artifact: what computes the model (float JAX, the integer '
    'reference, compiled C, onnxruntime, deserialized StableHLO).')
EXPORT_FLAGS = {
    name: flags.DEFINE_string(
        f'export_{name}', None,
        f'With --artifact: write the model as {name} to this path.')
    for name in deploy.EXPORTERS}
CODING_FLAG = flags.DEFINE_enum(
    'coding', 'huffman', list(accounting.CODINGS),
    'Integer codes in the artifact: fixed width, or Huffman where smaller.')


def evaluate(config: Any, workdir: str, export: bool = False,
             coding: str = 'huffman') -> dict:
  """Restores the latest checkpoint of `workdir` and evaluates it.

  The workdir's own config.json is the truth about the run (its model, data
  and methods, whatever flags it was trained with); `config` only has to
  name the same recipe.

  Args:
    config: the recipe the run was trained with, or None to use the
      workdir's config.json alone.
    workdir: the run directory holding `checkpoints/`.
    export: also write `workdir/model.rnnc`; the report then has its sizes
      and the per-leaf rows (`leaves`).
    coding: the artifact's integer coding, 'fixed' or 'huffman'.

  Returns:
    The report: the step, the task and its test metrics (`test_<metric>`).

  Raises:
    InputError: no checkpoint, or one that does not fit the config.
  """
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise InputError(f'workdir {workdir}: holds no checkpoints/ to evaluate')
  saved = train.read_run_config(workdir, 'workdir')
  if saved is not None:
    if config is not None and config.name and saved.name != config.name:
      raise InputError(f'--config: {workdir} holds a {saved.name!r} run, not '
                       f'{config.name!r}')
    if config is not None:
      # The run is evaluated as it was trained; only how it is batched may
      # change (the batch must divide by this host's device count).
      with saved.unlocked():
        for key in sorted(train.given_keys(config)):
          if key not in ('data.batch_size', 'data.eval_batch_size'):
            raise InputError(
                f'--config.{key}: eval.py evaluates the run in {workdir} as '
                'its config.json describes it; only --config.data.batch_size '
                'and --config.data.eval_batch_size may change')
          saved.data[key.split('.')[1]] = config.data[key.split('.')[1]]
    config = saved
  elif config is None:
    raise InputError(f'workdir {workdir}: holds no config.json; give the '
                     'recipe with --config')
  if config.init_from and not os.path.isdir(
      os.path.join(config.init_from, 'checkpoints')):
    # The run's own checkpoint holds everything; the source it started from
    # may have moved or gone (it only shapes a few data-dependent states,
    # such as a low-rank energy rule's ranks).
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.init_from = ''
      config.needs_source = False
  setup = train.build(config)
  target = train.init_state(config, setup,
                            teacher_width=train.teacher_width(config, workdir))
  mngr = checkpoints.checkpoint_manager(workdir, config, read_only=True)
  try:
    state = checkpoints.restore_latest(mngr, target, workdir)
  finally:
    mngr.close()
  if state is None:
    raise InputError(f'workdir {workdir}: holds no checkpoint to evaluate')
  dense = jax.device_get(setup.compressor.apply(state.params, state.comp_state))
  metrics = train.evaluate_params(setup, train.make_eval_fn(setup), dense,
                                  setup.dataset.test,
                                  config.data.eval_batch_size)
  report = {'config': train.config_label(config), 'task': setup.dataset.task,
            'step': int(state.step), **train.size_report(dense)}
  report.update({f'test_{k}': v for k, v in metrics.items()})
  if export:
    params = jax.device_get(state.params)
    comp_state = jax.device_get(state.comp_state)
    report.update(export_lib.write_run(
        config, setup.dataset.task, setup.dataset.info, setup.compressor,
        params, comp_state, dense, workdir, coding=coding))
    # Against the uncompressed model, as results.json has it.
    report['dense_bytes'] = 4 * train.model_param_count(setup)
    report['compression_ratio'] = (report['dense_bytes']
                                   / report['compressed_bytes'])
    report['coding'] = coding
    # The artifact's leaves (a learned input step is in its header).
    from compression import activations  # pylint: disable=g-import-not-at-top
    report['leaves'] = accounting.account(
        activations.strip(dense), setup.compressor.export(params, comp_state),
        compression.method_names(config.compression))['leaves']
  train.write_json(os.path.join(workdir, 'eval.json'), report)
  return report


def load_artifact_data(path: str) -> tuple[export_lib.Artifact, Any]:
  """The artifact and the dataset its header names (checked against it)."""
  art = export_lib.read(path)
  header = art.header
  if not isinstance(header.get('data'), dict):
    raise InputError(f'artifact {path}: its header names no dataset to '
                     'evaluate on')
  dataset = data.load(ml_collections.ConfigDict(header['data']))
  if dataset.task != header['task']:
    raise InputError(f'artifact {path}: task {header["task"]!r}, but its '
                     f'dataset gives {dataset.task!r}')
  return art, dataset


def runtime_outputs(art: export_lib.Artifact, path: str, batches: list[dict],
                    runtime: str) -> tuple[list[np.ndarray], dict]:
  """Each batch's model output through a runtime, and the runtime's extras."""
  return deploy.module(deploy.RUNTIMES, runtime).run(art, path, batches)


def evaluate_artifact(path: str, runtime: str = 'jax') -> dict:
  """Evaluates an artifact alone: its own model and parameters.

  Args:
    path: the artifact file (`model.rnnc`).
    runtime: a name of `deploy.RUNTIMES`.

  Returns:
    The report: task, runtime, test metrics (`test_<metric>`), the file size
    and the runtime's extras; also written to `<path>.eval.<runtime>.json`.
    An artifact whose header has `early_exit` (a classifier that exits
    early) adds its early-exit fields (`compression.early_exit.report`)
    under the jax runtime.

  Raises:
    InputError: a missing or damaged artifact, a dataset it cannot load, or
      a model the runtime cannot run.
  """
  art, dataset = load_artifact_data(path)
  batch = int(art.header['data'].get('eval_batch_size') or 64)
  batches = list(data.eval_batches(dataset.test, batch))
  outputs, extras = runtime_outputs(art, path, batches, runtime)
  totals: dict[str, float] = {}
  for b, out in zip(batches, outputs, strict=True):
    sums = tasks.task_loss(dataset.task, jax.numpy.asarray(out), b,
                           b['weight'])[1]
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  metrics = tasks.finish_metrics(dataset.task, totals, dataset.info)
  leaves = accounting.flatten(art.params)
  report = {'artifact': path, 'config': art.header.get('config', ''),
            'task': dataset.task, 'runtime': runtime,
            'compressed_bytes': art.file_bytes,
            'params_stored': int(sum(v.size for v in leaves.values())),
            'params_nonzero': int(sum(np.count_nonzero(v)
                                      for v in leaves.values())), **extras}
  report.update({f'test_{k}': v for k, v in metrics.items()})
  exit_entry = art.header.get('early_exit')
  if exit_entry and runtime == 'jax':
    # The stored threshold, applied to the per-step predictions of the
    # artifact's own model (the fields train.py wrote to results.json).
    report.update(early_exit.artifact_fields(
        art.model, art.params, exit_entry['threshold'], batches))
  report = train.json_safe(report)  # A non-finite metric is null, never NaN.
  train.write_json(f'{path}.eval.{runtime}.json', report)
  return report


def export_artifact(path: str, fmt: str, out: str) -> dict:
  """Writes an artifact's model in a deployable format (`deploy.EXPORTERS`)."""
  art = export_lib.read(path)
  report = deploy.module(deploy.EXPORTERS, fmt).export(art, path, out)
  return {'artifact': path, 'format': fmt, 'path': out, **report}


def format_table(report: dict) -> str:
  """The per-leaf size table and the totals of an exported report."""
  huff = report['coding'] == 'huffman'
  lines = [f"{'path':34s} {'shape':>9s} {'methods':>16s} {'bits':>4s} "
           f"{'nonzero':>7s} {'bytes':>7s}"]
  for r in report['leaves']:
    size = r['entropy_bytes'] if huff else r['fixed_bytes']
    lines.append(
        f"{r['path']:34s} {'x'.join(map(str, r['shape'])):>9s} "
        f"{(r['methods'] or '-'):>16s} {r['bits']:4d} {r['nonzeros']:7d} "
        f"{size:7d}")
  payload = report['entropy_coded_bytes'] if huff else report[
      'fixed_width_bytes']
  lines.append(
      f"payload {payload} B (fixed width {report['fixed_width_bytes']} B, "
      f"entropy-coded {report['entropy_coded_bytes']} B) + header "
      f"{report['artifact_header_bytes']} B = file "
      f"{report['compressed_bytes']} B; dense float32 "
      f"{report['dense_bytes']} B; ratio {report['compression_ratio']:.1f}x")
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  logging.set_verbosity(logging.WARNING)
  cli.configure_cpu_devices_from_flag()
  exports = {k: f.value for k, f in EXPORT_FLAGS.items() if f.value}
  if not ARTIFACT_FLAG.value and (exports or RUNTIME_FLAG.present):
    given = [f'--export_{k}' for k in exports] + (
        ['--runtime'] if RUNTIME_FLAG.present else [])
    raise app.UsageError(f'{", ".join(given)} need --artifact=PATH')
  if ARTIFACT_FLAG.value:
    def run_artifact():
      for fmt, out in exports.items():
        print(json.dumps(export_artifact(ARTIFACT_FLAG.value, fmt, out),
                         indent=1, sort_keys=True))
      if not exports or RUNTIME_FLAG.present:
        print(json.dumps(evaluate_artifact(ARTIFACT_FLAG.value,
                                           RUNTIME_FLAG.value),
                         indent=1, sort_keys=True))

    cli.run_cli(run_artifact)
    return
  if cli.CONFIG_FLAG.value is None and not cli.WORKDIR_FLAG.value:
    raise app.UsageError('--config or --workdir is required (or '
                         '--artifact=PATH)')
  config = (cli.config_from_flags() if cli.CONFIG_FLAG.value is not None
            else None)
  workdir = cli.WORKDIR_FLAG.value or os.path.join('runs', config.name or 'run')

  def run():
    report = evaluate(config, workdir, export=EXPORT_FLAG.value,
                      coding=CODING_FLAG.value)
    if EXPORT_FLAG.value:
      print(format_table(report))
      report = {k: v for k, v in report.items() if k != 'leaves'}
    print(json.dumps(report, indent=1, sort_keys=True))

  cli.run_cli(functools.partial(run))


if __name__ == '__main__':
  flags.adopt_module_key_flags(cli)  # --help lists them.
  app.run(main, flags_parser=cli.parse_flags)
