r"""Trains a (compressed) recurrent model from a config; resumes where it stopped.

Usage:
  python train.py --config=configs/gru_baseline.py [--workdir=runs/gru_baseline]
  python train.py --config=configs/gru_baseline.py:smoke --config.seed=1

The work is done by `train_and_evaluate(config, workdir)`, which tests, sweeps
and notebooks call directly. It writes to `workdir`:

* `metrics.jsonl`: one JSON object per logged step (`step`, `split`, metrics).
* `results.json`: the final flat record (see `RESULT_KEYS`).
* `config.json`: the full config of the run.
* `checkpoints/`: orbax checkpoints; rerunning the same command resumes from
  the latest one and ends with exactly the parameters of an uninterrupted run,
  because batches, rng and updates are pure functions of (seed, step).
* `checkpoint_digests.json`: the SHA-256 of every field of each checkpoint,
  written before the save; a restore that does not match it (or holds NaN
  parameters) falls back to the newest checkpoint that does, with one line.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
import os
import time
from typing import Any, NamedTuple, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

import checkpoints
from checkpoints import checkpoint_manager, restore_latest
from checkpoints import restore_verified_params
import cli
import compression
from compression import accounting
from compression import budget as budget_lib
from compression import distillation
from compression import early_exit as early_exit_lib
from compression import export as export_lib
from compression import files
from compression import layers as layers_lib
import data
import models
from models import cells as model_cells
from models.tasks import TASK_METRIC, finish_metrics, task_loss
from compression.errors import InputError


# Keys every results.json holds (more may follow per task or method).
RESULT_KEYS = (
    'config', 'task', 'dense_bytes', 'compressed_bytes', 'compression_ratio',
    'params_total', 'params_nonzero', 'train_seconds', 'steps_per_second',
    'devices', 'platform')


class TrainState(NamedTuple):
  """Everything a step reads and writes; checkpointed whole."""
  step: jax.Array
  params: Any
  opt_state: Any
  comp_state: Any
  rng: jax.Array
  # First step whose loss or gradients were not finite, -1 while all are.
  # Updates are skipped from then on, so the state stays the last good one.
  bad_step: jax.Array
  # Trainable values outside the model (the distillation projection); they
  # are trained with the model but never exported.
  aux: Any


class Teacher(NamedTuple):
  """A trained model whose outputs a student distills."""
  model: Any
  params: Any  # Dense parameters (the teacher's own compression applied).
  width: int  # Hidden units of its top layer.
  results: dict  # The teacher run's results.json.


class Setup(NamedTuple):
  """What a run is built from: data, model, compressor, optimizer."""
  dataset: data.Dataset
  model: Any
  compressor: compression.Compressor
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  teacher: Teacher | None = None


# ----------------------------------------------------------------------------
# Building blocks


def make_optimizer(cfg: Any, steps: int) -> optax.GradientTransformation:
  """The optax optimizer and learning-rate schedule that `cfg` describes.

  Args:
    cfg: `config.optimizer`.
    steps: total training steps (the schedule's horizon).

  Returns:
    An optax GradientTransformation (clipping, then the optimizer).
  """
  for field, low in (('learning_rate', None), ('end_factor', 0.0),
                     ('warmup_steps', 0.0), ('weight_decay', 0.0),
                     ('momentum', 0.0), ('grad_clip_norm', 0.0)):
    value = cfg[field]
    if (isinstance(value, bool) or not isinstance(value, (int, float))
        or not math.isfinite(value) or (low is not None and value < low)):
      raise InputError(f'optimizer.{field}: must be a finite number'
                       + (f' >= {low:g}' if low is not None else '')
                       + f', got {value!r}')
  if cfg.learning_rate <= 0:
    raise InputError(
        f'optimizer.learning_rate: must be > 0, got {cfg.learning_rate}')
  warmup = max(0, min(int(cfg.warmup_steps), steps))
  peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_factor
  decay_steps = max(1, steps - warmup)
  schedules = {
      'constant': lambda: optax.constant_schedule(peak),
      'cosine': lambda: optax.cosine_decay_schedule(
          peak, decay_steps, alpha=cfg.end_factor),
      'linear': lambda: optax.linear_schedule(peak, end, decay_steps),
  }
  if cfg.schedule not in schedules:
    raise InputError(f'optimizer.schedule: unknown {cfg.schedule!r}; valid: '
                     + ', '.join(sorted(schedules)))
  lr = schedules[cfg.schedule]()
  if warmup:
    lr = optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), lr], [warmup])
  optimizers = {
      'adam': lambda: optax.adam(lr),
      'adamw': lambda: optax.adamw(lr, weight_decay=cfg.weight_decay),
      'sgd': lambda: optax.sgd(lr, momentum=cfg.momentum or None),
  }
  if cfg.name not in optimizers:
    raise InputError(f'optimizer.name: unknown {cfg.name!r}; valid: '
                     + ', '.join(sorted(optimizers)))
  parts = []
  if cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  parts.append(optimizers[cfg.name]())
  return optax.chain(*parts)


class LossScaleState(NamedTuple):
  """The optimizer state of a float16 run: dynamic loss scaling's, and the
  wrapped optimizer's."""
  scale: jax.Array  # float32: the loss is multiplied by it before the grad.
  good_steps: jax.Array  # int32: finite steps since the scale last changed.
  inner: Any  # The wrapped optimizer's state.


# The loss scale never grows past this (float16's largest value is 65504, so
# larger scales overflow every gradient anyway).
MAX_LOSS_SCALE = 2.0**24


def loss_scaled(tx: optax.GradientTransformation, cfg: Any
                ) -> optax.GradientTransformation:
  """`tx` behind dynamic loss scaling, for float16 compute.

  Float16 has 10 mantissa bits and no value below 6e-8, so small gradients
  of the float16 products underflow to 0; the train step therefore
  multiplies the loss by a scale S before the gradient and divides the
  float32 gradients by S after (`make_train_step`). The parameters and the
  optimizer state (the master weights) stay float32. The scale adapts
  (Micikevicius et al. 2018, "Mixed precision training"):

  * a step whose gradients are not finite (an overflow at this scale) is
    skipped: no update, the inner state kept, and S halves (never below 1);
  * after `loss_scale_period` finite steps in a row, S doubles (at most
    `MAX_LOSS_SCALE`).

  Args:
    tx: the optimizer (`make_optimizer`).
    cfg: `config.optimizer`: `loss_scale` (the initial S, > 0) and
      `loss_scale_period` (>= 1).

  Returns:
    A GradientTransformation whose state is a `LossScaleState`.

  Raises:
    InputError: a scale that is not a positive finite number, or a period
      that is not an integer >= 1.
  """
  init_scale, period = cfg.loss_scale, cfg.loss_scale_period
  if (isinstance(init_scale, bool) or not isinstance(init_scale, (int, float))
      or not math.isfinite(init_scale) or init_scale <= 0):
    raise InputError(f'optimizer.loss_scale: must be a finite number > 0 '
                     f'(float16 training scales the loss), got {init_scale!r}')
  if isinstance(period, bool) or not isinstance(period, int) or period < 1:
    raise InputError(f'optimizer.loss_scale_period: must be an integer >= 1, '
                     f'got {period!r}')

  def init(params):
    return LossScaleState(jnp.asarray(init_scale, jnp.float32),
                          jnp.zeros((), jnp.int32), tx.init(params))

  def update(grads, state, params=None):
    finite = jnp.isfinite(optax.global_norm(grads))
    safe = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, inner = tx.update(safe, state.inner, params)
    updates = jax.tree.map(lambda u: jnp.where(finite, u, 0.0), updates)
    inner = jax.tree.map(lambda n, o: jnp.where(finite, n, o), inner,
                         state.inner)
    good = jnp.where(finite, state.good_steps + 1, 0)
    grow = good >= period
    scale = jnp.where(
        finite,
        jnp.where(grow, jnp.minimum(state.scale * 2.0, MAX_LOSS_SCALE),
                  state.scale),
        jnp.maximum(state.scale / 2.0, 1.0))
    return updates, LossScaleState(scale, jnp.where(grow, 0, good), inner)

  return optax.GradientTransformation(init, update)


def validate_numbers(config: Any) -> None:
  """Refuses NaN or infinite numbers anywhere in a config, and a bad seed.

  Runs before anything is built or written, so `--config.x=nan` is one line.

  Raises:
    InputError: naming the field.
  """
  def walk(node: Any, prefix: str) -> None:
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f'{prefix}{key}.')
      elif isinstance(value, float) and not math.isfinite(value):
        raise InputError(f'{prefix}{key}: must be a finite number, got '
                         f'{value}')
  walk(config.to_dict(), '')
  seed = config.seed
  if isinstance(seed, bool) or not isinstance(seed, int) or not (
      0 <= seed < 2**32):
    raise InputError(f'seed: must be an integer in [0, 2^32), got {seed!r}')


