"""What the benchmark scripts share: arguments, a synthetic batch, timing.

Every script times its variants in one process, in blocks of consecutive
calls, round-robin: a busy neighbour on a shared machine then slows every
variant alike, and a block of consecutive calls keeps each variant's caches
warm as a training loop would (single interleaved calls would charge each
variant for the misses its neighbour caused).

The scripts that time a classifier on random data build their command line
with `parser()` (the shape, the timing and `--json`; each script adds only
its own flags), their batch with `synthetic_batch()`, and their `--json`
file with `write_json()`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# One call of a variant; it returns only once the work is done (blocks on
# the device).
Call = Callable[[], object]


def parser(description: str, *, features: int = 16, hidden: int = 128,
           per: str = 'variant', unit: str = 'steps'
           ) -> argparse.ArgumentParser:
  """The arguments every classifier benchmark takes; scripts add their own.

  Args:
    description: the script's one-line description.
    features: default of `--features` (input size).
    hidden: default of `--hidden` (hidden units).
    per: what one timed series is, in the help ('variant' or 'row').
    unit: what one timed call is, in the help ('steps' or 'calls').

  Returns:
    A parser with --batch, --steps (sequence length), --features, --hidden,
    --classes, --warmup, --repeats, --block and --json.
  """
  p = argparse.ArgumentParser(description=description)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--steps', type=int, default=64, help='sequence length')
  p.add_argument('--features', type=int, default=features)
  p.add_argument('--hidden', type=int, default=hidden)
  p.add_argument('--classes', type=int, default=10)
  p.add_argument('--warmup', type=int, default=5)
  p.add_argument('--repeats', type=int, default=200,
                 help=f'timed {unit} per {per} (rounded up to --block)')
  p.add_argument('--block', type=int, default=20,
                 help=f'consecutive {unit} of one {per} per round')
  p.add_argument('--json', type=str, default=None,
                 help='also write the results to this JSON file')
  return p


def synthetic_batch(args: argparse.Namespace, full_length: bool = False
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A fixed random batch of the `parser()` shape (seed 0).

  Args:
    args: parsed `parser()` arguments (batch, steps, features, classes).
    full_length: every sequence `steps` long; otherwise the lengths are
      uniform in [steps // 2, steps].

  Returns:
    (x float32 (batch, steps, features) standard normal, lengths int32
    (batch,), labels int32 (batch,) in [0, classes)), drawn in that order
    (full lengths draw nothing).
  """
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(
      (args.batch, args.steps, args.features)), jnp.float32)
  if full_length:
    lengths = jnp.full((args.batch,), args.steps, jnp.int32)
  else:
    lengths = jnp.asarray(rng.integers(args.steps // 2, args.steps + 1,
                                       args.batch), jnp.int32)
  labels = jnp.asarray(rng.integers(0, args.classes, args.batch), jnp.int32)
  return x, lengths, labels


def stepping(step: Callable[..., tuple[Any, Any]], state: Any, *args: Any
             ) -> Call:
  """A call that runs `state, out = step(state, *args)` and waits for `out`.

  The state is threaded from one call to the next, as a training loop does
  (and as a step with donated state requires).
  """
  box = [state]

  def call() -> None:
    box[0], out = step(box[0], *args)
    jax.block_until_ready(out)

  return call


def first_call(call: Call) -> float:
  """Seconds of `call()`'s first run (trace, compile and one run for JAX)."""
  start = time.perf_counter()
  call()
  return time.perf_counter() - start


def round_robin(calls: dict[str, Call], repeats: int, block: int = 20,
                warmup: int = 5) -> dict[str, list[float]]:
  """Times every call `repeats` times (rounded up to whole blocks).

  Args:
    calls: name -> call.
    repeats: timed calls per variant.
    block: consecutive calls of one variant per round.
    warmup: untimed calls of each variant first.

  Returns:
    name -> milliseconds of each timed call.

  Raises:
    ValueError: `repeats` < 1.
  """
  if repeats < 1:
    raise ValueError(f'repeats: must be >= 1, got {repeats}')
  for call in calls.values():
    for _ in range(warmup):
      call()
  times: dict[str, list[float]] = {name: [] for name in calls}
  block = max(1, min(block, repeats))
  for _ in range(-(-repeats // block)):
    for name, call in calls.items():
      for _ in range(block):
        start = time.perf_counter()
        call()
        times[name].append((time.perf_counter() - start) * 1e3)
  return times


def summary(ms: list[float]) -> dict[str, float]:
  """Median, min and max of a variant's times (ms)."""
  return {'median_ms': statistics.median(ms), 'min_ms': min(ms),
          'max_ms': max(ms)}


def write_json(path: str | None, args: argparse.Namespace,
               results: dict[str, Any]) -> None:
  """Writes {args, device, results} to `path` (`--json`); nothing if None."""
  if path:
    Path(path).write_text(json.dumps(dict(args=vars(args),
                                          device=str(jax.devices()[0]),
                                          results=results), indent=2))
