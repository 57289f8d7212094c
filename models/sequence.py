"""Task heads over a `RecurrentStack`: classifier, forecaster, language model.

Every head runs the stack under the name `rnn` (parameters `rnn/layer_{i}/...`)
and a dense output layer `head`. Intermediates for distillation are sown into
the 'intermediates' collection without changing the forward result; read them
with `module.apply(variables, ..., mutable=['intermediates'])`:

  hidden_states  tuple over layers of (B, T, H) outputs (zero at padding)
  features       what the head reads: pooled (B, H) for Classifier, last state
                 (B, H) for Forecaster, top-layer outputs (B, T, H) for the LM
  step_logits    Classifier with pooling='last': the head applied to every
                 top-layer output, (B, T, num_classes); at each sequence's
                 last valid step it equals the returned logits (padded steps
                 hold the head's bias)
  attention      {'weights': (B, T)} pooling weights (Classifier,
                 pooling='attention'); nested because the submodule
                 `attention` owns both the kernel and the weights
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from compression.errors import InputError
from models import cells

Array = jax.Array

POOLINGS = ('attention', 'last', 'mean')


def _with_precision(call: Any) -> Any:
  """Runs a head's `__call__` under its `matmul_precision`."""

  @functools.wraps(call)
  def wrapped(self, *args, **kwargs):
    with cells.matmul_precision(self.matmul_precision):
      return call(self, *args, **kwargs)

  return wrapped


def _keep(unused_old: Any, new: Any) -> Any:
  """`sow` reducer that stores the value itself, not a tuple of calls."""
  return new


def _sow(module: nn.Module, name: str, value: Any) -> None:
  module.sow('intermediates', name, value, init_fn=lambda: None,
             reduce_fn=_keep)


def valid_mask(lengths: Array, steps: int) -> Array:
  """(B, T) bool: True where step t < lengths[b]."""
  return jnp.arange(steps)[None, :] < lengths[:, None]


def mean_pool(outputs: Array, lengths: Array) -> Array:
  """Mean of (B, T, H) outputs over each sequence's valid steps.

  Args:
    outputs: (B, T, H), zero at padded steps.
    lengths: (B,) int32.

  Returns:
    (B, H); zeros for an empty sequence.
  """
  mask = valid_mask(lengths, outputs.shape[1])[..., None]
  total = jnp.sum(jnp.where(mask, outputs, 0.0), axis=1)
  return total / jnp.maximum(lengths, 1)[:, None].astype(outputs.dtype)


def masked_softmax(scores: Array, lengths: Array) -> Array:
  """Softmax of (B, T) scores over valid steps; exactly 0 on padding.

  Args:
    scores: (B, T) float.
    lengths: (B,) int32.

  Returns:
    (B, T) weights summing to 1 over valid steps (all 0 when lengths[b]=0).
  """
  mask = valid_mask(lengths, scores.shape[1])
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  return jnp.where(mask, jax.nn.softmax(scores, axis=-1), 0.0)


class AttentionPool(nn.Module):
  """Softmax-weighted mean of the outputs with a learned scoring vector.

  Its parameter is `kernel` (H, 1); it sows the (B, T) weights as `weights`
  (so a Classifier's are at `intermediates['attention']['weights']`: Flax
  keeps one namespace per module, and `attention` names the parameters).
  """

  @nn.compact
  def __call__(self, outputs: Array, lengths: Array) -> Array:
    """Pools (B, T, H) outputs over valid steps.

    Args:
      outputs: (B, T, H) float32 outputs of the top layer.
      lengths: (B,) int32.

    Returns:
      (B, H) pooled features.
    """
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (outputs.shape[-1], 1), jnp.float32)
    # No bias: it would add the same constant to every score, which the
    # softmax ignores.
    scores = cells.matmul(outputs, kernel)[..., 0]
    weights = masked_softmax(scores, lengths)
    _sow(self, 'weights', weights)
    return jnp.einsum('bt,bth->bh', weights, outputs)


