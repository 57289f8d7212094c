"""Inference speed of a unit-pruned model, dense (masked) vs physically shrunk.

  python train.py --config=configs/gru_structured.py
  python -m benchmarks.structured_speed --config=configs/gru_structured.py \
      --workdir=runs/gru_structured

Restores the run's latest checkpoint, builds the masked dense parameters
(`compressor.apply`), shrinks them with `compression.pruning.shrink` into a
model with `hidden` = the kept units, checks that both give the same logits on
the whole test set (to 1e-5), then times the jitted forward pass of each on
one batch of `--batch` test sequences, interleaved in the same process
(`benchmarks/timing.py`: median of `--repeats` calls after warm-up), and
prints parameter counts and the speed ratio. Without `--workdir` the
parameters come from a random init pruned one-shot to the config's unit
sparsity (the timing depends on shapes only).
"""

from __future__ import annotations

import statistics

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from benchmarks import timing
from compression import pruning
import models
import checkpoints
import cli
import train

# train.py defines --config and --workdir (a trained run; none = random).
CONFIG = cli.CONFIG_FLAG
WORKDIR = cli.WORKDIR_FLAG
BATCH = flags.DEFINE_integer('batch', 256, 'Sequences per timed forward pass.')
REPEATS = flags.DEFINE_integer('repeats', 200, 'Timed calls per model.')


def load_dense(config, setup) -> dict:
  """The masked dense parameters of the run (or of a pruned random init)."""
  state = train.init_state(config, setup)
  if WORKDIR.value:
    mngr = checkpoints.checkpoint_manager(WORKDIR.value, config, read_only=True)
    restored = checkpoints.restore_latest(mngr, state, WORKDIR.value)
    if restored is None:
      raise SystemExit(f'{WORKDIR.value} holds no checkpoint')
    state = restored
  else:
    # Random init: prune one-shot at step 0 to the configured unit sparsity.
    cfg = config.compression.prune
    with cfg.unlocked():
      cfg.schedule, cfg.begin_step, cfg.group_lasso = 'oneshot', 0, 0.0
    comp = pruning.make(cfg)
    params, comp_state = comp.init(state.params)
    return jax.device_get(comp.apply(params, comp_state))
  return jax.device_get(setup.compressor.apply(state.params, state.comp_state))


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore.
  cli.configure_cpu_devices_from_flag()
  config = CONFIG.value
  with config.unlocked():
    # The run's own checkpoint holds the parameters; do not retrain a source.
    config.init_from, config.init_config = '', ''
  setup = train.build(config)
  dense = load_dense(config, setup)
  small, kept = pruning.shrink(dense, config.model.cell)
  small_cfg = config.model.copy_and_resolve_references()
  small_cfg.hidden = kept
  small_model = models.make(small_cfg, setup.dataset.task, setup.dataset.info)

  test = setup.dataset.test
  x, lengths = test['x'], test['lengths']
  dense_fn = jax.jit(lambda p, x, l: setup.model.apply({'params': p}, x, l))
  small_fn = jax.jit(lambda p, x, l: small_model.apply({'params': p}, x, l))
  diff = float(np.max(np.abs(np.asarray(dense_fn(dense, x, lengths))
                             - np.asarray(small_fn(small, x, lengths)))))
  count = lambda t: sum(int(np.size(a)) for a in jax.tree.leaves(t))
  nonzero = lambda t: sum(int(np.count_nonzero(a)) for a in jax.tree.leaves(t))
  print(f'hidden {config.model.hidden} -> {kept}; params dense '
        f'{count(dense)} ({nonzero(dense)} nonzero) -> shrunk {count(small)} '
        f'({4 * count(small)} bytes float32); max |logit diff| {diff:.2e}')
  if diff > 1e-5:
    raise SystemExit('shrunk model differs from the masked model')

  idx = np.arange(BATCH.value) % len(lengths)
  xb, lb = jax.device_put(x[idx]), jax.device_put(lengths[idx])
  times = timing.round_robin(
      {'dense': lambda: jax.block_until_ready(dense_fn(dense, xb, lb)),
       'shrunk': lambda: jax.block_until_ready(small_fn(small, xb, lb))},
      REPEATS.value)
  d, s = (statistics.median(times[k]) for k in ('dense', 'shrunk'))
  print(f'forward, batch {BATCH.value}, {jax.devices()[0].platform}: dense '
        f'{d:.3f} ms, shrunk {s:.3f} ms (median of {len(times["dense"])} '
        f'calls each, interleaved); speedup {d / s:.2f}x')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
