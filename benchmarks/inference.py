"""Jitted inference latency of a GRU classifier: dense against compressed.

One forward pass of a GRU classifier (last-state pooling) on a batch, jitted;
the median over many timed calls after warm-up. Every variant runs in the same
process, in blocks of consecutive calls, round-robin, so a busy neighbour on a
shared machine slows every variant alike; ratios are against `dense`.

Variants are entries of `VARIANTS`, a list of `Variant(name, build)`: `build`
gets the shape arguments and the dense model's parameters and returns a
`(forward, params)` pair, `forward(params, x, lengths) -> logits` being jitted
here. To add one (a structurally shrunk model, a model rebuilt from an
artifact), append a Variant.

* `dense`: the float model as trained.
* `lowrank`: every recurrent and input kernel replaced by truncated-SVD
  factors at a quarter of its full rank (`--rank_fraction`), multiplied
  through as (x U) V by `models.cells.matmul`.

Usage:
  python benchmarks/inference.py [--hidden 256 --features 64 --steps 64
                                  --batch 64 --repeats 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

# Run as a script from anywhere: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

import models  # pylint: disable=g-import-not-at-top
from compression import lowrank  # pylint: disable=g-import-not-at-top

Forward = Callable[[Any, jax.Array, jax.Array], jax.Array]


class Variant(NamedTuple):
  """One model to time.

  Attributes:
    name: the row label.
    build: `(args, dense_params) -> (forward, params)`; `forward(params, x,
      lengths)` returns the logits and is jitted by the harness.
  """
  name: str
  build: Callable[[argparse.Namespace, Any], tuple[Forward, Any]]


def make_model(args: argparse.Namespace) -> Any:
  """The GRU classifier every variant starts from."""
  return models.Classifier(cell='gru', hidden=args.hidden, layers=args.layers,
                           num_classes=args.classes, pooling='last')


def build_dense(args: argparse.Namespace, params: Any
                ) -> tuple[Forward, Any]:
  """The dense float model."""
  model = make_model(args)

  def forward(p, x, lengths):
    return model.apply({'params': p}, x, lengths)

  return forward, params


def build_lowrank(args: argparse.Namespace, params: Any
                  ) -> tuple[Forward, Any]:
  """Recurrent and input kernels as SVD factors at a fraction of full rank."""
  model = make_model(args)
  comp = lowrank.lowrank(lowrank.config(
      regex=r'rnn/.*(input|recurrent)_kernel',
      rank_fraction=args.rank_fraction))
  factored, state = comp.init(params)

  def forward(p, x, lengths):
    # `apply` is the identity on unshared factors; kept so the variant times
    # exactly what training and evaluation run.
    return model.apply({'params': comp.apply(p, state)}, x, lengths)

  return forward, factored


VARIANTS: list[Variant] = [
    Variant('dense', build_dense),
    Variant('lowrank', build_lowrank),
]


def count(params: Any) -> int:
  """Number of stored parameters."""
  return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark and prints a table.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    {variant: {median_ms, min_ms, max_ms, compile_s, params, speedup_vs_dense}}.
  """
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=64, help='sequence length')
  parser.add_argument('--features', type=int, default=64)
  parser.add_argument('--hidden', type=int, default=256)
  parser.add_argument('--layers', type=int, default=1)
  parser.add_argument('--classes', type=int, default=10)
  parser.add_argument('--rank_fraction', type=float, default=0.25,
                      help='lowrank: share of each kernel\'s full rank')
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=200,
                      help='timed calls per variant (rounded up to --block)')
  parser.add_argument('--block', type=int, default=20,
                      help='consecutive calls of one variant per round')
  parser.add_argument('--variants', type=str, default='',
                      help='comma-separated names to run (default: all)')
  parser.add_argument('--json', type=str, default=None,
                      help='also write the results to this JSON file')
  args = parser.parse_args(argv)

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(
      (args.batch, args.steps, args.features)), jnp.float32)
  lengths = jnp.full((args.batch,), args.steps, jnp.int32)
  dense_params = make_model(args).init(jax.random.key(0), x,
                                       lengths)['params']
  wanted = [v.strip() for v in args.variants.split(',') if v.strip()]
  variants = [v for v in VARIANTS if not wanted or v.name in wanted]
  if not any(v.name == 'dense' for v in variants):
    variants.insert(0, VARIANTS[0])  # The reference of every ratio.

  compiled, params, compile_s, times = {}, {}, {}, {}
  for v in variants:
    forward, p = v.build(args, dense_params)
    start = time.perf_counter()
    fn = jax.jit(forward).lower(p, x, lengths).compile()
    compile_s[v.name] = time.perf_counter() - start
    for _ in range(args.warmup):
      out = fn(p, x, lengths)
    out.block_until_ready()
    compiled[v.name], params[v.name], times[v.name] = fn, p, []

  block = max(1, min(args.block, args.repeats))
  for _ in range(-(-args.repeats // block)):
    for v in variants:
      fn, p = compiled[v.name], params[v.name]
      for _ in range(block):
        start = time.perf_counter()
        fn(p, x, lengths).block_until_ready()
        times[v.name].append((time.perf_counter() - start) * 1e3)

  ref = statistics.median(times['dense'])
  results = {}
  print(f'{jax.devices()[0].platform} B={args.batch} T={args.steps} '
        f'F={args.features} H={args.hidden} layers={args.layers}, '
        f'{len(times["dense"])} calls each')
  print(f'{"variant":12s} {"params":>9s} {"median ms":>10s} {"min":>8s} '
        f'{"max":>8s} {"compile s":>10s} {"dense/this":>10s}')
  for v in variants:
    t = times[v.name]
    med = statistics.median(t)
    r = results[v.name] = dict(
        median_ms=med, min_ms=min(t), max_ms=max(t),
        compile_s=compile_s[v.name], params=count(params[v.name]),
        speedup_vs_dense=ref / med)
    print(f'{v.name:12s} {r["params"]:9d} {med:10.3f} {r["min_ms"]:8.3f} '
          f'{r["max_ms"]:8.3f} {r["compile_s"]:10.2f} '
          f'{r["speedup_vs_dense"]:10.2f}')
  if args.json:
    Path(args.json).write_text(json.dumps(dict(
        args=vars(args), device=str(jax.devices()[0]), results=results),
                                          indent=2))
  return results


if __name__ == '__main__':
  main()