def check_schedule(config: Any) -> None:
  """The `train` periods: each an integer, positive where it divides."""
  for field, low in (('steps', 0), ('log_every', 1), ('checkpoint_every', 1),
                     ('eval_every', 0), ('keep_checkpoints', 1)):
    value = config.train[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      extra = ' (0 = only at the end)' if field == 'eval_every' else ''
      raise InputError(f'train.{field}: must be an integer >= {low}{extra}, '
                       f'got {value!r}')


def build(config: Any, devices: Sequence[Any] | None = None) -> Setup:
  """Validates the config and builds data, model, compressor and optimizer.

  Everything that can be wrong with the input fails here, before any compile.

  Args:
    config: a recipe's ConfigDict.
    devices: the devices to train data-parallel over (the batch is split
      between them); None means all of them (`jax.devices()`).

  Returns:
    The Setup (its mesh spans `devices`).
  """
  check_schedule(config)
  if config.compression.hidden_state.cell_bits and config.model.cell != 'lstm':
    raise InputError(
        'compression.hidden_state.cell_bits: only an lstm has a cell state; '
        f'model.cell is {config.model.cell!r} (use hidden_state.bits for h_t)')
  dataset = data.load(config.data)
  # In-model quantizers (hidden state, activations: a static input step is
  # calibrated from the training split).
  model = models.make(config.model, dataset.task, dataset.info,
                      **compression.model_hooks(config.compression,
                                                dataset.train))
  compressor = compression.make(config.compression)
  if config.needs_source and not (config.init_from or config.init_config):
    raise InputError(f'init_from: {config.name}.py compresses a trained run; '
                     'name its workdir with --config.init_from=<dir>')
  if (config.init_from and not config.init_config and not os.path.isdir(
      os.path.join(config.init_from, 'checkpoints'))):
    raise InputError(f'init_from: {config.init_from!r} holds no checkpoints/')
  tx = make_optimizer(config.optimizer, config.train.steps)
  if config.model.dtype == 'float16':
    tx = loss_scaled(tx, config.optimizer)
  devices = list(jax.devices() if devices is None else devices)
  n_dev = len(devices)
  for field in ('batch_size', 'eval_batch_size'):
    size = config.data[field]
    if size < 1 or size % n_dev:
      hint = (' (on CPU, train.py --cpu_devices sets the count)'
              if devices[0].platform == 'cpu' else '')
      raise InputError(f'data.{field}: {size} must be a positive multiple of '
                       f'the device count {n_dev}{hint}')
  n_train = len(dataset.train['y'])
  if config.data.batch_size > n_train:
    raise InputError(f'data.batch_size: {config.data.batch_size} exceeds the '
                     f'{n_train} training examples')
  # Auto axes: evaluation lets XLA propagate the data sharding through
  # gathers and scans (training runs under `data_parallel`'s shard_map).
  mesh = jax.make_mesh((n_dev,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)
  return Setup(dataset, model, compressor, tx, mesh)


def check(config: Any) -> None:
  """Every input check, before anything trains or is written.

  Builds the setup and runs the compressor on freshly initialized parameters
  (cheap, uncompiled): `init`, `apply`, `export`, and the accounting of the
  records, so a rank larger than a matrix, a block that does not divide a
  kernel, or a chain of methods whose result has no exact encoding is
  reported before any training (also of a source model trained first).
  """
  setup = build(config)
  early_exit_lib.check(config, setup.dataset.task)
  layers_lib.check(config.layer_drop, config.model.layers,
                   _layer0_width(config, setup.dataset.info),
                   config.model.hidden,
                   bool(config.init_from or config.init_config))
  example = jax.tree.map(lambda a: a[:2], setup.dataset.train)
  params = setup.model.init(jax.random.PRNGKey(0), example['x'],
                            example['lengths'])['params']
  chain = config.compression.methods or '(none)'
  try:
    params, state = setup.compressor.init(params)
    dense = jax.device_get(setup.compressor.apply(params, state))
    exports = setup.compressor.export(jax.device_get(params),
                                      jax.device_get(state))
  except InputError:
    raise
  except (ValueError, TypeError, AttributeError, KeyError) as e:
    raise InputError(f'compression.methods: the chain {chain!r} cannot be '
                     f'built in this order ({cli.first_line(e)}); the methods '
                     'apply last to first, like optax.chain') from None
  accounting.plan(dense, exports,
                  compression.method_names(config.compression), 'fixed')
  if budget_lib.enabled(config):
    # The smallest file comes from the smallest candidate width.
    spec = budget_lib.parse(config.compression.budget)
    least = min(budget_lib.widths(spec, int(config.model.hidden)))
    small_config = config.copy_and_resolve_references()
    with small_config.unlocked():
      small_config.model.hidden = least
    small = budget_lib.shrink_to(params, config.model.cell, least)
    budget_lib.check_run(small_config, setup.dataset.task, setup.dataset.info,
                         setup.compressor, small,
                         setup.compressor.init(small)[1],
                         4 * model_param_count(setup))


def init_state(config: Any, setup: Setup,
               teacher_width: int | None = None) -> TrainState:
  """The step-0 state: fresh parameters, optimizer and compression state.

  Args:
    config: the run's config.
    setup: its Setup.
    teacher_width: the teacher's hidden width, which sizes the hidden-state
      distillation projection; None takes it from `setup.teacher` (eval.py,
      which loads no teacher, passes it to restore a distilled student).

  Returns:
    The TrainState at step 0.
  """
  rng = jax.random.PRNGKey(config.seed)
  init_rng, rng = jax.random.split(rng)
  example = jax.tree.map(lambda a: a[:2], setup.dataset.train)
  params = setup.model.init(init_rng, example['x'], example['lengths'])['params']
  if config.init_from:
    params = restore_params(config.init_from, params,
                            layers_lib.removed_of(config),
                            budget_lib.width_of(config))
  params, comp_state = setup.compressor.init(params)
  aux = {}
  if teacher_width is None and setup.teacher is not None:
    teacher_width = setup.teacher.width
  if teacher_width is not None and config.distill.feature_weight:
    aux['projection'] = distillation.init_projection(
        jax.random.fold_in(init_rng, 1), config.model.hidden, teacher_width)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      opt_state=setup.tx.init({'model': params, 'aux': aux}),
      comp_state=comp_state, rng=rng, bad_step=jnp.full((), -1, jnp.int32),
      aux=aux)


def restore_params(workdir: str, target: Any,
                   removed: Sequence[int] = (), width: int = 0) -> Any:
  """The dense float parameters of `workdir`'s latest checkpoint.

  Only the parameters are read, so the source run may have used another
  optimizer; their structure and shapes must match `target`, once the
  source layers `removed` are dropped (`compression.layers.shrink_flat`)
  and, with a `width`, every layer is cut to its `width` strongest units
  (`compression.budget.shrink_to`).
  """
  params = restore_verified_params(workdir, 'init_from')
  if width:
    cell = read_run_config(workdir, 'init_from').model.cell
    params = budget_lib.shrink_to(params, cell, width)
  want = jax.tree_util.tree_flatten_with_path(target)[0]
  got = dict((compression.core.path_str(p), v) for p, v in
             jax.tree_util.tree_flatten_with_path(params)[0])
  got = layers_lib.shrink_flat(got, list(removed))
  for p, leaf in want:
    name = compression.core.path_str(p)
    if name not in got or np.shape(got[name]) != np.shape(leaf):
      raise InputError(
          f'init_from: {workdir} parameter {name} has shape '
          f'{np.shape(got.get(name)) if name in got else "(missing)"}, this '
          f'config needs {np.shape(leaf)}; the model configs differ')
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: jnp.asarray(got[compression.core.path_str(p)], leaf.dtype),
      target)


