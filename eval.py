r"""Evaluates the latest checkpoint of a workdir on the test split.

Usage:
  python eval.py --config=configs/gru_baseline.py --workdir=runs/gru_baseline

Prints the task's metrics and writes them to `workdir/eval.json`. The numbers
equal the test metrics that train.py wrote to `results.json` for the same
checkpoint, because both call the same `train.evaluate_params`.
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

from compression.errors import InputError
import train

def evaluate(config: Any, workdir: str) -> dict:
  """Restores the latest checkpoint of `workdir` and evaluates it.

  Args:
    config: the run's ConfigDict (the recipe it was trained with).
    workdir: the run directory holding `checkpoints/`.

  Returns:
    The report: the step, the task and its test metrics (`test_<metric>`).

  Raises:
    InputError: no checkpoint, or one that does not fit the config.
  """
  setup = train.build(config)
  target = train.init_state(config, setup)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise InputError(f'workdir {workdir}: holds no checkpoints/ to evaluate')
  mngr = train.checkpoint_manager(workdir, config, read_only=True)
  state = train.restore_latest(mngr, target, workdir)
  if state is None:
    raise InputError(f'workdir {workdir}: holds no checkpoint to evaluate')
  dense = jax.device_get(setup.compressor.apply(state.params, state.comp_state))
  metrics = train.evaluate_params(setup, train.make_eval_fn(setup), dense,
                                  setup.dataset.test,
                                  config.data.eval_batch_size)
  report = {'config': train.config_label(config), 'task': setup.dataset.task,
            'step': int(state.step), **train.size_report(dense)}
  report.update({f'test_{k}': v for k, v in metrics.items()})
  train.write_json(os.path.join(workdir, 'eval.json'), report)
  return report


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  logging.set_verbosity(logging.WARNING)
  config = train.config_from_flags()
  workdir = train.WORKDIR_FLAG.value or os.path.join('runs', config.name or 'run')

  def run():
    report = evaluate(config, workdir)
    print(json.dumps(report, indent=1, sort_keys=True))

  train.run_cli(functools.partial(run))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
