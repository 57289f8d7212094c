"""Knowledge-distillation losses: pure functions of student and teacher outputs.

* `soft_label_loss`: Hinton et al. 2015, "Distilling the Knowledge in a Neural
  Network": the KL divergence between the teacher's and the student's
  distributions at temperature T, scaled by T^2 so its gradient keeps the same
  size as T changes, mixed with the hard-label cross-entropy by `alpha`:
  `alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))`.
  For the language model the same loss is taken at every step.
* `logit_mse_loss` (`soft_loss='mse'`): Ba and Caruana 2014, "Do Deep Nets
  Really Need to be Deep?": the student regresses the teacher's logits, the
  mean over classes of (s_k - t_k)^2, mixed with the hard-label
  cross-entropy by `alpha`: `alpha * CE(y, s) + (1 - alpha) * mean_k (s_k -
  t_k)^2`. Logits carry what the softmax discards (their scale and the
  relative values of unlikely classes); no temperature is involved. For the
  language model the same loss is taken at every step.
* `output_mse`: forecasting has no distribution; the student matches the
  teacher's predictions by MSE, mixed with the targets' MSE by `alpha`.
* `feature_loss`: hidden-state distillation. The student's top-layer states
  (width Hs) pass through a learned linear projection to the teacher's width
  Ht and match the teacher's states by MSE over valid steps. The projection
  (`init_projection`) trains with the student and is not part of the model, so
  it never reaches an export.
* `attention_loss`: KL divergence between the teacher's and the student's
  attention-pooling weights over the valid steps of each sequence.
* `distillation_loss`: the weighted sum a training step uses.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from compression import core

Array = jax.Array
_EPS = 1e-8


OPTIONS = core.Options(
    'distill',
    core.Option('alpha', 0.5, 'Weight of the hard-label loss; 1 - alpha goes '
                'to soft labels.', core.in_range(0, 1)),
    core.Option('soft_loss', 'kl', "Soft-label loss of classification and "
                "language models: 'kl' (Hinton, temperature T) or 'mse' "
                '(squared error between logits, Ba and Caruana).',
                core.one_of('kl', 'mse')),
    core.Option('temperature', 4.0, 'Softmax temperature T of the soft labels.',
                lambda t: None if t > 0 else f'must be > 0, got {t}'),
    core.Option('feature_weight', 0.0, 'Weight of the hidden-state loss (0 = '
                'off).', lambda w: None if w >= 0 else
                f'must be >= 0, got {w}'),
    core.Option('attention_weight', 0.0, 'Weight of the attention-map loss (0 '
                '= off).', lambda w: None if w >= 0 else
                f'must be >= 0, got {w}'),
    core.Option('scratch', True, 'Also train the same student without a '
                'teacher, to compare.'),
)
config = OPTIONS.config


def validate(cfg: Any) -> None:
  """Checks a `config.distill` section; one InputError line per problem."""
  OPTIONS.parse(cfg)


def kl_divergence(p_logits: Array, q_logits: Array, temperature: float = 1.0
                  ) -> Array:
  """KL(softmax(p/T) || softmax(q/T)) over the last axis, per example.

  Args:
    p_logits: the target's (teacher's) logits, (..., K).
    q_logits: the approximating (student's) logits, (..., K).
    temperature: T > 0.

  Returns:
    (...,) non-negative divergences in nats.
  """
  log_p = jax.nn.log_softmax(p_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(q_logits / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def soft_label_loss(student_logits: Array, teacher_logits: Array,
                    labels: Array, temperature: float, alpha: float) -> Array:
  """Hinton et al.'s mixed loss, per example (per step for sequences).

  Args:
    student_logits: (..., K).
    teacher_logits: (..., K); treated as constants.
    labels: (...,) int class ids.
    temperature: T > 0.
    alpha: weight of the hard-label cross-entropy, in [0, 1].

  Returns:
    (...,) losses.
  """
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  hard = optax.softmax_cross_entropy_with_integer_labels(student_logits, labels)
  soft = kl_divergence(teacher_logits, student_logits, temperature)
  return alpha * hard + (1.0 - alpha) * temperature**2 * soft


def logit_mse_loss(student_logits: Array, teacher_logits: Array,
                   labels: Array, alpha: float) -> Array:
  """Ba and Caruana's logit regression mixed with the hard labels, per example.

  Args:
    student_logits: (..., K).
    teacher_logits: (..., K); treated as constants.
    labels: (...,) int class ids.
    alpha: weight of the hard-label cross-entropy, in [0, 1].

  Returns:
    (...,) `alpha * CE + (1 - alpha) * mean_k (s_k - t_k)^2`.
  """
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  hard = optax.softmax_cross_entropy_with_integer_labels(student_logits, labels)
  soft = jnp.mean(jnp.square(student_logits - teacher_logits), axis=-1)
  return alpha * hard + (1.0 - alpha) * soft


def output_mse(student_out: Array, teacher_out: Array, targets: Array,
               alpha: float) -> Array:
  """Forecasting: `alpha * MSE(targets) + (1 - alpha) * MSE(teacher)`, per example."""
  teacher_out = jax.lax.stop_gradient(teacher_out)
  hard = jnp.mean(jnp.square(student_out - targets), axis=-1)
  soft = jnp.mean(jnp.square(student_out - teacher_out), axis=-1)
  return alpha * hard + (1.0 - alpha) * soft


def init_projection(rng: Array, student_width: int, teacher_width: int
                    ) -> dict[str, Array]:
  """The student-to-teacher projection: kernel (Hs, Ht) and bias (Ht,)."""
  scale = 1.0 / jnp.sqrt(student_width)
  return {'kernel': scale * jax.random.normal(
              rng, (student_width, teacher_width), jnp.float32),
          'bias': jnp.zeros((teacher_width,), jnp.float32)}


def feature_loss(student_states: Array, teacher_states: Array,
                 projection: dict[str, Array], mask: Array) -> Array:
  """MSE between projected student states and teacher states, per example.

  Args:
    student_states: (B, T, Hs) top-layer hidden states.
    teacher_states: (B, T, Ht); treated as constants.
    projection: `init_projection`'s dict.
    mask: (B, T) 1 on valid steps, 0 on padding.

  Returns:
    (B,) mean squared error over valid steps and units.
  """
  teacher_states = jax.lax.stop_gradient(teacher_states)
  projected = student_states @ projection['kernel'] + projection['bias']
  sq = jnp.mean(jnp.square(projected - teacher_states), axis=-1)
  return jnp.sum(sq * mask, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0)


def attention_loss(student_weights: Array, teacher_weights: Array,
                   mask: Array) -> Array:
  """KL(teacher || student) between attention maps over valid steps.

  Args:
    student_weights: (B, T) attention weights summing to 1 over valid steps.
    teacher_weights: (B, T), the same for the teacher; treated as constants.
    mask: (B, T) 1 on valid steps.

  Returns:
    (B,) divergences; 0 where the maps are equal.
  """
  t = jax.lax.stop_gradient(teacher_weights)
  terms = t * (jnp.log(t + _EPS) - jnp.log(student_weights + _EPS))
  return jnp.sum(terms * mask, axis=-1)


def valid_mask(lengths: Array, steps: int) -> Array:
  """(B, T) float mask: 1 where the step is inside the sequence."""
  return (jnp.arange(steps)[None, :] < lengths[:, None]).astype(jnp.float32)


def distillation_loss(task: str, cfg: Any, batch: dict[str, Array],
                      student_out: Array, teacher_out: Array,
                      student_inter: dict | None, teacher_inter: dict | None,
                      projection: dict[str, Array] | None) -> Array:
  """The mean distillation objective of one batch.

  Args:
    task: 'classification' | 'forecasting' | 'language_model'.
    cfg: the `config.distill` section.
    batch: 'x', 'y', 'lengths'.
    student_out, teacher_out: model outputs (logits or predictions).
    student_inter, teacher_inter: the models' 'intermediates' collections
      (needed when feature_weight or attention_weight is non-zero).
    projection: the feature projection (needed when feature_weight > 0).

  Returns:
    A scalar loss.
  """
  student_out = student_out.astype(jnp.float32)
  teacher_out = teacher_out.astype(jnp.float32)
  # Configs written before `soft_loss` existed distilled with the KL.
  if 'soft_loss' in cfg and cfg.soft_loss == 'mse':
    soft = lambda s, t, y: logit_mse_loss(s, t, y, cfg.alpha)
  else:
    soft = lambda s, t, y: soft_label_loss(s, t, y, cfg.temperature,
                                           cfg.alpha)
  if task == 'classification':
    per = soft(student_out, teacher_out, batch['y'])
  elif task == 'language_model':
    per = jnp.mean(soft(student_out, teacher_out, batch['y']), axis=-1)
  else:
    per = output_mse(student_out, teacher_out, batch['y'], cfg.alpha)
  loss = jnp.mean(per)
  if cfg.feature_weight:
    s = student_inter['hidden_states'][-1]
    t = teacher_inter['hidden_states'][-1]
    mask = valid_mask(batch['lengths'], s.shape[1])
    loss += cfg.feature_weight * jnp.mean(feature_loss(s, t, projection, mask))
  if cfg.attention_weight:
    s = student_inter['attention']['weights']
    t = teacher_inter['attention']['weights']
    mask = valid_mask(batch['lengths'], s.shape[1])
    loss += cfg.attention_weight * jnp.mean(attention_loss(s, t, mask))
  return loss