def source_params(config: Any, setup: Setup) -> Any:
  """The float parameters of `config.init_from`, shaped as `setup.model`'s
  (the structure comes from an initialization; the values are restored)."""
  example = jax.tree.map(lambda a: a[:2], setup.dataset.train)
  target = setup.model.init(jax.random.PRNGKey(0), example['x'],
                            example['lengths'])['params']
  return restore_params(config.init_from, target)


def calibration_loss(config: Any, setup: Setup):
  """Dense parameters -> mean loss on the first N training batches."""
  n = int(config.compression.calibration_batches)
  task = setup.dataset.task
  batches = [data.train_batch(setup.dataset.train, config.data.batch_size,
                              config.seed, i) for i in range(n)]

  @jax.jit
  def batch_loss(dense, batch):
    out = setup.model.apply({'params': dense}, batch['x'], batch['lengths'])
    return task_loss(task, out, batch)[0]

  def loss_fn(dense):
    return sum(float(batch_loss(dense, b)) for b in batches) / n

  return loss_fn


def calibrate(config: Any, setup: Setup, state: TrainState,
              workdir: str | None = None) -> TrainState:
  """Runs the compressor's `calibrate` on the first N training batches, and
  a byte budget's allocation (`compression.budget`) when the chain has one."""
  n = int(config.compression.calibration_batches)
  on_budget = budget_lib.enabled(config)
  if n <= 0:
    return state  # (A budget run without batches is refused by `check`.)
  loss_fn = calibration_loss(config, setup)
  comp_state = setup.compressor.calibrate(state.params, state.comp_state,
                                          loss_fn)
  if on_budget:
    comp_state = budget_lib.allocate_run(
        config, setup.dataset.task, setup.dataset.info, setup.compressor,
        state.params, comp_state, loss_fn, 4 * model_param_count(setup),
        workdir, log)
  return state._replace(comp_state=comp_state)


def data_parallel(fn, mesh: jax.sharding.Mesh):
  """`fn(replicated, comp_state, batch, teacher_params)`, one shard per device.

  Every device runs `fn` on its rows of the batch (sharded on the mesh axis
  'data'; the other arguments replicated) and the outputs are averaged over
  devices. Every task and distillation loss here is a mean over the examples
  of a batch, every device holds as many examples, and the compressors'
  penalties depend on the parameters only, so the average of the shards'
  objectives and gradients is the full batch's.

  An explicit `shard_map` rather than sharding propagation through `jit`:
  each device then runs exactly the one-device program on B / n rows, which
  keeps the recurrent backward's (T * B)-row weight-gradient products local
  (propagation all-gathered their inputs instead) and leaves one all-reduce
  of the gradients per step.

  Args:
    fn: returns a pytree of per-shard means (losses and gradients).
    mesh: the 1-D device mesh with axis 'data'.

  Returns:
    The data-parallel `fn`.
  """
  rep, rows = jax.P(), jax.P('data')
  # XLA:CPU runs a tuple all-reduce as one rendezvous per leaf, each a
  # cross-thread handshake, so on CPU the outputs travel as one flat vector;
  # GPU and TPU compilers combine all-reduces themselves.
  flatten = mesh.devices.flat[0].platform == 'cpu'

  def local(*args):
    out = fn(*args)
    if not flatten:
      return jax.lax.pmean(out, 'data')
    flat, unravel = jax.flatten_util.ravel_pytree(out)
    return unravel(jax.lax.pmean(flat, 'data'))

  # check_vma=False: gradients of the replicated parameters stay per-shard
  # (with it, JAX would already sum them over devices) and pmean averages.
  return jax.shard_map(local, mesh=mesh, in_specs=(rep, rep, rows, rep),
                       out_specs=rep, check_vma=False)


