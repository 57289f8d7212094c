r"""Early exit over time: a classifier that stops reading once it is confident.

A recurrent classifier with last-state pooling applies its head to every
hidden state h_t, not only the last (`models.sequence.Classifier` sows these
per-step logits as `step_logits`, (B, T, C); no parameter is added: the head
that reads the last state reads every state). At inference the sequence is
read step by step and the prediction is taken at the first step whose
confidence, the largest softmax probability, exceeds a threshold tau
(strictly); a sequence that never gets there is read to its end, where the
prediction is the ordinary classifier's. tau = 1 never exits early.

Training (`step_loss`): the loss adds to the task's own (the last state's
cross-entropy, or the distillation objective) `step_weight` times a weighted
mean of the per-step cross-entropies over each sequence's valid steps,

  L_steps = sum_{t < len} w_t CE(head(h_t), y),
  w_t = (t + 1)^power / sum_{s < len} (s + 1)^power,

so with `power` = 1 (the default) the weight grows linearly with the steps
read: later states have seen more of the sequence and are held to a higher
standard, while early ones still learn to be right when they can (and so to
be unconfident when they cannot); `power` = 0 weights every step alike.

Choosing tau (`choose_threshold`): on the training split, among the
candidate thresholds (every distinct per-step confidence, at most 2048 of
them by quantiles, and 1), the smallest one whose early-exit training
accuracy is at least `target` times the full-read training accuracy and
whose mean confidence at the exit step is at least `target` (a model that
fits its training split is right on it almost whatever the threshold, so
its own confidence has to vouch for the exits too); the smallest qualifying
threshold reads the fewest steps, since a sequence's exit step never moves
earlier as tau grows. `target` = 0 uses the fixed `threshold` instead.

Reported (results.json, and `eval.py --artifact` of the run's artifact, whose
header stores tau): `early_exit_threshold`, `early_exit_accuracy` (test
accuracy with early exit), `mean_steps_fraction` (the mean over test
sequences of steps read / steps available), `early_exit_curve` (test
accuracy and mean steps fraction at each threshold of `CURVE_THRESHOLDS` and
tau: the accuracy-against-steps curve of the threshold), `prefix_curve` (the
test accuracy when every sequence is cut to a fixed fraction of its steps),
and the plot of both, `early_exit.png` in the workdir.

Compressed models exit the same way: the per-step head is the model's own
head, so a quantized, pruned, factored or distilled classifier reads its
per-step logits from its compressed weights (train with `enabled` on while
compressing, so the steps keep learning).
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from compression import core
from compression.errors import InputError

FIELD = 'early_exit'
# Thresholds of the reported accuracy-against-steps curve (the chosen one is
# added): a fixed grid, so a run and its artifact report the same curve.
CURVE_THRESHOLDS = tuple(sorted(
    {round(0.1 * k, 2) for k in range(1, 10)}
    | {round(1.0 - 10.0 ** (-k / 4), 8) for k in range(4, 29)} | {1.0}))
PREFIX_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 11))
_MAX_CANDIDATES = 2048

OPTIONS = core.Options(
    FIELD,
    core.Option('enabled', False, 'Train a head on every step and exit early '
                '(classification, pooling last).'),
    core.Option('power', 1.0, 'Per-step loss weight (t + 1)^power over valid '
                'steps (0 = uniform).', core.at_least(0)),
    core.Option('step_weight', 1.0, 'Weight of the per-step loss added to the '
                "task's.", core.at_least(0)),
    core.Option('target', 0.999, 'Choose tau: the smallest with early-exit '
                'training accuracy >= target x full-read training accuracy '
                'and mean confidence at exit >= target; 0 = use `threshold`.',
                core.in_range(0, 1)),
    core.Option('threshold', 0.9, 'Fixed confidence threshold tau in (0, 1] '
                'when target = 0 (1 = never exit early).',
                core.in_range(0, 1, lo_open=True)),
)
config = OPTIONS.config


def section_of(run_config: Any) -> Any | None:
  """The parsed `early_exit` section of a run config, or None when off.

  A config.json written before the section existed has none: its run had
  no early exit.
  """
  if FIELD not in run_config:
    return None
  o = OPTIONS.parse(run_config[FIELD])
  return o if o.enabled else None


def check(run_config: Any, task: str) -> None:
  """One error line for a bad section, or early exit on a model without it.

  Raises:
    InputError: an option out of range, or `enabled` with a task other than
      classification or a pooling other than 'last'.
  """
  o = OPTIONS.parse(run_config[FIELD])
  if not o.enabled:
    return
  if task != 'classification':
    raise InputError(f'{FIELD}.enabled: early exit classifies; the task is '
                     f'{task!r}')
  if run_config.model.pooling != 'last':
    raise InputError(f"{FIELD}.enabled: needs model.pooling = 'last' (the "
                     'head that reads the last state reads every state); got '
                     f'{run_config.model.pooling!r}')


# ----------------------------------------------------------------------------
# Training


def step_weights(lengths: jax.Array, steps: int, power: float) -> jax.Array:
  """(B, T) weights (t + 1)^power on valid steps, each row summing to 1."""
  t = jnp.arange(steps, dtype=jnp.float32)
  valid = t[None, :] < lengths[:, None]
  w = jnp.where(valid, (t[None, :] + 1.0) ** power, 0.0)
  return w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-12)


def step_loss(step_logits: jax.Array, labels: jax.Array, lengths: jax.Array,
              power: float) -> jax.Array:
  """The mean over examples of the weighted per-step cross-entropy.

  Args:
    step_logits: (B, T, C) logits of the head at every step.
    labels: (B,) int class ids.
    lengths: (B,) valid steps.
    power: the weight exponent (see the module docstring).

  Returns:
    A scalar.
  """
  steps = step_logits.shape[1]
  ce = optax.softmax_cross_entropy_with_integer_labels(
      step_logits.astype(jnp.float32),
      jnp.broadcast_to(labels[:, None], step_logits.shape[:2]))
  w = step_weights(lengths, steps, power)
  return jnp.mean(jnp.sum(w * ce, axis=1))


# ----------------------------------------------------------------------------
# Inference


class StepOutputs(NamedTuple):
  """Per-step predictions of the real examples of a split (numpy)."""
  conf: np.ndarray  # (N, T) largest softmax probability at each step.
  pred: np.ndarray  # (N, T) argmax class at each step.
  lengths: np.ndarray  # (N,) valid steps.
  labels: np.ndarray  # (N,) true classes.


def step_outputs(step_logits_fn: Callable[[Any, Any], Any],
                 batches: Iterable[dict]) -> StepOutputs:
  """Confidences and predictions at every step of every real example.

  Args:
    step_logits_fn: `(x, lengths) -> (B, T, C)` per-step logits.
    batches: `data.eval_batches` output (padding rows have weight 0).

  Returns:
    The StepOutputs of the examples with weight > 0, in order.
  """
  conf, pred, lengths, labels = [], [], [], []
  for b in batches:
    logits = np.asarray(step_logits_fn(b['x'], b['lengths']), np.float32)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
    keep = np.asarray(b['weight']) > 0
    conf.append(probs.max(-1)[keep])
    pred.append(probs.argmax(-1)[keep])
    lengths.append(np.asarray(b['lengths'])[keep])
    labels.append(np.asarray(b['y'])[keep])
  return StepOutputs(np.concatenate(conf), np.concatenate(pred),
                     np.concatenate(lengths), np.concatenate(labels))


def exit_steps(out: StepOutputs, thresholds: np.ndarray) -> np.ndarray:
  """(K, N) index of the step each example exits at, per threshold.

  The first valid step whose confidence exceeds the threshold, else the
  sequence's last step (lengths of 0 count as 1 step read).
  """
  conf, lengths = out.conf, np.maximum(out.lengths, 1)
  steps = conf.shape[1]
  valid = np.arange(steps)[None, :] < lengths[:, None]
  last = lengths - 1
  # A running maximum: the exit step of threshold c is the first t whose
  # running maximum exceeds c, so one search per example serves every c.
  running = np.maximum.accumulate(np.where(valid, conf, -np.inf), axis=1)
  thresholds = np.asarray(thresholds, np.float64)
  idx = np.empty((thresholds.size, conf.shape[0]), np.int64)
  for n in range(conf.shape[0]):
    first = np.searchsorted(running[n, :last[n] + 1], thresholds, side='right')
    idx[:, n] = np.minimum(first, last[n])
  return idx


def exit_metrics(out: StepOutputs, thresholds: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(accuracy, mean steps fraction) with early exit at each threshold."""
  idx = exit_steps(out, thresholds)
  n = np.arange(idx.shape[1])
  correct = out.pred[n[None, :], idx] == out.labels[None, :]
  fraction = (idx + 1) / np.maximum(out.lengths, 1)[None, :]
  return correct.mean(axis=1), fraction.mean(axis=1)