class Classifier(nn.Module):
  """Sequence classifier: recurrent stack, pooling, dense head.

  Attributes:
    cell: 'gru', 'lstm' or 'rnn'.
    hidden: width H of every layer.
    layers: number of recurrent layers.
    num_classes: number of output logits.
    pooling: 'last' (state at each sequence's true last step), 'mean' (over
      valid steps) or 'attention' (learned scoring vector `attention/kernel`
      (H, 1), softmax over valid steps).
    dtype: compute dtype, 'float32' or 'bfloat16'.
    unroll: steps per iteration of the scan loop.
    state_fn: applied to every new hidden state inside the scan.
    cell_state_fn: LSTM only: applied to every new cell state.
    gate_fn: applies every sigmoid / tanh of the cells (`cells.GateFn`).
    hoist_input: input projection before the scan (see `cells.RecurrentLayer`).
    matmul_precision: float32 matmul precision (`cells.PRECISIONS`).
    input_fn: applied to the input x (`cells.quantize_input`).
    features_fn: applied to the pooled features the head reads.
  """
  cell: str
  hidden: int
  layers: int
  num_classes: int
  pooling: str = 'last'
  dtype: str = 'float32'
  unroll: int = 1
  state_fn: cells.StateFn | None = None
  cell_state_fn: cells.StateFn | None = None
  gate_fn: cells.GateFn | None = None
  hoist_input: bool = False
  matmul_precision: str = 'default'
  input_fn: cells.InputFn | None = None
  features_fn: cells.StateFn | None = None

  @nn.compact
  @_with_precision
  def __call__(self, x: Array, lengths: Array | None = None) -> Array:
    """Classifies a batch of padded sequences.

    Args:
      x: (B, T, F) float inputs.
      lengths: (B,) int32 valid steps; None means all T.

    Returns:
      (B, num_classes) float32 logits.
    """
    if lengths is None:
      lengths = cells.full_lengths(x)
    x = cells.quantize_input(self, x, self.input_fn)
    outputs, carries = cells.RecurrentStack(
        cell=self.cell, hidden=self.hidden, layers=self.layers,
        dtype=self.dtype, unroll=self.unroll, state_fn=self.state_fn,
        cell_state_fn=self.cell_state_fn, gate_fn=self.gate_fn,
        hoist_input=self.hoist_input,
        name='rnn')(x, lengths)
    top = outputs[-1]
    if self.pooling == 'last':
      features = cells.final_hidden(carries[-1])
    elif self.pooling == 'mean':
      features = mean_pool(top, lengths)
    elif self.pooling == 'attention':
      features = AttentionPool(name='attention')(top, lengths)
    else:
      raise InputError(f'model.pooling: unknown pooling {self.pooling!r}; '
                       f'valid: {", ".join(POOLINGS)}')
    if self.features_fn is not None:
      features = self.features_fn(features)
    _sow(self, 'hidden_states', tuple(outputs))
    _sow(self, 'features', features)
    head = cells.Dense(self.num_classes, self.dtype, name='head')
    logits = head(features)
    if self.pooling == 'last' and self.is_mutable_collection('intermediates'):
      # The same head on every h_t (early exit over time,
      # `compression.early_exit`); only computed when intermediates are read.
      steps = top if self.features_fn is None else self.features_fn(top)
      _sow(self, 'step_logits', head(steps))
    return logits