def make_train_step(setup: Setup, config: Any):
  """The jitted step `(state, batch, teacher_params) -> (state, metrics)`.

  The state is donated. The teacher (if any) runs inside the same step on the
  same batch, under stop_gradient; its parameters are an argument rather than
  a closure so they are not baked into the compiled program as constants.

  With `early_exit.enabled` the objective adds the weighted per-step loss of
  `compression.early_exit`. With `model.dtype = 'float16'` the loss is
  multiplied by the dynamic loss scale before the gradient and the gradients
  divided by it after (`loss_scaled`); a step whose gradients overflow is
  skipped (parameters, compression state unchanged) and the scale lowered.
  The whole step, backward pass included, traces under
  `model.matmul_precision`.
  """
  task = setup.dataset.task
  teacher = setup.teacher
  dcfg = config.distill
  ee = early_exit_lib.section_of(config)
  need_inter = ee is not None or (teacher is not None and bool(
      dcfg.feature_weight or dcfg.attention_weight))
  scaled = config.model.dtype == 'float16'
  precision = model_precision(setup)

  def forward(model, params, batch):
    if need_inter:
      out, variables = model.apply({'params': params}, batch['x'],
                                   batch['lengths'], mutable=['intermediates'])
      return out, variables['intermediates']
    return model.apply({'params': params}, batch['x'], batch['lengths']), None

  def loss_fn(trainable, comp_state, batch, teacher_params):
    params, aux = trainable['model'], trainable['aux']
    dense = setup.compressor.apply(params, comp_state)
    out, inter = forward(setup.model, dense, batch)
    loss, _ = task_loss(task, out, batch)
    objective = loss
    if teacher is not None:
      t_out, t_inter = forward(teacher.model, teacher_params, batch)
      t_out = jax.lax.stop_gradient(t_out)
      t_inter = jax.lax.stop_gradient(t_inter)
      objective = distillation.distillation_loss(
          task, dcfg, batch, out, t_out, inter, t_inter, aux.get('projection'))
    if ee is not None:
      objective = objective + ee.step_weight * early_exit_lib.step_loss(
          inter['step_logits'], batch['y'], batch['lengths'], ee.power)
    return objective + setup.compressor.penalty(params, comp_state), loss

  def grads_fn(trainable, comp_and_scale, batch, teacher_params):
    comp_state, scale = comp_and_scale
    if scale is None:
      (total, loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          trainable, comp_state, batch, teacher_params)
      return total, loss, grads

    def scaled_loss(trainable):
      total, loss = loss_fn(trainable, comp_state, batch, teacher_params)
      return total * scale, (total, loss)

    (_, (total, loss)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(
        trainable)
    return total, loss, jax.tree.map(lambda g: g / scale, grads)

  if setup.mesh.size > 1:
    grads_fn = data_parallel(grads_fn, setup.mesh)

  def step_fn(state: TrainState, batch, teacher_params):
    with model_cells.matmul_precision(precision):
      return step_body(state, batch, teacher_params)

  def step_body(state: TrainState, batch, teacher_params):
    trainable = {'model': state.params, 'aux': state.aux}
    scale = state.opt_state.scale if scaled else None
    total, loss, grads = grads_fn(trainable, (state.comp_state, scale), batch,
                                  teacher_params)
    updates, opt_state = setup.tx.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    params, comp_state = setup.compressor.update(
        trainable['model'], state.comp_state, grads['model'], state.step)
    grads_finite = jnp.isfinite(optax.global_norm(grads))
    if scaled:
      # Overflowing float16 gradients are expected: `loss_scaled` skips the
      # update and lowers the scale. Only a non-finite loss, or gradients
      # that overflow at scale 1, stop the run.
      finite = jnp.isfinite(total) & (grads_finite | (scale > 1.0))
      applied = grads_finite
    else:
      finite = jnp.isfinite(total) & grads_finite
      applied = True
    ok = finite & (state.bad_step < 0)
    keep = lambda new, old, cond=ok & applied: jax.tree.map(
        lambda n, o: jnp.where(cond, n, o), new, old)
    new_state = TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state, ok),
        comp_state=keep(comp_state, state.comp_state),
        rng=state.rng,
        bad_step=jnp.where((state.bad_step < 0) & ~finite, state.step,
                           state.bad_step),
        aux=keep(trainable['aux'], state.aux))
    metrics = {'loss': loss, 'objective': total,
               'grad_norm': optax.global_norm(grads),
               'param_norm': optax.global_norm(params)}
    if scaled:
      metrics['loss_scale'] = scale
    return new_state, metrics

  return jax.jit(step_fn, donate_argnums=0)


def put_batch(batch: dict, sharding: jax.sharding.NamedSharding) -> dict:
  """The global batch sharded over the mesh.

  Batches are a pure function of (seed, step), so every process of a
  multi-host job computes the same global batch and feeds only its rows.
  """
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  n, i = jax.process_count(), jax.process_index()

  def local(a):
    rows = a.shape[0] // n
    return jax.make_array_from_process_local_data(
        sharding, np.asarray(a[i * rows:(i + 1) * rows]), a.shape)

  return jax.tree.map(local, batch)


def model_precision(setup: Setup) -> str:
  """The model's `matmul_precision` ('default' for a module without one)."""
  return getattr(setup.model, 'matmul_precision', 'default')


def make_eval_fn(setup: Setup):
  """A jitted function `(dense_params, batch) -> dict of weighted sums`."""
  task = setup.dataset.task
  precision = model_precision(setup)

  @jax.jit
  def eval_fn(dense, batch):
    with model_cells.matmul_precision(precision):
      out = setup.model.apply({'params': dense}, batch['x'], batch['lengths'])
    return task_loss(task, out, batch, batch['weight'])[1]

  return eval_fn


def evaluate_params(setup: Setup, eval_fn, dense: Any, split: dict,
                    batch_size: int) -> dict:
  """The task's metrics of dense parameters over a whole split."""
  sharding = jax.sharding.NamedSharding(setup.mesh, jax.P('data'))
  totals: dict[str, float] = {}
  for batch in data.eval_batches(split, batch_size):
    sums = eval_fn(dense, put_batch(batch, sharding))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  return finish_metrics(setup.dataset.task, totals, setup.dataset.info)


def model_param_count(setup: Setup) -> int:
  """Parameters of the uncompressed model (shapes only, nothing computed)."""
  example = jax.tree.map(lambda a: a[:2], setup.dataset.train)
  shapes = jax.eval_shape(setup.model.init, jax.random.PRNGKey(0),
                          example['x'], example['lengths'])['params']
  return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))


