"""The generated C library against the jitted JAX float model, at batch 1.

For GRU-16, GRU-64 and LSTM-64 classifiers on JapaneseVowels shapes (12
features, 9 classes, the longest test sequence: 29 steps; random
initialisation, 8-bit per-channel weights, input scale calibrated on the
training split: latency does not depend on the training), this measures

* `C step`: one `rnnc_step` of the library (`deploy.c`) compiled with
  `cc -std=c99 -O2` (`--opt` adds other flags, e.g. `-O3`), streaming:
  the state is reset once per sequence and stepped through it; the median
  over `--blocks` blocks of `--reps` sequences (short blocks, so that a
  neighbour's time slice spoils few of them, as it spoils few of the
  individually timed JAX calls), timed inside C (`clock_gettime`), per
  step;
* `JAX step`: one call of a jitted float step at batch 1 (the input
  projection and the cell, `models.cells.gru_step` / `lstm_step`), the
  state threaded from call to call, median over `--repeats` calls
  (`benchmarks/timing.py`);
* `C seq` / `JAX seq`: one whole sequence: `rnnc_predict` against one call
  of the jitted `model.apply` on (1, T, 12);
* flash (`size` of the objects: weights and tables, code at -O2 and at
  -Os) and RAM (state + stack scratch) of the library.

It also reports the flash of the 4-bit distilled GRU-16 student
(`--student`, default runs/readme/kd_q4_s0/model.rnnc, when present; its
input scale is calibrated on the training split when its header has none).

Usage:
  python -m benchmarks.c_runtime [--models gru16,gru64,lstm64] [--reps 5]
      [--blocks 2001] [--repeats 300] [--opt=-O3] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import timing
import compression
from compression import export
from compression import quantization
from configs import common
import data
from deploy import c as c_lib
from deploy import integer
import models
from models import cells

MODELS = {'gru16': ('gru', 16), 'gru64': ('gru', 64), 'lstm64': ('lstm', 64)}
DATA = {'name': 'japanese_vowels', 'kwargs': {'normalize': True},
        'eval_batch_size': 512}
STUDENT = os.path.join('runs', 'readme', 'kd_q4_s0', 'model.rnnc')

_BENCH_MAIN = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "rnnc.h"

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  const int steps = atoi(argv[1]), blocks = atoi(argv[2]),
            reps = atoi(argv[3]);
  FILE *f = fopen(argv[4], "rb");
  if (!f || steps < 1 || blocks < 1 || reps < 1) return 3;
  int8_t *x = malloc((size_t)steps * RNNC_INPUT_DIM);
  double *step_ns = malloc(sizeof(double) * (size_t)blocks);
  double *seq_ns = malloc(sizeof(double) * (size_t)blocks);
  if (!x || !step_ns || !seq_ns) return 5;
  if (fread(x, 1, (size_t)steps * RNNC_INPUT_DIM, f)
      != (size_t)steps * RNNC_INPUT_DIM) return 4;
  volatile int32_t sink = 0;
  rnnc_state st;
  int32_t out[RNNC_OUTPUT_DIM];
  for (int b = 0; b < blocks + 1; ++b) {  /* Block 0 warms up. */
    double t0 = now_ns();
    for (int r = 0; r < reps; ++r) {
      rnnc_reset(&st);
      for (int t = 0; t < steps; ++t)
        rnnc_step(&st, x + (size_t)t * RNNC_INPUT_DIM);
      sink += st.h[0][0];
    }
    double t1 = now_ns();
    for (int r = 0; r < reps; ++r) {
      rnnc_predict(x, steps, out);
      sink += out[0];
    }
    double t2 = now_ns();
    if (b > 0) {
      step_ns[b - 1] = (t1 - t0) / ((double)reps * steps);
      seq_ns[b - 1] = (t2 - t1) / reps;
    }
  }
  qsort(step_ns, (size_t)blocks, sizeof(double), cmp);
  qsort(seq_ns, (size_t)blocks, sizeof(double), cmp);
  printf("%.2f %.2f %.2f %.2f %d\n", step_ns[blocks / 2], step_ns[0],
         seq_ns[blocks / 2], seq_ns[0], (int)sink & 1);
  return 0;
}
"""


def load_data() -> Any:
  return data.load(ml_collections.ConfigDict(DATA))


