"""Train-step cost of fake quantization on every kernel against float.

One-layer GRU classifier (input 16, hidden 128, sequence length 64, batch 64,
10 classes, last-state pooling), Adam, one full jitted train step (the
compressor's `apply`, loss, gradient, optax update, donated state), as in
train.py. Variants: float (no compression), 8-bit per-channel absmax
fake-quant of every kernel (`.*kernel`), the same with learned (LSQ) steps,
and with h_t quantized too. Variants run in blocks of consecutive steps,
round-robin, so a busy neighbour on a shared machine slows all alike.

Usage:
  python -m benchmarks.quant_overhead [--repeats 200] [--json out.json]
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import ml_collections
import optax

from benchmarks import timing
import compression
from compression import quantization
import models


def make_step(model: Any, comp: compression.Compressor,
              tx: optax.GradientTransformation) -> Callable[..., Any]:
  """The jitted step: (params, opt_state, comp_state), batch -> state, loss."""
  def loss_fn(params, comp_state, x, lengths, labels):
    dense = comp.apply(params, comp_state)
    logits = model.apply({'params': dense}, x, lengths)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean()

  def step(state, x, lengths, labels):
    params, opt_state, comp_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params, comp_state, x, lengths,
                                              labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, comp_state), loss

  return jax.jit(step, donate_argnums=0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark and prints a table.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    {variant: {median_ms, min_ms, max_ms, compile_s, ratio_vs_float}}.
  """
  args = timing.parser(__doc__.splitlines()[0]).parse_args(argv)
  x, lengths, labels = timing.synthetic_batch(args)
  model_cfg = ml_collections.ConfigDict(dict(
      cell='gru', hidden=args.hidden, layers=1, pooling='last', embed_dim=32,
      dtype='float32', unroll=1))
  info = {'num_classes': args.classes}
  hidden_8 = ml_collections.ConfigDict(
      {'bits': 8, 'cell_bits': 0, 'cell_clip': 4.0})

  variants = {
      'float': (models.make(model_cfg, 'classification', info),
                compression.identity()),
      'fake-quant 8b kernels': (
          models.make(model_cfg, 'classification', info),
          quantization.make(quantization.config(bits=8))),
      'fake-quant 8b learned': (
          models.make(model_cfg, 'classification', info),
          quantization.make(quantization.config(bits=8, scale='learned'))),
      'fake-quant 8b + h_t 8b': (
          models.make(model_cfg, 'classification', info,
                      state_fn=quantization.state_quantizers(hidden_8)[0]),
          quantization.make(quantization.config(bits=8))),
  }
  tx = optax.adam(1e-3)
  calls, compile_s = {}, {}
  for name, (model, comp) in variants.items():
    params = model.init(jax.random.key(0), x, lengths)['params']
    params, comp_state = comp.init(params)
    state = (params, tx.init(params), comp_state)
    step = make_step(model, comp, tx)
    start = time.perf_counter()
    compiled = step.lower(state, x, lengths, labels).compile()
    compile_s[name] = time.perf_counter() - start
    calls[name] = timing.stepping(compiled, state, x, lengths, labels)
  times = timing.round_robin(calls, args.repeats, args.block, args.warmup)

  ref = statistics.median(times['float'])
  results = {}
  print(f'{jax.devices()[0].platform} B={args.batch} T={args.steps} '
        f'F={args.features} H={args.hidden}, {args.repeats} steps each')
  print(f'{"variant":24s} {"median ms":>10s} {"min":>8s} {"max":>8s} '
        f'{"compile s":>10s} {"vs float":>9s}')
  for name in variants:
    med = statistics.median(times[name])
    results[name] = dict(**timing.summary(times[name]),
                         compile_s=compile_s[name],
                         ratio_vs_float=med / ref)
    r = results[name]
    print(f'{name:24s} {med:10.3f} {r["min_ms"]:8.3f} {r["max_ms"]:8.3f} '
          f'{r["compile_s"]:10.2f} {r["ratio_vs_float"]:9.3f}')
  timing.write_json(args.json, args, results)
  return results


if __name__ == '__main__':
  main()