def full_read_accuracy(out: StepOutputs) -> float:
  """The accuracy of the prediction at each sequence's last step."""
  last = np.maximum(out.lengths, 1) - 1
  return float(np.mean(out.pred[np.arange(last.size), last]
                       == out.labels))


def candidates(out: StepOutputs) -> np.ndarray:
  """Candidate thresholds: the distinct valid-step confidences (at most 2048,
  by quantiles) and 1."""
  valid = np.arange(out.conf.shape[1])[None, :] < out.lengths[:, None]
  values = np.unique(out.conf[valid].astype(np.float64))
  if values.size > _MAX_CANDIDATES:
    values = np.unique(np.quantile(values, np.linspace(0, 1,
                                                       _MAX_CANDIDATES)))
  return np.unique(np.concatenate([values[values > 0], [1.0]]))


def exit_confidence(out: StepOutputs, thresholds: np.ndarray) -> np.ndarray:
  """(K,) mean confidence at the exit step, per threshold."""
  idx = exit_steps(out, thresholds)
  n = np.arange(idx.shape[1])
  return out.conf[n[None, :], idx].mean(axis=1)


def choose_threshold(out: StepOutputs, target: float) -> float:
  """The smallest candidate tau meeting the target on the training split.

  Two conditions, both at the `target` level:

  * accuracy: the early-exit training accuracy is at least `target` times
    the full-read training accuracy;
  * confidence: the mean confidence at the exit step is at least `target`.
    A model that fits its training split is right on it at almost any
    threshold (JapaneseVowels' GRU reads 11% of the steps at tau = 0.67
    and loses 1 of 270 training examples, but 12 of 370 test ones), so the
    labels alone pick thresholds that are far too low; the confidence at
    exit, the model's own estimate of how often it is right there, has to
    reach the target as well.

  Args:
    out: the training split's StepOutputs.
    target: in (0, 1].

  Returns:
    tau in (0, 1]; 1.0 (never exit early) when nothing smaller qualifies.
  """
  cand = candidates(out)
  acc, _ = exit_metrics(out, cand)
  conf = exit_confidence(out, cand)
  need = target * full_read_accuracy(out)
  # A little slack for float rounding of the products.
  ok = np.flatnonzero((acc >= need - 1e-12) & (conf >= target - 1e-12))
  return float(cand[ok[0]]) if ok.size else 1.0