def random_artifact(cell: str, hidden: int, dataset: Any, directory: str,
                    bits: int = 8) -> Any:
  """A random-init classifier with `bits`-bit weights, as an Artifact."""
  mc = common.base_config().model
  mc.cell, mc.hidden, mc.layers, mc.pooling = cell, hidden, 1, 'last'
  model = models.make(mc, 'classification', dataset.info)
  x = jnp.asarray(dataset.train['x'][:2])
  lengths = jnp.asarray(dataset.train['lengths'][:2])
  params = model.init(jax.random.PRNGKey(0), x, lengths)['params']
  cc = ml_collections.ConfigDict({
      'methods': 'quantize', 'quantize': quantization.config(bits=bits)})
  comp = compression.make(cc)
  p, s = comp.init(params)
  blob, _ = export.build(
      dense=jax.device_get(comp.apply(p, s)), exports=comp.export(p, s),
      methods=['quantize'], model_cfg=mc, task='classification',
      info=dataset.info, data_cfg=ml_collections.ConfigDict(DATA),
      label=f'random {cell}-{hidden} {bits}-bit')
  path = os.path.join(directory, f'{cell}{hidden}.rnnc')
  return read_with_activations(blob, path, dataset)


def read_with_activations(blob: bytes, path: str, dataset: Any) -> Any:
  """Writes `blob` to `path` (with calibrated activations if it has none)."""
  header, payload = export.split(blob)
  if 'activations' not in header:
    header['activations'] = {
        'bits': 8, 'mode': 'static', 'input_scale': integer.calibrate_input(
            dataset.train['x'], dataset.train['lengths'])}
    blob = export.assemble(header, payload)
  with open(path, 'wb') as f:
    f.write(blob)
  return export.read(path)


def c_figures(art: Any, x: np.ndarray, directory: str,
              args: argparse.Namespace) -> dict[str, Any]:
  """Compiles the library and its timing main; times it; sizes it."""
  prog = integer.lower(art)
  files = c_lib.generate(prog)
  c_lib._write_files(directory, files)  # pylint: disable=protected-access
  cc = c_lib.compiler()
  extra = tuple(args.opt.split()) if args.opt else ()
  sizes = c_lib.object_sizes(cc, directory, extra) or {}
  small = c_lib.object_sizes(cc, directory, ('-Os',)) or {}
  c_lib.object_sizes(cc, directory, extra)  # The objects timed below.
  with open(os.path.join(directory, 'bench.c'), 'w', encoding='utf-8') as f:
    f.write(_BENCH_MAIN)
  exe = os.path.join(directory, 'bench')
  subprocess.run([cc, '-std=c99', '-O2', *extra, 'bench.c', 'rnnc.o',
                  'rnnc_data.o', '-o', exe], cwd=directory, check=True)
  xq = integer.quantize_input(x, prog.input_scale, prog.h_max).astype(np.int8)
  src = os.path.join(directory, 'x.bin')
  xq.tofile(src)
  out = subprocess.run([exe, str(len(x)), str(args.blocks), str(args.reps),
                        src], capture_output=True, text=True, check=True)
  step, step_min, seq, seq_min, _ = out.stdout.split()
  return {'c_step_us': float(step) / 1e3, 'c_step_min_us': float(step_min)
          / 1e3, 'c_seq_us': float(seq) / 1e3,
          'c_seq_min_us': float(seq_min) / 1e3,
          'weights_bytes': sizes.get('weights_bytes'),
          'code_bytes': sizes.get('code_bytes'),
          'code_bytes_Os': small.get('code_bytes'),
          'flash_bytes': sizes.get('flash_bytes'),
          **c_lib._sizes(prog)}  # pylint: disable=protected-access


def jax_calls(art: Any, x: np.ndarray) -> dict[str, timing.Call]:
  """One jitted float step and one jitted sequence, at batch 1."""
  cell = art.header['model']['cell']
  layer = art.params['rnn']['layer_0']
  w = {k: jnp.asarray(v) for k, v in layer.items()}
  hidden = int(art.header['model']['hidden'])

  @jax.jit
  def step(carry, x_t):
    xp = cells.matmul(x_t, w['input_kernel']) + w['bias']
    if cell == 'gru':
      return cells.gru_step(w, carry, xp, jnp.float32)[0]
    if cell == 'lstm':
      return cells.lstm_step(w, carry, xp, jnp.float32)[0]
    return cells.rnn_step(w, carry, xp, jnp.float32)[0]

  zero = jnp.zeros((1, hidden), jnp.float32)
  carry = (zero, zero) if cell == 'lstm' else zero
  xs = jnp.asarray(x[None])
  x_t = xs[:, 0]
  box = [carry]

  def step_call():
    box[0] = step(box[0], x_t)
    jax.block_until_ready(box[0])

  params = jax.tree_util.tree_map(jnp.asarray, art.params)
  apply = jax.jit(lambda p, x, l: art.model.apply({'params': p}, x, l))
  lengths = jnp.asarray([len(x)], jnp.int32)

  def seq_call():
    jax.block_until_ready(apply(params, xs, lengths))

  return {'step': step_call, 'seq': seq_call}


