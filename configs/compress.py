"""Compresses any trained run with any chain of methods.

  python train.py --config=configs/compress.py:methods=prune,quantize \
      --config.init_from=runs/gru_baseline \
      --config.compression.prune.sparsity=0.9 \
      --config.compression.quantize.bits=4
  python train.py --config=configs/compress.py:methods=quantize,steps=0 \
      --config.init_from=runs/my_lstm          # post-training, calibrated

The model and the data come from the trained workdir that `init_from` names
(its config.json), whatever recipe and data flags trained it; this recipe
only chooses the methods and the fine-tuning. Every method's options are
flags under `--config.compression.<method>.` with the defaults documented in
that method's `config()` (README, "Compress any trained run").

The fine-tuning runs `steps` steps (default 200) at a tenth of the usual
peak rate with no warmup: the source model is already trained. A gradual
pruning schedule ends at three quarters of the steps, so the last quarter
recovers at the final sparsity. With `steps=0` the run is post-training
only: a quantizer is calibrated on 4 training batches and the result is
evaluated and exported.

Args (`:key=value,...`): methods (comma-separated names from
compression.METHODS, in chain order; default quantize); steps (default 200);
smoke.
"""

from configs import common


def get_config(arg=None):
  """A fine-tuning run over the methods named in `methods`."""
  a = common.parse_arg(arg, lists=('methods',), smoke=False,
                       methods='quantize', steps=200)
  c = common.base_config()
  c.name = 'compress'
  c.arg = arg or ''
  c.needs_source = True  # init_from must name the trained run.
  c.compression.methods = a.methods
  steps = 4 if a.smoke else a.steps
  c.train.steps = steps
  c.train.log_every = 1 if a.smoke else 50
  c.train.eval_every = 0
  c.train.checkpoint_every = max(1, steps // 2)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 0
  c.compression.prune.schedule = 'gradual'
  c.compression.prune.begin_step = 0
  c.compression.prune.end_step = max(1, (3 * steps) // 4)
  c.compression.prune.frequency = max(1, steps // 20)
  if steps == 0:
    c.compression.calibration_batches = 4
  if a.smoke:
    c.train.eval_every = 2
    # A self-contained test run: without --config.init_from a smoke
    # baseline is trained first into <workdir>/init.
    c.init_config = 'gru_baseline.py:smoke'
  return c
