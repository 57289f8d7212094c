"""Interleaved wall-clock timing shared by the benchmark scripts.

Every script times its variants in one process, in blocks of consecutive
calls, round-robin: a busy neighbour on a shared machine then slows every
variant alike, and a block of consecutive calls keeps each variant's caches
warm as a training loop would (single interleaved calls would charge each
variant for the misses its neighbour caused).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax

# One call of a variant; it returns only once the work is done (blocks on
# the device).
Call = Callable[[], object]


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