def student_flash(path: str, dataset: Any, directory: str) -> dict | None:
  """Flash of the 4-bit distilled student's library (None: no artifact)."""
  if not os.path.exists(path):
    return None
  with open(path, 'rb') as f:
    art = read_with_activations(f.read(), os.path.join(directory, 's.rnnc'),
                                dataset)
  files = c_lib.generate(integer.lower(art))
  c_lib._write_files(directory, files)  # pylint: disable=protected-access
  cc = c_lib.compiler()
  o2 = c_lib.object_sizes(cc, directory) or {}
  os_ = c_lib.object_sizes(cc, directory, ('-Os',)) or {}
  return {'artifact': path, 'config': art.header.get('config'),
          'hidden': art.header['model']['hidden'],
          'pooling': art.header['model'].get('pooling'),
          'weights_bytes': o2.get('weights_bytes'),
          'code_bytes': o2.get('code_bytes'),
          'code_bytes_Os': os_.get('code_bytes'),
          **c_lib._sizes(integer.lower(art))}  # pylint: disable=protected-access


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--models', default='gru16,gru64,lstm64',
                 help='comma-separated: ' + ', '.join(MODELS))
  p.add_argument('--reps', type=int, default=5,
                 help='sequences per timed C block')
  p.add_argument('--blocks', type=int, default=2001,
                 help='timed C blocks (the median is reported)')
  p.add_argument('--repeats', type=int, default=300,
                 help='timed JAX calls per variant')
  p.add_argument('--block', type=int, default=20,
                 help='consecutive JAX calls of one variant per round')
  p.add_argument('--opt', default='', help='extra C compiler flags, e.g. '
                 '-O3')
  p.add_argument('--student', default=STUDENT,
                 help='the 4-bit student artifact whose flash is reported')
  p.add_argument('--json', default=None,
                 help='also write the results to this JSON file')
  args = p.parse_args(argv)
  names = [n.strip() for n in args.models.split(',') if n.strip()]
  for n in names:
    if n not in MODELS:
      p.error(f'--models: unknown {n!r}; valid: {", ".join(MODELS)}')
  if c_lib.compiler() is None:
    p.error('no C compiler found (set $CC or install cc)')
  dataset = load_data()
  test = dataset.test
  longest = int(np.argmax(test['lengths']))
  x = np.asarray(test['x'][longest][:int(test['lengths'][longest])])
  results: dict[str, Any] = {}
  calls: dict[str, timing.Call] = {}
  with tempfile.TemporaryDirectory(prefix='c_runtime_') as tmp:
    for n in names:
      cell, hidden = MODELS[n]
      d = os.path.join(tmp, n)
      os.makedirs(d)
      art = random_artifact(cell, hidden, dataset, d)
      results[n] = c_figures(art, x, d, args)
      for k, call in jax_calls(art, x).items():
        calls[f'{n}/{k}'] = call
    times = timing.round_robin(calls, args.repeats, args.block, warmup=5)
    student = student_flash(args.student, dataset, tmp)
  print(f'C: cc -O2 {args.opt}; JAX {jax.__version__} on '
        f'{jax.devices()[0].platform}; {len(x)} steps, batch 1; medians '
        '(step ratio of the minima in brackets)')
  print(f'{"model":8s} {"C step us":>9s} {"JAX step us":>11s} {"ratio":>6s} '
        f'     {"C seq us":>8s} {"JAX seq us":>10s} {"ratio":>6s} '
        f'{"weights B":>9s} {"code B":>6s} {"code -Os":>8s} {"RAM B":>6s}')
  for n in names:
    r = results[n]
    r['jax_step_us'] = statistics.median(times[f'{n}/step']) * 1e3
    r['jax_step_min_us'] = min(times[f'{n}/step']) * 1e3
    r['jax_seq_us'] = statistics.median(times[f'{n}/seq']) * 1e3
    r['jax_seq_min_us'] = min(times[f'{n}/seq']) * 1e3
    r['step_ratio'] = r['jax_step_us'] / r['c_step_us']
    r['step_ratio_min'] = r['jax_step_min_us'] / r['c_step_min_us']
    r['seq_ratio'] = r['jax_seq_us'] / r['c_seq_us']
    print(f'{n:8s} {r["c_step_us"]:9.3f} {r["jax_step_us"]:11.1f} '
          f'{r["step_ratio"]:6.0f} ({r["step_ratio_min"]:.0f}) '
          f'{r["c_seq_us"]:8.2f} '
          f'{r["jax_seq_us"]:10.1f} {r["seq_ratio"]:6.0f} '
          f'{r["weights_bytes"]:9d} {r["code_bytes"]:6d} '
          f'{r["code_bytes_Os"]:8d} {r["ram_bytes"]:6d}')
  if student:
    results['student'] = student
    print(f'student {student["config"]} (GRU-{student["hidden"]}, '
          f'{student["pooling"]} pooling, 4-bit): weights+tables '
          f'{student["weights_bytes"]} B, code {student["code_bytes"]} B '
          f'(-Os {student["code_bytes_Os"]} B), RAM {student["ram_bytes"]} B')
  timing.write_json(args.json, args, results)
  return results


if __name__ == '__main__':
  main()
