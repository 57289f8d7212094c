"""Task losses and metrics: what a model's output is scored by.

`task_loss` is the training loss of each task and the per-example sums its
metrics are made of; `finish_metrics` turns sums gathered over a whole split
into the reported numbers (`TASK_METRIC` names the headline one). Training,
evaluation and the artifact's evaluation all score through these.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from compression.errors import InputError

TASK_METRIC = {
    'classification': 'accuracy',
    'forecasting': 'rmse',
    'language_model': 'bits_per_char',
}


def task_loss(task: str, out: jax.Array, batch: dict[str, jax.Array],
              weight: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """The training loss of a task and per-example sums for metrics.

  Args:
    task: 'classification' | 'forecasting' | 'language_model'.
    out: the model output (logits or predictions), float32.
    batch: 'y' targets (and 'x', 'lengths').
    weight: (B,) example weights (0 for padding rows); None means all 1.

  Returns:
    (mean loss over weighted examples, dict of weighted sums: 'loss', 'count'
    and the task's metric numerator).
  """
  out = out.astype(jnp.float32)
  y = batch['y']
  w = jnp.ones(y.shape[0], jnp.float32) if weight is None else weight
  if task == 'classification':
    per = optax.softmax_cross_entropy_with_integer_labels(out, y)
    sums = {'correct': jnp.sum(w * (jnp.argmax(out, -1) == y))}
    count = jnp.sum(w)
  elif task == 'forecasting':
    sq = jnp.mean(jnp.square(out - y), axis=-1)
    per = sq
    sums = {'sq_err': jnp.sum(w * sq * y.shape[-1])}
    count = jnp.sum(w)
  elif task == 'language_model':
    # Mean over steps within a sequence; every step of a window is real.
    per = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y), -1)
    sums = {'nats': jnp.sum(w * per * y.shape[-1])}
    count = jnp.sum(w)
  else:
    raise InputError(f'task: unknown {task!r}; valid: ' + ', '.join(TASK_METRIC))
  sums['loss'] = jnp.sum(w * per)
  sums['count'] = count
  loss = sums['loss'] / jnp.maximum(count, 1.0)
  return loss, sums


def finish_metrics(task: str, sums: dict[str, float], info: dict) -> dict:
  """Turns summed statistics into the task's reported metrics."""
  count = max(float(sums['count']), 1.0)
  metrics = {'loss': float(sums['loss']) / count}
  if task == 'classification':
    metrics['accuracy'] = float(sums['correct']) / count
  elif task == 'forecasting':
    horizon = int(info['horizon'])
    # Targets are normalized; report RMSE in the series' own units.
    mse = float(sums['sq_err']) / (count * horizon)
    metrics['rmse'] = math.sqrt(mse) * float(info['std'])
    metrics['naive_rmse'] = float(info['naive_rmse'])
  else:
    seq_len = int(info['max_len'])
    metrics['bits_per_char'] = float(sums['nats']) / (count * seq_len) / math.log(2)
  return metrics
