"""Train-step speed of our GRU layer against `flax.linen.RNN(GRUCell)`.

One-layer GRU classifier (input 16, hidden 128, sequence length 64, batch 64,
10 classes, pooling on the last valid state), Adam, one full jitted train step
(loss, gradient, optax update, donated state). Variants of our layer (input
projection hoisted before the scan or done per step; scan unroll 1/2/4) show
which layout `models/cells.py` should use. Variants run in blocks of
consecutive steps, round-robin, so a busy neighbour on a shared machine slows
every variant alike.

Usage:
  python -m benchmarks.gru_vs_flax [--repeats 200] [--json out.json]
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import optax

from benchmarks import timing
import models
from models import cells


class FlaxGRUClassifier(nn.Module):
  """The reference: Flax's own RNN wrapper and GRUCell, same head."""
  hidden: int
  num_classes: int
  unroll: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    carry, _ = nn.RNN(nn.GRUCell(self.hidden), unroll=self.unroll,
                      return_carry=True)(x, seq_lengths=lengths)
    return nn.Dense(self.num_classes, name='head')(carry)


class LayerClassifier(nn.Module):
  """Our layer with a layout knob exposed, same head."""
  hidden: int
  num_classes: int
  unroll: int = 1
  hoist_input: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    _, carry = cells.RecurrentLayer(
        cell='gru', hidden=self.hidden, unroll=self.unroll,
        hoist_input=self.hoist_input, name='layer_0')(x, lengths)
    return nn.Dense(self.num_classes, name='head')(carry)


def make_step(model: nn.Module, tx: optax.GradientTransformation
              ) -> Callable[..., Any]:
  """The jitted train step: (params, opt_state), batch -> new state, loss."""
  def loss_fn(params, x, lengths, labels):
    logits = model.apply({'params': params}, x, lengths)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  def step(state, x, lengths, labels):
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, x, lengths, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return jax.jit(step, donate_argnums=0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark and prints a table.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    {variant: {median_ms, min_ms, max_ms, compile_s, ratio_vs_flax}}.
  """
  args = timing.parser(__doc__.splitlines()[0]).parse_args(argv)
  x, lengths, labels = timing.synthetic_batch(args)
  h, c = args.hidden, args.classes

  variants = {
      'flax RNN(GRUCell)': FlaxGRUClassifier(h, c),
      'ours Classifier': models.Classifier(
          cell='gru', hidden=h, layers=1, num_classes=c, pooling='last'),
      'ours per-step u1': LayerClassifier(h, c, hoist_input=False),
      'ours per-step u2': LayerClassifier(h, c, unroll=2, hoist_input=False),
      'ours per-step u4': LayerClassifier(h, c, unroll=4, hoist_input=False),
      'ours hoisted u1': LayerClassifier(h, c, hoist_input=True),
      'ours hoisted u4': LayerClassifier(h, c, unroll=4, hoist_input=True),
      'flax RNN(GRUCell) u4': FlaxGRUClassifier(h, c, unroll=4),
  }
  tx = optax.adam(1e-3)
  calls, compile_s = {}, {}
  for name, model in variants.items():
    params = model.init(jax.random.key(0), x, lengths)['params']
    step = make_step(model, tx)
    start = time.perf_counter()
    compiled = step.lower((params, tx.init(params)), x, lengths,
                          labels).compile()
    compile_s[name] = time.perf_counter() - start
    calls[name] = timing.stepping(compiled, (params, tx.init(params)), x,
                                  lengths, labels)
  times = timing.round_robin(calls, args.repeats, args.block, args.warmup)

  ref = statistics.median(times['flax RNN(GRUCell)'])
  results = {}
  print(f'{jax.devices()[0].platform} B={args.batch} T={args.steps} '
        f'F={args.features} H={h}, {args.repeats} steps each')
  print(f'{"variant":24s} {"median ms":>10s} {"min":>8s} {"max":>8s} '
        f'{"compile s":>10s} {"flax/ours":>10s}')
  for name in variants:
    med = statistics.median(times[name])
    results[name] = dict(**timing.summary(times[name]),
                         compile_s=compile_s[name],
                         speedup_vs_flax=ref / med)
    r = results[name]
    print(f'{name:24s} {med:10.3f} {r["min_ms"]:8.3f} {r["max_ms"]:8.3f} '
          f'{r["compile_s"]:10.2f} {r["speedup_vs_flax"]:10.2f}')
  timing.write_json(args.json, args, results)
  return results


if __name__ == '__main__':
  main()