def report(test: StepOutputs, threshold: float) -> dict[str, Any]:
  """The early-exit fields of a split (see the module docstring)."""
  acc, frac = exit_metrics(test, np.array([threshold]))
  grid = np.unique(np.array(CURVE_THRESHOLDS + (threshold,)))
  c_acc, c_frac = exit_metrics(test, grid)
  last = np.maximum(test.lengths, 1)
  p_acc = []
  for f in PREFIX_FRACTIONS:
    idx = np.maximum(np.ceil(f * last - 1e-9).astype(np.int64), 1) - 1
    p_acc.append(float(np.mean(test.pred[np.arange(last.size), idx]
                               == test.labels)))
  return {
      'early_exit_threshold': float(threshold),
      'early_exit_accuracy': float(acc[0]),
      'mean_steps_fraction': float(frac[0]),
      'full_read_accuracy': full_read_accuracy(test),
      'early_exit_curve': {'threshold': [float(t) for t in grid],
                           'steps_fraction': [float(v) for v in c_frac],
                           'accuracy': [float(v) for v in c_acc]},
      'prefix_curve': {'steps_fraction': list(PREFIX_FRACTIONS),
                       'accuracy': p_acc},
  }


def plot_png(fields: dict[str, Any], title: str = '') -> bytes:
  """The accuracy-against-steps plot of `report`'s fields, as PNG bytes."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
  curve = fields['early_exit_curve']
  order = np.argsort(curve['steps_fraction'], kind='stable')
  ax.plot(np.asarray(curve['steps_fraction'])[order],
          np.asarray(curve['accuracy'])[order], 'o-', ms=3,
          label='early exit (threshold sweep)')
  prefix = fields['prefix_curve']
  ax.plot(prefix['steps_fraction'], prefix['accuracy'], 's--', ms=3,
          label='fixed prefix of each sequence')
  ax.axhline(fields['full_read_accuracy'], color='gray', lw=0.8,
             label='full read')
  ax.plot([fields['mean_steps_fraction']], [fields['early_exit_accuracy']],
          'r*', ms=12, label=f"chosen tau = {fields['early_exit_threshold']:.4g}")
  ax.set_xlabel('mean fraction of steps read')
  ax.set_ylabel('test accuracy')
  ax.set_xlim(0, 1.02)
  low = min(min(curve['accuracy']), min(prefix['accuracy']))
  ax.set_ylim(max(0.0, math.floor(low * 10) / 10), 1.005)
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize=8)
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  return buf.getvalue()


def step_logits_fn(model: Any, params: Any) -> Callable[[Any, Any], Any]:
  """`(x, lengths) -> (B, T, C)`: the per-step logits of a Classifier."""

  @jax.jit
  def fn(p, x, lengths):
    _, state = model.apply({'params': p}, x, lengths,
                           mutable=['intermediates'])
    return state['intermediates']['step_logits']

  return lambda x, lengths: fn(params, x, lengths)


def header(run_config: Any) -> dict[str, float] | None:
  """The artifact header's `early_exit` entry (None when off).

  `run_config.early_exit.threshold` is the threshold the run chose (train.py
  sets it in the config it exports with).
  """
  if section_of(run_config) is None:
    return None
  return {'threshold': float(run_config[FIELD].threshold)}


def artifact_fields(model: Any, params: Any, threshold: float,
                    batches: Iterable[dict]) -> dict[str, Any]:
  """The early-exit fields of a model on test batches at a threshold."""
  return report(step_outputs(step_logits_fn(model, params), batches),
                threshold)
