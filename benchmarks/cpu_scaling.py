"""How much faster several cores compute than one on this machine.

Runs a single-threaded float32 matmul loop (numpy, 256 x 256, one BLAS
thread) in one process alone, then in `--processes` processes (default: one
per usable core) over the same time window, and prints each process's
GFLOP/s and the aggregate speedup. Where cores share floating-point units
(SMT siblings, or virtual CPUs a hypervisor maps onto them, or a busy
neighbour on the host) the speedup for such compute-bound work falls well
below the process count; it is the reference for the data-parallel speedup
that `step_time.py` reports (README, "Speed and scale").

Usage:
  python -m benchmarks.cpu_scaling [--seconds 4] [--processes 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from cli import usable_cores

_WORKER = r'''
import os, sys, time
for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ[var] = '1'
import numpy as np
n, seconds, begin = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
for _ in range(20):
  a @ a
# Every worker times the same wall-clock window.
time.sleep(max(0.0, begin - time.time()))
start, calls = time.perf_counter(), 0
while time.perf_counter() - start < seconds:
  for _ in range(20):
    a @ a
  calls += 20
print(2 * n**3 * calls / (time.perf_counter() - start) / 1e9)
'''


def rates(processes: int, size: int, seconds: float) -> list[float]:
  """GFLOP/s of each of `processes` worker processes run at once."""
  begin = time.time() + 2.0  # Time for every worker to start and warm up.
  procs = [subprocess.Popen([sys.executable, '-c', _WORKER, str(size),
                             str(seconds), str(begin)],
                            stdout=subprocess.PIPE, text=True)
           for _ in range(processes)]
  out = [p.communicate()[0] for p in procs]
  if any(p.returncode for p in procs):
    raise SystemExit('a worker process failed')
  return [float(o.strip()) for o in out]


def main(argv: list[str] | None = None) -> dict:
  """Runs the measurement, prints it, optionally writes JSON.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    {'cores', 'size', 'alone_gflops', 'together_gflops' (per process),
    'speedup'}.
  """
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--processes', type=int, default=usable_cores())
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--seconds', type=float, default=4.0)
  parser.add_argument('--json', type=str, default=None)
  args = parser.parse_args(argv)
  alone = rates(1, args.size, args.seconds)[0]
  together = rates(args.processes, args.size, args.seconds)
  res = {'cores': usable_cores(), 'size': args.size, 'alone_gflops': alone,
         'together_gflops': together,
         'speedup': sum(together) / alone}
  print(f'{args.size}x{args.size} float32 matmul, one thread per process: '
        f'alone {alone:.1f} GFLOP/s; {args.processes} at once '
        f'{", ".join(f"{r:.1f}" for r in together)} GFLOP/s; aggregate '
        f'{res["speedup"]:.2f}x of one')
  if args.json:
    Path(args.json).write_text(json.dumps(res, indent=2))
  return res


if __name__ == '__main__':
  main()