class Forecaster(nn.Module):
  """Predicts the next `horizon` values from the last recurrent state.

  Attributes:
    cell: 'gru', 'lstm' or 'rnn'.
    hidden: width H of every layer.
    layers: number of recurrent layers.
    horizon: number of future values predicted.
    dtype: compute dtype, 'float32' or 'bfloat16'.
    unroll: steps per iteration of the scan loop.
    state_fn: applied to every new hidden state inside the scan.
    cell_state_fn: LSTM only: applied to every new cell state.
    gate_fn: applies every sigmoid / tanh of the cells (`cells.GateFn`).
    hoist_input: input projection before the scan (see `cells.RecurrentLayer`).
    matmul_precision: float32 matmul precision (`cells.PRECISIONS`).
    input_fn: applied to the input window (`cells.quantize_input`).
  """
  cell: str
  hidden: int
  layers: int
  horizon: int = 1
  dtype: str = 'float32'
  unroll: int = 1
  state_fn: cells.StateFn | None = None
  cell_state_fn: cells.StateFn | None = None
  gate_fn: cells.GateFn | None = None
  hoist_input: bool = False
  matmul_precision: str = 'default'
  input_fn: cells.InputFn | None = None

  @nn.compact
  @_with_precision
  def __call__(self, x: Array, lengths: Array | None = None) -> Array:
    """Forecasts from a window of past values.

    Args:
      x: (B, W, F) float window.
      lengths: (B,) int32 valid steps; None means all W.

    Returns:
      (B, horizon) float32 predictions.
    """
    x = cells.quantize_input(self, x, self.input_fn)
    outputs, carries = cells.RecurrentStack(
        cell=self.cell, hidden=self.hidden, layers=self.layers,
        dtype=self.dtype, unroll=self.unroll, state_fn=self.state_fn,
        cell_state_fn=self.cell_state_fn, gate_fn=self.gate_fn,
        hoist_input=self.hoist_input,
        name='rnn')(x, lengths)
    features = cells.final_hidden(carries[-1])
    _sow(self, 'hidden_states', tuple(outputs))
    _sow(self, 'features', features)
    return cells.Dense(self.horizon, self.dtype, name='head')(features)


class LanguageModel(nn.Module):
  """Next-token model: embedding, recurrent stack, per-step dense head.

  Attributes:
    cell: 'gru', 'lstm' or 'rnn'.
    hidden: width H of every layer.
    layers: number of recurrent layers.
    vocab_size: number of tokens.
    embed_dim: width of the token embedding `embed/embedding`.
    dtype: compute dtype, 'float32' or 'bfloat16'.
    unroll: steps per iteration of the scan loop.
    state_fn: applied to every new hidden state inside the scan.
    cell_state_fn: LSTM only: applied to every new cell state.
    gate_fn: applies every sigmoid / tanh of the cells (`cells.GateFn`).
    hoist_input: input projection before the scan (see `cells.RecurrentLayer`).
    matmul_precision: float32 matmul precision (`cells.PRECISIONS`).
  """
  cell: str
  hidden: int
  layers: int
  vocab_size: int
  embed_dim: int = 64
  dtype: str = 'float32'
  unroll: int = 1
  state_fn: cells.StateFn | None = None
  cell_state_fn: cells.StateFn | None = None
  gate_fn: cells.GateFn | None = None
  hoist_input: bool = False
  matmul_precision: str = 'default'

  @nn.compact
  @_with_precision
  def __call__(self, x: Array, lengths: Array | None = None) -> Array:
    """Scores the next token at every step.

    Args:
      x: (B, T) int32 tokens.
      lengths: (B,) int32 valid steps; None means all T.

    Returns:
      (B, T, vocab_size) float32 logits (those at padded steps come from a
      zero state and carry no meaning).
    """
    emb = nn.Embed(self.vocab_size, self.embed_dim, name='embed')(x)
    outputs, _ = cells.RecurrentStack(
        cell=self.cell, hidden=self.hidden, layers=self.layers,
        dtype=self.dtype, unroll=self.unroll, state_fn=self.state_fn,
        cell_state_fn=self.cell_state_fn, gate_fn=self.gate_fn,
        hoist_input=self.hoist_input,
        name='rnn')(emb, lengths)
    _sow(self, 'hidden_states', tuple(outputs))
    _sow(self, 'features', outputs[-1])
    return cells.Dense(self.vocab_size, self.dtype, name='head')(outputs[-1])