def params_digest(dense: Any) -> str:
  """SHA-256 over every leaf's bytes in tree order: equal iff bit-identical."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(dense):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()


def size_report(dense: Any) -> dict:
  """Parameter counts and the float32 size of the dense model."""
  leaves = jax.tree.leaves(dense)
  total = int(sum(np.size(x) for x in leaves))
  nonzero = int(sum(int(np.count_nonzero(np.asarray(x))) for x in leaves))
  return {'params_total': total, 'params_nonzero': nonzero,
          'dense_bytes': 4 * total}


# ----------------------------------------------------------------------------
# Files of a run


class MetricsWriter:
  """Appends rows to metrics.jsonl; on resume, drops rows past the restart.

  A (step, split) row is written once: rerunning a finished run, or resuming
  one whose final row is already there, adds nothing. Non-finite values are
  written as null (JSON has no NaN).
  """

  def __init__(self, path: str, resume_step: int):
    self._path = path
    self._file = None
    self._seen: set[tuple[int, str]] = set()
    if jax.process_index():
      return  # Only process 0 writes files in a multi-host job.
    if os.path.exists(path):
      kept = []
      with open(path) as f:
        for line in f:
          try:
            row = json.loads(line)
          except json.JSONDecodeError:
            continue  # A line cut short by a kill.
          if not isinstance(row, dict) or not isinstance(
              row.get('step', 0), int):
            continue
          key = (row.get('step', 0), row.get('split'))
          if key[0] <= resume_step and key not in self._seen:
            self._seen.add(key)
            kept.append(line if line.endswith('\n') else line + '\n')
      files.atomic_write(path, ''.join(kept))
    self._file = open(path, 'a')

  def write(self, step: int, split: str, metrics: dict) -> None:
    if jax.process_index():
      return  # Only process 0 writes files in a multi-host job.
    if (int(step), split) in self._seen:
      return
    self._seen.add((int(step), split))
    row = {'step': int(step), 'split': split}
    row.update({k: float(v) for k, v in metrics.items()})
    self._file.write(json.dumps(json_safe(row), allow_nan=False) + '\n')
    self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


def write_json(path: str, obj: dict) -> None:
  """Writes JSON atomically (temp file + rename), so a kill never truncates.

  Non-finite floats are written as null, so the file is always valid JSON.
  A failed write (e.g. a full disk) removes its temp file and leaves `path`
  as it was.
  """
  if jax.process_index():
    return  # Only process 0 writes files in a multi-host job.
  files.atomic_write(path, json.dumps(json_safe(obj), indent=1,
                                     sort_keys=True, allow_nan=False) + '\n')


def config_label(config: Any) -> str:
  """'recipe.py:arg --config.x=y' for results.json."""
  label = f'{config.name}.py' + (f':{config.arg}' if config.arg else '')
  return (label + ' ' + config.overrides).strip()


# ----------------------------------------------------------------------------
# The run


def load_recipe(spec: str, field: str) -> Any:
  """The ConfigDict of a recipe named 'gru_baseline' or 'gru_baseline.py:arg'."""
  name, _, arg = spec.partition(':')
  name = os.path.splitext(os.path.basename(name))[0]
  try:
    module = importlib.import_module(f'configs.{name}')
  except ModuleNotFoundError:
    valid = sorted(os.path.splitext(f)[0] for f in os.listdir(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs'))
                   if f.endswith('.py') and not f.startswith(('_', 'common')))
    raise InputError(f'{field}: unknown recipe {name!r}; valid: '
                     + ', '.join(valid)) from None
  return module.get_config(arg or None)


def read_run_config(workdir: str, field: str) -> Any:
  """The config.json of a trained workdir, or None when it has none.

  A trained workdir's own config.json is the truth about its model and data:
  runs that start from it (`init_from`, `teacher.workdir`) and eval.py rebuild
  them from it, never from a recipe name.

  Args:
    workdir: the run directory.
    field: the config field that named it (for messages).

  Returns:
    The run's ConfigDict, or None when `workdir/config.json` does not exist.

  Raises:
    InputError: a config.json that is not a config of this project.
  """
  path = os.path.join(workdir, 'config.json')
  try:
    with open(path) as f:
      raw = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise InputError(f'{field}: {path} cannot be read ({type(e).__name__}: '
                     f'{str(e).splitlines()[0][:120]}); it is damaged') from None
  sections = ('data', 'model', 'compression', 'train', 'optimizer')
  if not isinstance(raw, dict) or not all(
      isinstance(raw.get(k), dict) for k in sections):
    raise InputError(f'{field}: {path} is damaged: it lacks the sections '
                     + ', '.join(sections))
  try:
    return ml_collections.ConfigDict(raw)
  except Exception as e:  # pylint: disable=broad-except
    raise InputError(f'{field}: {path} is damaged ({type(e).__name__})'
                     ) from None


def data_identity(data_cfg: Any) -> tuple[str, dict]:
  """(dataset name, keyword arguments with defaults filled): equal iff the
  same data."""
  kwargs = data_cfg.kwargs
  kwargs = kwargs.to_dict() if hasattr(kwargs, 'to_dict') else dict(kwargs or {})
  full = dict(data.default_kwargs(data_cfg.name))
  full.update({k: v for k, v in kwargs.items() if v is not None})
  return str(data_cfg.name), full


def _describe_data(data_cfg: Any) -> str:
  name, kwargs = data_identity(data_cfg)
  defaults = data.default_kwargs(name)
  set_kw = {k: v for k, v in kwargs.items() if defaults.get(k) != v}
  return name + (f' {set_kw}' if set_kw else '')


def check_same_data(run: Any, source: Any, field: str, where: str) -> None:
  """Refuses a source run (init or teacher) trained on other data."""
  if data_identity(run.data) != data_identity(source.data):
    raise InputError(
        f'{field}: {where} was trained on {_describe_data(source.data)}, this '
        f'run uses {_describe_data(run.data)}; give the same data flags or '
        'another source run')


def given_keys(config: Any) -> set[str]:
  """The config paths the command line set (`--config.<path>=...`)."""
  return set(cli.override_keys(str(config.overrides).split()))


# Model fields that fix the parameters' shapes: a run that starts from a
# trained source must build the same (compress.py takes them from it).
SHAPE_FIELDS = ('cell', 'hidden', 'layers', 'pooling', 'embed_dim')


def inherit(config: Any) -> Any:
  """Takes the data (and for compress.py the model) of the `init_from` run.

  The source's config.json is the truth: the run trains on the source's
  data unless the command line set data fields (the data must then still
  match). A recipe that builds its own model (every one but compress.py)
  must build the source's; a difference the command line did not ask for is
  one error line rather than a silently different model.

  Args:
    config: the run's config.

  Returns:
    The config, updated when `init_from` names a trained workdir.

  Raises:
    InputError: a damaged config.json, a source trained on other data, or a
      source whose model differs from the recipe's.
  """
  if not config.init_from:
    return config
  source = read_run_config(config.init_from, 'init_from')
  if source is None:
    return config
  given = given_keys(config)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if 'data.name' not in given:
      config.data.name = source.data.name
    for key in config.data.kwargs.keys():
      if f'data.kwargs.{key}' not in given:
        config.data.kwargs[key] = source.data.kwargs.get(key)
    for key in config.model.keys():
      if key not in source.model or f'model.{key}' in given:
        continue
      if config.needs_source or key not in SHAPE_FIELDS:
        config.model[key] = source.model[key]
      elif config.model[key] != source.model[key]:
        raise InputError(
            f'init_from: {config.init_from} holds a model with model.{key}='
            f'{source.model[key]!r}, this recipe builds {config.model[key]!r}'
            f' (give the recipe the same model, e.g. its cell= arg, or use '
            'configs/compress.py, which takes the model from the source)')
  check_same_data(config, source, 'init_from', config.init_from)
  return config


def with_run_data(recipe: Any, run: Any, model: bool) -> Any:
  """A source recipe (init or teacher) set to train on the run's data.

  Args:
    recipe: the source recipe's config.
    run: the run's config.
    model: also give the source the run's model (an init run, whose
      parameters the run starts from); a teacher keeps its own.

  Returns:
    The updated copy of `recipe`.
  """
  given = given_keys(run)
  recipe = recipe.copy_and_resolve_references()
  with recipe.unlocked():
    recipe.data.name = run.data.name
    for key in recipe.data.kwargs.keys():
      recipe.data.kwargs[key] = run.data.kwargs.get(key)
    for key in ('batch_size', 'eval_batch_size'):
      if f'data.{key}' in given:
        recipe.data[key] = run.data[key]
    if model:
      for key in recipe.model.keys():
        if key in run.model:
          recipe.model[key] = run.model[key]
    # The run's data (and model) flags carry on to the source's own sources
    # (deep_compression's stages) and show in its results.json label.
    kinds = ('data.', 'model.') if model else ('data.',)
    recipe.overrides = ' '.join(
        a for a in str(run.overrides).split()
        if any(k.startswith(kinds) for k in cli.override_keys([a])))
  return recipe


def prepare_init(config: Any, workdir: str) -> Any:
  """Trains the `init_config` run into `<workdir>/init` when it is missing.

  That source run trains on this run's data, with its model. An `init_from`
  the command line names is never trained into: it must hold a trained run
  (a sweep trains its shared baselines in an earlier stage).

  Returns:
    The config with `init_from` set to the (trained) source's absolute path.

  Raises:
    InputError: an `init_from` that holds no trained run, or an
      `<workdir>/init` trained on other data than this run's.
  """
  if not config.init_config:
    return config
  trained = lambda d: os.path.isdir(os.path.join(d, 'checkpoints')) and (
      os.path.exists(os.path.join(d, 'results.json')))
  if config.init_from:
    source = config.init_from
    if not trained(source):
      raise InputError(
          f'init_from: {source} holds no trained run (checkpoints/ and '
          f'results.json); train it first, or leave init_from empty to train '
          f'{config.init_config} into <workdir>/init')
  else:
    source = os.path.join(workdir, 'init')
    if not trained(source):
      log('training the initial model %s into %s', config.init_config, source)
      init = with_run_data(load_recipe(config.init_config, 'init_config'),
                           config, model=True)
      train_and_evaluate(init, source)
    saved = read_run_config(source, 'init_config')
    if saved is not None:
      check_same_data(config, saved, 'init_config', source)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.init_from = os.path.abspath(source)
  return config


def _layer0_width(config: Any, info: dict) -> int:
  """What the first recurrent layer reads: features, or the embedding."""
  if 'vocab_size' in info and 'input_dim' not in info:
    return int(config.model.embed_dim)
  return int(info.get('input_dim', config.model.embed_dim))


def prepare_layer_drop(config: Any) -> tuple[Any, dict]:
  """Removes whole layers of the `init_from` stack, least sensitive first.

  The sensitivities (`compression.layers`) are those of the source's float
  parameters, over `layer_drop.batches` training batches (batches as
  training draws them, a pure function of (seed, step), so a resumed run
  chooses the same layers). The returned config builds the shrunk model
  (`model.layers` less the removed ones, `layer_drop.removed` naming them),
  so its checkpoints and artifact hold only the kept layers.

  Args:
    config: the run's config after `prepare_init` (its model is the
      source's).

  Returns:
    (the config of the shrunk run, the results.json fields of the removal);
    the config unchanged and {} when `layer_drop.remove` is 0.
  """
  o = layers_lib.OPTIONS.parse(config.layer_drop)
  if not o.remove:
    return config, {}
  setup = build(config)
  task = setup.dataset.task
  params = source_params(config, setup)

  @jax.jit
  def grad_fn(p, batch):
    def loss(p):
      out = setup.model.apply({'params': p}, batch['x'], batch['lengths'])
      return task_loss(task, out, batch)[0]
    return jax.grad(loss)(p)

  batches = [data.train_batch(setup.dataset.train, config.data.batch_size,
                              config.seed, i) for i in range(o.batches)]
  tensors = layers_lib.tensor_sensitivity(grad_fn, params, batches)
  source_layers = int(config.model.layers)
  removed = layers_lib.parse_removed(o.removed) or layers_lib.choose(
      layers_lib.layer_sensitivity(tensors),
      layers_lib.removable(source_layers,
                           _layer0_width(config, setup.dataset.info),
                           int(config.model.hidden)), o.remove)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.layers = source_layers - len(removed)
    config.layer_drop.removed = ','.join(str(l) for l in removed)
  report = layers_lib.report(tensors, removed, source_layers)
  metric = f'test_{TASK_METRIC[task]}'
  try:
    with open(os.path.join(config.init_from, 'results.json')) as f:
      report[f'source_{metric}'] = json.load(f)[metric]
  except (OSError, ValueError, KeyError):
    pass  # A source without results still shrinks; only the row is missing.
  log('layer sensitivity %s: removing layers %s of %d',
      report['layer_sensitivity'], removed, source_layers)
  return config, report


def prepare_width(config: Any) -> Any:
  """Chooses a byte-budget run's hidden width (`compression.budget`).

  For each candidate width the source's float model is cut to that many
  units per layer (`budget.shrink_to`), and the budget's allocation is
  solved on it: the width's score is the loss increase of the cut model plus
  the least total sensitivity of the settings that fit the budget. The
  best-scoring width wins (a pure function of the source and the seed, so a
  resumed run chooses the same). The returned config builds that model
  (`model.hidden`, `compression.budget.width`); its teacher stays the
  source.

  Returns:
    The config of the run (unchanged without candidate widths).
  """
  if not budget_lib.enabled(config):
    return config
  spec = budget_lib.parse(config.compression.budget)
  hidden = int(config.model.hidden)
  if spec.width and spec.width != hidden:  # Given: only the model follows.
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.model.hidden = spec.width
    return config
  if spec.width or not spec.widths or not config.init_from:
    return config
  source = build(config)
  params = source_params(config, source)
  dense_bytes = 4 * model_param_count(source)
  base = None
  scores = []
  for width in budget_lib.widths(spec, hidden):
    trial = config.copy_and_resolve_references()
    with trial.unlocked():
      trial.model.hidden = width
      trial.compression.budget.width = width
    setup = build(trial)
    small = jax.tree.map(jnp.asarray, budget_lib.shrink_to(
        params, config.model.cell, width))
    loss_fn = calibration_loss(trial, setup)
    loss = loss_fn(small)
    base = loss if base is None else base
    _, state = setup.compressor.init(small)
    try:
      _, chosen, _ = budget_lib.allocate(
          spec, small, state[0], loss_fn, budget_lib.file_size_fn(
              trial, setup.dataset.task, setup.dataset.info,
              setup.compressor, small), dense_bytes, log=lambda s: None)
    except InputError:
      log('width %d: no allocation fits the budget', width)
      continue
    cost = max(loss - base, 0.0) + sum(max(c.sensitivity, 0.0)
                                       for c in chosen)
    log('width %d: loss increase %.4f + settings %.4f', width,
        max(loss - base, 0.0), cost - max(loss - base, 0.0))
    scores.append((cost, -width))
  if not scores:
    raise InputError('compression.budget: no candidate width fits the '
                     'budget; raise it or add smaller widths')
  width = -min(scores)[1]
  log('hidden width %d of %d chosen', width, hidden)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.hidden = width
    config.compression.budget.width = width
  return config


def teacher_dir(config: Any, workdir: str) -> str:
  """Where the teacher of a distillation run lives.

  `teacher.workdir` when set; else the run's `init_from` when the teacher
  recipe is the init recipe (the model fine-tuned from is the teacher, so it
  trains once); else `<workdir>/teacher`.
  """
  if config.teacher.workdir:
    return config.teacher.workdir
  if (config.init_from and config.teacher.config
      and config.teacher.config == config.init_config):
    return config.init_from
  return os.path.join(workdir, 'teacher')


def teacher_width(config: Any, workdir: str) -> int | None:
  """The teacher's hidden width (sizes the hidden-state projection), or None
  when the run has no teacher or no hidden-state loss."""
  if not (config.teacher.config or config.teacher.workdir) or not (
      config.distill.feature_weight):
    return None
  t_dir = teacher_dir(config, workdir)
  t_config = read_run_config(t_dir, 'teacher.workdir')
  if t_config is None:
    raise InputError(f'teacher.workdir: {t_dir} holds no trained teacher '
                     '(config.json)')
  return int(t_config.model.hidden)


def prepare_teacher(config: Any, student: Setup, workdir: str
                    ) -> Teacher | None:
  """Loads the teacher, training it first when its workdir has no checkpoint.

  A trained teacher workdir is rebuilt from its own config.json and must have
  been trained on the student's data; a teacher recipe trained here trains
  on the student's data.
  """
  if not (config.teacher.config or config.teacher.workdir):
    return None
  distillation.validate(config.distill)
  t_dir = teacher_dir(config, workdir)
  t_config = read_run_config(t_dir, 'teacher.workdir')
  trained = t_config is not None and os.path.exists(
      os.path.join(t_dir, 'results.json'))
  if t_config is not None:
    check_same_data(config, t_config, 'teacher.workdir', t_dir)
  elif not config.teacher.config:
    raise InputError(f'teacher.workdir: {t_dir} holds no trained teacher '
                     '(config.json) and teacher.config names no recipe')
  else:
    t_config = with_run_data(load_recipe(config.teacher.config,
                                         'teacher.config'), config, model=False)
  t_setup = build(t_config)
  if t_setup.dataset.task != student.dataset.task or (
      t_setup.dataset.info.get('num_classes') !=
      student.dataset.info.get('num_classes')):
    raise InputError(f'teacher: {t_dir} solves '
                     f'{t_setup.dataset.name}/{t_setup.dataset.task}, the '
                     f'student {student.dataset.name}/{student.dataset.task}')
  if config.distill.attention_weight and not (
      config.model.pooling == t_config.model.pooling == 'attention'):
    raise InputError('distill.attention_weight: needs model.pooling = '
                     "'attention' in both student and teacher")
  if not trained:
    log('training the teacher %s into %s', config.teacher.config, t_dir)
    train_and_evaluate(t_config, t_dir)
  target = init_state(t_config, t_setup)
  t_mngr = checkpoint_manager(t_dir, t_config, read_only=True)
  try:
    state = restore_latest(t_mngr, target, t_dir)
  except InputError as e:
    raise InputError(f'teacher: {e}') from None
  finally:
    t_mngr.close()
  if state is None:
    raise InputError(f'teacher.workdir: {t_dir} holds no checkpoint')
  with open(os.path.join(t_dir, 'results.json')) as f:
    t_results = json.load(f)
  dense = jax.device_get(t_setup.compressor.apply(state.params, state.comp_state))
  return Teacher(t_setup.model, dense, int(t_config.model.hidden), t_results)


def early_exit_results(config: Any, setup: Setup, dense: Any, workdir: str
                       ) -> tuple[dict, Any]:
  """Chooses the exit threshold on the training split, evaluates the test
  split with early exit, and writes `early_exit.png`.

  Returns:
    (the results.json fields of `compression.early_exit`, the config with
    `early_exit.threshold` set to the chosen threshold, which the artifact's
    header records).
  """
  ee = early_exit_lib.section_of(config)
  fn = early_exit_lib.step_logits_fn(setup.model, dense)
  size = config.data.eval_batch_size
  train_out = early_exit_lib.step_outputs(
      fn, data.eval_batches(setup.dataset.train, size))
  tau = (early_exit_lib.choose_threshold(train_out, ee.target) if ee.target
         else ee.threshold)
  test_out = early_exit_lib.step_outputs(
      fn, data.eval_batches(setup.dataset.test, size))
  fields = early_exit_lib.report(test_out, tau)
  acc, frac = early_exit_lib.exit_metrics(train_out, [tau])
  fields.update(early_exit_train_accuracy=float(acc[0]),
                train_steps_fraction=float(frac[0]),
                full_read_train_accuracy=early_exit_lib.full_read_accuracy(
                    train_out))
  if not jax.process_index():
    files.atomic_write(os.path.join(workdir, 'early_exit.png'),
                       early_exit_lib.plot_png(fields, config_label(config)))
  fields['early_exit_plot'] = 'early_exit.png'
  log('early exit: threshold %.6g reads %.1f%% of the steps, test accuracy '
      '%.4f (full read %.4f)', tau, 100 * fields['mean_steps_fraction'],
      fields['early_exit_accuracy'], fields['full_read_accuracy'])
  chosen = config.copy_and_resolve_references()
  with chosen.unlocked():
    chosen.early_exit.threshold = float(tau)
  return fields, chosen


def train_and_evaluate(config: Any, workdir: str) -> dict:
  """Trains, evaluates and writes the run's files; resumes from checkpoints.

  Args:
    config: a ConfigDict from a recipe in configs/.
    workdir: the run directory (created if missing).

  Returns:
    The results dict also written to `workdir/results.json`.
  """
  validate_numbers(config)
  config = inherit(config)  # The init_from run's model and data.
  check(config)  # Fails on bad input before anything runs or is written.
  config = prepare_init(config, workdir)
  config, drop_results = prepare_layer_drop(config)
  config = prepare_width(config)
  setup = build(config)
  setup = setup._replace(teacher=prepare_teacher(config, setup, workdir))
  os.makedirs(workdir, exist_ok=True)
  task, info = setup.dataset.task, setup.dataset.info
  metric = TASK_METRIC[task]
  steps = int(config.train.steps)

  state = init_state(config, setup)
  mngr = checkpoint_manager(workdir, config)
  _check_same_run(config, workdir, mngr.latest_step() is not None)
  restored = restore_latest(mngr, state, workdir, set_aside=True)
  # The newest checkpoint that verified (a NaN stop names it).
  last_good = [None if restored is None else int(restored.step)]
  if restored is not None:
    state = restored
    log('resumed from checkpoint at step %d', int(state.step))
  else:
    state = calibrate(config, setup, state, workdir)
  start_step = int(state.step)
  replicated = jax.sharding.NamedSharding(setup.mesh, jax.P())
  batch_sharding = jax.sharding.NamedSharding(setup.mesh, jax.P('data'))
  state = jax.device_put(state, replicated)

  write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  writer = MetricsWriter(os.path.join(workdir, 'metrics.jsonl'), start_step)
  prior = _read_progress(workdir, start_step)
  prior_seconds = prior['train_seconds']
  train_step = make_train_step(setup, config)
  teacher_params = setup.teacher.params if setup.teacher else {}
  eval_fn = make_eval_fn(setup)

  def dense_of(s):
    return setup.compressor.apply(s.params, s.comp_state)

  def check_finite(s):
    bad = int(s.bad_step)
    if bad >= 0:
      writer.close()
      mngr.close()
      kept = (f'The last good checkpoint (step {last_good[0]}) is kept in '
              f'{workdir}/checkpoints' if last_good[0] is not None else
              'No checkpoint was saved')
      raise FloatingPointError(
          f'loss or gradient became NaN/inf at step {bad}; stopped. {kept}')

  def save(s):
    check_finite(s)
    step = int(s.step)
    try:
      # The digest goes to disk first: a checkpoint never lacks one, and a
      # full disk stops here with the earlier checkpoints untouched.
      checkpoints.record_digest(mngr, workdir, step,
                               checkpoints.state_digest(s))
      mngr.save(step, args=ocp.args.StandardSave(s), force=True)
      last_good[0] = step
      _write_progress(
          workdir, step, prior_seconds + run_seconds(),
          rate if rate == rate else prior['steps_per_second'],
          (compile_seconds if compile_seconds is not None
           else prior['compile_seconds']))
    except Exception as e:  # Orbax wraps file errors in its own types.
      writer.close()
      try:
        mngr.close()
      except Exception:  # pylint: disable=broad-except
        pass
      raise cli.as_os_error(e, str(mngr.directory)) from None

  t_start = time.perf_counter()
  run_seconds = lambda: time.perf_counter() - t_start
  t_window, steps_window = time.perf_counter(), 0
  compile_seconds = None
  rate = float('nan')
  for step in range(start_step, steps):
    batch = data.train_batch(setup.dataset.train, config.data.batch_size,
                             config.seed, step)
    state, m = train_step(state, put_batch(batch, batch_sharding),
                          teacher_params)
    if compile_seconds is None:
      jax.block_until_ready(state.step)
      compile_seconds = run_seconds()
      t_window, steps_window = time.perf_counter(), 0
    else:
      steps_window += 1
    done = step + 1
    if done % config.train.log_every == 0 or done == steps:
      m = jax.device_get(m)
      check_finite(state)
      if steps_window:
        rate = steps_window / (time.perf_counter() - t_window)
      eta = (steps - done) / rate if rate == rate and rate > 0 else float('nan')
      log('step %d/%d  loss %.4f  |g| %.3f  %.1f steps/s  %s left',
                   done, steps, float(m['loss']), float(m['grad_norm']), rate,
                   _fmt_seconds(eta))
      writer.write(done, 'train', {**m, 'steps_per_second': rate})
    if config.train.eval_every and done % config.train.eval_every == 0 and done < steps:
      check_finite(state)
      ev = evaluate_params(setup, eval_fn, dense_of(state), setup.dataset.test,
                           config.data.eval_batch_size)
      log('step %d  test %s %.4f', done, metric, ev[metric])
      writer.write(done, 'test', ev)
    if done % config.train.checkpoint_every == 0 or done == steps:
      save(state)
  if mngr.latest_step() != steps:  # E.g. post-training compression: 0 steps.
    save(state)
  mngr.wait_until_finished()
  mngr.close()
  train_seconds = prior_seconds + run_seconds()

  budget_results = {}
  if budget_lib.enabled(config):
    # The file must fit: checked (and if need be repaired) before the final
    # evaluation, so the metrics are the written model's.
    comp_state, budget_results = budget_lib.fit_run(
        config, task, info, setup.compressor, jax.device_get(state.params),
        jax.device_get(state.comp_state), workdir, log)
    state = state._replace(comp_state=comp_state)
  dense = jax.device_get(dense_of(state))
  ev = evaluate_params(setup, eval_fn, dense, setup.dataset.test,
                       config.data.eval_batch_size)
  writer.write(steps, 'test', ev)
  writer.close()
  exit_results, export_config = {}, config
  if early_exit_lib.section_of(config) is not None:
    exit_results, export_config = early_exit_results(config, setup, dense,
                                                     workdir)
  sizes = size_report(dense)
  # The reference size is the uncompressed model's: float32 for every
  # parameter of the model as the config defines it (a low-rank model's
  # dense view holds factors, which are fewer).
  sizes['dense_bytes'] = 4 * model_param_count(setup)
  trained = steps - start_step
  results = {
      'config': config_label(config),
      'task': task,
      'dataset': setup.dataset.name,
      f'test_{metric}': ev[metric],
      'test_loss': ev['loss'],
      **sizes,
      # The artifact <workdir>/model.rnnc: compressed_bytes is its size on
      # disk, compression_ratio = dense_bytes / compressed_bytes; also
      # entropy_coded_bytes and fixed_width_bytes (payload sizes).
      **export_lib.write_run(export_config, task, info, setup.compressor,
                             jax.device_get(state.params),
                             jax.device_get(state.comp_state), dense, workdir),
      'train_seconds': train_seconds,
      'steps': steps,
      # A resume that trained (almost) nothing keeps the earlier measures.
      'steps_per_second': rate if trained > 1 else prior['steps_per_second'],
      'compile_seconds': (compile_seconds if compile_seconds is not None
                          else prior['compile_seconds']),
      'resumed_from_step': start_step,
      'devices': setup.mesh.size,
      'platform': setup.mesh.devices.flat[0].platform,
      'params_sha256': params_digest(state.params),
  }
  results['compression_ratio'] = (results['dense_bytes']
                                  / results['compressed_bytes'])
  if task == 'forecasting':
    results['naive_rmse'] = ev['naive_rmse']
  results.update(compression.report(config.compression, state.comp_state,
                                    dense, config.model))
  results.update(budget_results)
  results.update(drop_results)
  results.update(exit_results)
  if setup.teacher is not None:
    key = f'test_{metric}'
    results[f'teacher_{key}'] = setup.teacher.results[key]
    results['teacher_dense_bytes'] = setup.teacher.results['dense_bytes']
    if config.distill.scratch:
      scratch = config.copy_and_resolve_references()
      with scratch.unlocked():
        scratch.teacher.config = ''
        scratch.teacher.workdir = ''
      s_dir = os.path.join(workdir, 'scratch')
      log('training the same student without a teacher into %s', s_dir)
      results[f'scratch_{key}'] = train_and_evaluate(scratch, s_dir)[key]
  write_json(os.path.join(workdir, 'results.json'), _json_safe(results))
  log('test %s %.4f  (%d params, %.1f s)', metric, ev[metric],
               sizes['params_total'], train_seconds)
  return results


def log(fmt: str, *args: Any) -> None:
  """One progress line on stdout (absl's INFO is left to the libraries)."""
  if jax.process_index():
    return
  print(time.strftime('%H:%M:%S ') + (fmt % args if args else fmt), flush=True)


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _check_same_run(config: Any, workdir: str, resuming: bool) -> None:
  """Refuses to resume a checkpoint that another config wrote.

  Variants of one recipe (`gru_qat.py:bits=8` and `:bits=4`) have checkpoints
  of the same structure, so resuming the wrong one would go unnoticed.
  """
  if not resuming:
    return
  saved = read_run_config(workdir, 'workdir')
  if saved is None:
    return
  before = _flat(saved.to_dict())
  now = _flat(json.loads(json.dumps(config.to_dict())))
  for key in ('init_from', 'teacher.workdir'):  # The same place, spelt apart.
    for flat in (before, now):
      if flat.get(key):
        flat[key] = os.path.realpath(flat[key])
  ignore = ('overrides', 'arg', 'train.log_every', 'train.eval_every')
  for key in sorted(set(before) | set(now)):
    if key in ignore or key.startswith('train.checkpoint'):
      continue
    if before.get(key) != now.get(key):
      raise InputError(
          f'workdir {workdir}: holds a run with {key}={before.get(key)!r}, '
          f'this config has {now.get(key)!r}; use another --workdir')


def json_safe(obj: Any) -> Any:
  """NaN and infinity are not JSON: `obj` with them as None (recursively)."""
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  return obj


_json_safe = json_safe


def _write_progress(workdir: str, step: int, seconds: float,
                    steps_per_second: float | None = None,
                    compile_seconds: float | None = None) -> None:
  """Records the training time (and speed) up to a checkpoint's step."""
  write_json(os.path.join(workdir, 'progress.json'),
             {'step': step, 'train_seconds': seconds,
              'steps_per_second': steps_per_second,
              'compile_seconds': compile_seconds})


def _read_progress(workdir: str, step: int) -> dict[str, float]:
  """What a resumed run had measured before `step` (zeros / NaN if fresh).

  Returns:
    {'train_seconds', 'steps_per_second', 'compile_seconds'}; the latter two
    NaN when unknown.
  """
  out = {'train_seconds': 0.0, 'steps_per_second': float('nan'),
         'compile_seconds': float('nan')}
  try:
    with open(os.path.join(workdir, 'progress.json')) as f:
      p = json.load(f)
    if not step or int(p['step']) != step:
      return out
    for key in out:
      if isinstance(p.get(key), (int, float)) and math.isfinite(p[key]):
        out[key] = float(p[key])
  except (OSError, ValueError, KeyError, TypeError):
    pass
  return out


def _fmt_seconds(s: float) -> str:
  if not math.isfinite(s):
    return '?'
  return f'{s:.0f}s' if s < 120 else f'{s / 60:.1f}min'


# ----------------------------------------------------------------------------
# Command line (the flags and their handling live in cli.py)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  # Both before anything touches a device.
  cli.configure_cpu_devices_from_flag()
  cli.initialize_distributed_from_flags()
  config = cli.config_from_flags()
  workdir = cli.WORKDIR_FLAG.value or os.path.join('runs', config.name or 'run')
  cli.run_cli(functools.partial(train_and_evaluate, config, workdir))


if __name__ == '__main__':
  cli.define_distributed_flags()
  flags.adopt_module_key_flags(cli)  # --help lists them.
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)
