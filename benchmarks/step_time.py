"""Training-step time of our GRU and LSTM against PyTorch, and what methods cost.

The benchmark shape: a one-layer classifier (input 16, hidden 128, sequence
length 64, batch 64, 10 classes, linear head on the last state), Adam. Every
JAX row is train.py's own jitted step (`train.make_train_step`: compressor
`apply`, loss, gradient, clipping, optax update, compressor `update`, NaN
guard, donated state) on a config built from `configs/common.base_config()`
with `data.name='synthetic_classification'` (every sequence full length, as
PyTorch runs it).

On CPU the host is split into `--cpu_devices` JAX devices (default one per
usable core, as `train.py --cpu_devices=0`) and the step runs data-parallel
over them, each device with its share of the batch: XLA:CPU runs the
recurrence's small per-step operations one after another on one thread, and
this is how the JAX step uses the cores that PyTorch's intra-op threads use
(`--torch_threads`, default as many as there are devices). Rows:

* `gru`, `lstm`: the float model, data-parallel over all devices.
* `gru 1 device`, `lstm 1 device`: the same step on one device, what
  `train.py` does by default.
* `gru autodiff`, `lstm autodiff`: the same step with the layer's generic scan
  differentiated by `jax.grad` (`RecurrentLayer(custom_grad=False)`), to show
  what the hand-written backward pass of `models/cells.py` gains.
* `gru fake-quant`: 8-bit fake-quant of every kernel (`compression.quantization`).
* `gru masks`: 80% unstructured magnitude pruning masks (`compression.pruning`,
  one-shot at step 0, so the timed steps apply fixed masks).
* `gru distill`: soft-label distillation (Hinton; no feature or attention term)
  from a teacher of the same shape run inside the same step.
* `gru bfloat16`: `model.dtype='bfloat16'` (bf16 matmuls, float32 master
  weights and gate arithmetic).
* `gru float16`: `model.dtype='float16'` (float16 matmuls, float32 master
  weights, dynamic loss scaling: the scaled loss, the unscaling and the
  overflow check of every step, `train.loss_scaled`).
* `gru kronecker`: every kernel of the layer a sum of 2 Kronecker products
  (`compression.kronecker`), multiplied through (two small products per
  row instead of one dense one) in the generic scan.
* `gru early exit`: the per-step head and loss of `compression.early_exit`.
* `gru highest`: `model.matmul_precision='highest'` (full float32 products;
  on GPUs the default lets float32 matmuls run in TF32, on CPU it changes
  nothing but the program's precision flags).
* `torch gru`, `torch lstm`: `torch.nn.GRU` / `torch.nn.LSTM` (batch_first),
  linear head on the last state, cross-entropy, Adam; a full step (zero_grad,
  forward, loss, backward, optimizer step) with `torch.set_num_threads`
  (`--torch_threads`).
* `matmul 1024`: a jitted 1024x1024 float32 matmul, whose rate is the matmul
  peak (GFLOP/s) that the steps' FLOP rates are a fraction of. Rates (GFLOP/s,
  fraction of peak) come from each row's fastest step, the figure a busy
  neighbour changes least; times are medians, min and max.

Every row runs in the same process, in blocks of consecutive steps,
round-robin (`benchmarks/timing.py`), so a busy neighbour on a shared machine
slows every row alike. FLOPs per step are counted analytically: the matmuls
of the forward pass (input and recurrent products at every step, the head)
times 3 for forward + backward.

Needs PyTorch (see benchmarks/requirements.txt); never part of pytest.

Usage:
  python -m benchmarks.step_time [--repeats 300] [--cpu_devices 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from compression import kronecker
from compression import pruning
from compression import quantization
from configs import common
import data
from models import cells
import cli
import train

GATES = {'gru': 3, 'lstm': 4, 'rnn': 1}
Step = timing.Call


class AutodiffClassifier(nn.Module):
  """The float classifier with the layer's scan left to `jax.grad`."""
  cell: str
  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    _, carry = cells.RecurrentLayer(cell=self.cell, hidden=self.hidden,
                                    custom_grad=False, name='layer_0')(
                                        x, lengths)
    return cells.Dense(self.num_classes, name='head')(
        cells.final_hidden(carry))


def make_config(args: argparse.Namespace, cell: str, methods: str = '',
                dtype: str = 'float32', precision: str = 'default',
                early_exit: bool = False) -> Any:
  """The benchmark shape as a train.py config.

  Args:
    args: the command-line shape arguments.
    cell: 'gru' or 'lstm'.
    methods: `compression.methods` ('' = float, 'quantize', 'prune' or
      'kronecker').
    dtype: `model.dtype`, the compute dtype.
    precision: `model.matmul_precision`.
    early_exit: train the per-step head (`early_exit.enabled`).

  Returns:
    A ConfigDict from `common.base_config()`.
  """
  c = common.base_config()
  c.name = f'step_time_{cell}'
  c.data.name = 'synthetic_classification'
  c.data.kwargs.num_train = max(256, args.batch)
  c.data.kwargs.num_test = args.batch
  c.data.kwargs.min_len = args.steps
  c.data.kwargs.max_len = args.steps
  c.data.kwargs.features = args.features
  c.data.kwargs.num_classes = args.classes
  c.data.batch_size = args.batch
  c.data.eval_batch_size = args.batch
  c.model.cell = cell
  c.model.hidden = args.hidden
  c.model.pooling = 'last'
  c.model.dtype = dtype
  c.model.matmul_precision = precision
  c.early_exit.enabled = early_exit
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 10_000
  c.compression.methods = methods
  if methods == 'quantize':
    c.compression.quantize = quantization.config(bits=8, regex='.*kernel')
  elif methods == 'kronecker':
    c.compression.kronecker = kronecker.config(terms=2, rescale=True,
                                               regex='.*kernel')
  elif methods == 'prune':
    c.compression.prune = pruning.config(
        sparsity=0.8, granularity='unstructured', schedule='oneshot',
        begin_step=0, regex='.*kernel')
  return c


def jax_step(config: Any, devices: list[Any], model: nn.Module | None = None,
             distill: bool = False) -> tuple[Step, float]:
  """train.py's jitted step for `config`, bound to one fixed batch.

  Args:
    config: from `make_config`.
    devices: the devices the step runs data-parallel over.
    model: replaces the config's model (the autodiff rows).
    distill: add a teacher of the same shape (soft labels only).

  Returns:
    (a function running one blocking step, first-call seconds: trace +
    compile + one step).
  """
  setup = train.build(config, devices)
  if model is not None:
    setup = setup._replace(model=model)
  if distill:
    with config.unlocked():
      config.distill.feature_weight = 0.0
      config.distill.attention_weight = 0.0
    example = jax.tree.map(lambda a: a[:2], setup.dataset.train)
    t_params = setup.model.init(jax.random.PRNGKey(1), example['x'],
                                example['lengths'])['params']
    setup = setup._replace(teacher=train.Teacher(
        setup.model, t_params, int(config.model.hidden), {}))
  replicated = jax.sharding.NamedSharding(setup.mesh, jax.P())
  rows = jax.sharding.NamedSharding(setup.mesh, jax.P('data'))
  state = jax.device_put(train.init_state(config, setup), replicated)
  teacher_params = (jax.device_put(setup.teacher.params, replicated)
                    if setup.teacher else {})
  batch = train.put_batch(data.train_batch(
      setup.dataset.train, config.data.batch_size, config.seed, 0), rows)
  run = timing.stepping(train.make_train_step(setup, config), state, batch,
                        teacher_params)
  return run, timing.first_call(run)


def torch_step(args: argparse.Namespace, cell: str) -> tuple[Step, float]:
  """The same model and step in PyTorch.

  Returns:
    (a function running one step, seconds of the first step).
  """
  import torch  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  rnn_cls = torch.nn.GRU if cell == 'gru' else torch.nn.LSTM

  class Net(torch.nn.Module):
    """Recurrent layer and a linear head on the last state."""

    def __init__(self):
      super().__init__()
      self.rnn = rnn_cls(args.features, args.hidden, batch_first=True)
      self.head = torch.nn.Linear(args.hidden, args.classes)

    def forward(self, x):
      _, state = self.rnn(x)
      h = state[0] if isinstance(state, tuple) else state
      return self.head(h[-1])

  net = Net()
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  # Every sequence full length, as nn.GRU / nn.LSTM run them.
  x, _, labels = timing.synthetic_batch(args, full_length=True)
  # Writable numpy copies (torch warns on the read-only views of JAX arrays).
  x = torch.tensor(np.array(x), dtype=torch.float32)
  y = torch.tensor(np.array(labels), dtype=torch.long)

  def run() -> None:
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()

  return run, timing.first_call(run)


def matmul_step(n: int) -> tuple[Step, float]:
  """A jitted n x n float32 matmul: the peak rate reference."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)),
                  jnp.float32)
  f = jax.jit(lambda a: a @ a)

  def run() -> None:
    f(a).block_until_ready()

  return run, timing.first_call(run)


def step_flops(args: argparse.Namespace, cell: str) -> float:
  """Matmul FLOPs of one training step (forward x 3), counted analytically."""
  gh = GATES[cell] * args.hidden
  per_step = 2 * args.batch * (args.features * gh + args.hidden * gh)
  forward = args.steps * per_step + 2 * args.batch * args.hidden * args.classes
  return 3.0 * forward


def machine() -> dict[str, Any]:
  """CPU model, cores, load and library versions."""
  model = platform.processor() or 'unknown'
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  return {'cpu': model, 'cores': os.cpu_count(),
          'load_average': list(os.getloadavg()),
          'device': str(jax.devices()[0]), 'jax': jax.__version__,
          'torch': torch_version, 'python': platform.python_version()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark, prints the table, optionally writes JSON.

  Args:
    argv: command-line arguments (default: sys.argv[1:]).

  Returns:
    The flat results dict (also what `--json` writes).
  """
  parser = timing.parser(__doc__.splitlines()[0], per='row')
  parser.add_argument('--cpu_devices', type=int, default=0,
                      help='JAX CPU devices the main rows run data-parallel '
                      'over, as train.py --cpu_devices (0 = one per core)')
  parser.add_argument('--torch_threads', type=int, default=0,
                      help='PyTorch intra-op threads (0 = as many as the JAX '
                      'rows have CPU devices, so both use the same cores)')
  parser.add_argument('--no_torch', action='store_true',
                      help='skip the PyTorch rows')
  parser.add_argument('--markdown', action='store_true',
                      help='also print the table as Markdown (for README)')
  args = parser.parse_args(argv)

  # Before anything touches a device; no effect on GPU/TPU.
  cli.configure_cpu_devices(args.cpu_devices)
  devices = jax.devices()
  n_dev = len(devices)
  one = devices[:1]
  use_torch = not args.no_torch
  torch_threads = args.torch_threads or (
      n_dev if devices[0].platform == 'cpu' else cli.usable_cores())
  if use_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(torch_threads)

  rows: dict[str, tuple[Step, float]] = {}
  for cell in ('gru', 'lstm'):
    rows[cell] = jax_step(make_config(args, cell), devices)
    rows[f'{cell} 1 device'] = jax_step(make_config(args, cell), one)
    rows[f'{cell} autodiff'] = jax_step(
        make_config(args, cell), devices,
        model=AutodiffClassifier(cell, args.hidden, args.classes))
  rows['gru fake-quant'] = jax_step(make_config(args, 'gru', 'quantize'),
                                    devices)
  rows['gru masks'] = jax_step(make_config(args, 'gru', 'prune'), devices)
  rows['gru distill'] = jax_step(make_config(args, 'gru'), devices,
                                 distill=True)
  rows['gru bfloat16'] = jax_step(
      make_config(args, 'gru', dtype='bfloat16'), devices)
  rows['gru float16'] = jax_step(
      make_config(args, 'gru', dtype='float16'), devices)
  rows['gru kronecker'] = jax_step(make_config(args, 'gru', 'kronecker'),
                                   devices)
  rows['gru early exit'] = jax_step(make_config(args, 'gru', early_exit=True),
                                    devices)
  rows['gru highest'] = jax_step(
      make_config(args, 'gru', precision='highest'), devices)
  if use_torch:
    rows['torch gru'] = torch_step(args, 'gru')
    rows['torch lstm'] = torch_step(args, 'lstm')
  rows['matmul 1024'] = matmul_step(1024)

  times = timing.round_robin({name: run for name, (run, _) in rows.items()},
                             args.repeats, args.block, args.warmup)
  med = {name: statistics.median(t) for name, t in times.items()}
  best = {name: min(t) for name, t in times.items()}
  # Rates from the fastest step of each row: on a shared machine the minimum
  # is the figure least changed by the neighbours' load, for the matmul
  # reference as for the steps.
  peak = 2 * 1024**3 / (best['matmul 1024'] * 1e-3) / 1e9
  info = machine()
  res: dict[str, Any] = {'machine': info, 'args': vars(args),
                         'cpu_devices': n_dev, 'torch_threads': torch_threads,
                         'peak_gflops': peak,
                         'rows': {}}
  print(f'{info["cpu"]}, {info["cores"]} cores, load {info["load_average"]}; '
        f'jax {info["jax"]}, torch {info["torch"]}')
  print(f'B={args.batch} T={args.steps} F={args.features} H={args.hidden} '
        f'C={args.classes}; {len(times["gru"])} steps per row; rows without '
        f'"1 device" run data-parallel on {n_dev} {devices[0].platform} '
        f'device(s); PyTorch {torch_threads} thread(s); matmul peak '
        f'{peak:.1f} GFLOP/s')
  print(f'{"row":16s} {"median ms":>10s} {"min":>8s} {"max":>8s} '
        f'{"first s":>8s} {"GFLOP/s":>8s} {"of peak":>8s}')
  print(f'{"":16s} {"":>10s} {"":>8s} {"":>8s} {"":>8s} {"(at min)":>8s}')
  for name, t in times.items():
    cell = 'lstm' if 'lstm' in name else 'gru'
    if name.startswith('matmul'):
      flops = 2.0 * 1024**3
    elif 'distill' in name:
      # The teacher of the same shape adds one forward pass (a third).
      flops = step_flops(args, cell) * (1 + 1 / 3)
    else:
      flops = step_flops(args, cell)
    rate = flops / (best[name] * 1e-3) / 1e9
    row = {**timing.summary(t), 'first_call_s': rows[name][1],
           'flops': flops, 'gflops': rate, 'fraction_of_peak': rate / peak}
    res['rows'][name] = row
    print(f'{name:16s} {med[name]:10.3f} {min(t):8.3f} {max(t):8.3f} '
          f'{rows[name][1]:8.2f} {rate:8.1f} {rate / peak:8.2f}')

  res.update({
      'gru_ms': med['gru'], 'lstm_ms': med['lstm'],
      'gru_1device_ms': med['gru 1 device'],
      'lstm_1device_ms': med['lstm 1 device'],
      'gru_compile_s': rows['gru'][1], 'lstm_compile_s': rows['lstm'][1],
      'gru_flops': step_flops(args, 'gru'),
      'lstm_flops': step_flops(args, 'lstm'),
      'gru_fraction_of_peak': res['rows']['gru']['fraction_of_peak'],
      'lstm_fraction_of_peak': res['rows']['lstm']['fraction_of_peak'],
      'gru_data_parallel_speedup': med['gru 1 device'] / med['gru'],
      'lstm_data_parallel_speedup': med['lstm 1 device'] / med['lstm'],
      'gru_custom_vjp_speedup': med['gru autodiff'] / med['gru'],
      'lstm_custom_vjp_speedup': med['lstm autodiff'] / med['lstm'],
      'fake_quant_ratio': med['gru fake-quant'] / med['gru'],
      'mask_ratio': med['gru masks'] / med['gru'],
      'distill_ratio': med['gru distill'] / med['gru'],
      'bfloat16_ratio': med['gru bfloat16'] / med['gru'],
      'float16_ratio': med['gru float16'] / med['gru'],
      'highest_precision_ratio': med['gru highest'] / med['gru'],
      'kronecker_ratio': med['gru kronecker'] / med['gru'],
      'early_exit_ratio': med['gru early exit'] / med['gru'],
      'gru_torch_ms': med.get('torch gru'),
      'lstm_torch_ms': med.get('torch lstm'),
  })
  print()
  if use_torch:
    res['gru_speedup_vs_torch'] = med['torch gru'] / med['gru']
    res['lstm_speedup_vs_torch'] = med['torch lstm'] / med['lstm']
    # Minima are the least load-sensitive figures on a shared machine.
    res['gru_speedup_vs_torch_min'] = best['torch gru'] / best['gru']
    res['lstm_speedup_vs_torch_min'] = best['torch lstm'] / best['lstm']
    res['gru_1device_speedup_vs_torch'] = (med['torch gru']
                                           / med['gru 1 device'])
    res['lstm_1device_speedup_vs_torch'] = (med['torch lstm']
                                            / med['lstm 1 device'])
    print(f'torch / ours (median): GRU {res["gru_speedup_vs_torch"]:.2f}x, '
          f'LSTM {res["lstm_speedup_vs_torch"]:.2f}x;  (min): GRU '
          f'{res["gru_speedup_vs_torch_min"]:.2f}x, LSTM '
          f'{res["lstm_speedup_vs_torch_min"]:.2f}x;  on 1 device (median): '
          f'GRU {res["gru_1device_speedup_vs_torch"]:.2f}x, LSTM '
          f'{res["lstm_1device_speedup_vs_torch"]:.2f}x')
  print(f'{n_dev} devices vs 1: GRU {res["gru_data_parallel_speedup"]:.2f}x, '
        f'LSTM {res["lstm_data_parallel_speedup"]:.2f}x;  hand-written '
        f'backward vs jax.grad: GRU {res["gru_custom_vjp_speedup"]:.2f}x, '
        f'LSTM {res["lstm_custom_vjp_speedup"]:.2f}x')
  print(f'cost vs the float GRU step: fake-quant '
        f'{res["fake_quant_ratio"]:.3f}, masks {res["mask_ratio"]:.3f}, '
        f'distillation {res["distill_ratio"]:.3f}, bfloat16 compute '
        f'{res["bfloat16_ratio"]:.3f}, float16 compute with loss scaling '
        f'{res["float16_ratio"]:.3f}, matmul precision highest '
        f'{res["highest_precision_ratio"]:.3f}, Kronecker factors '
        f'{res["kronecker_ratio"]:.3f}, early-exit head and loss '
        f'{res["early_exit_ratio"]:.3f}')
  if args.markdown:
    print()
    print(markdown_table(res))
  if args.json:
    Path(args.json).write_text(json.dumps(res, indent=2))
  return res


def markdown_table(res: dict[str, Any]) -> str:
  """The rows of a `main()` result as a Markdown table."""
  lines = ['| row | median ms | min | max | first s | GFLOP/s (at min) | of peak |',
           '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
  for name, r in res['rows'].items():
    lines.append(f'| {name} | {r["median_ms"]:.2f} | {r["min_ms"]:.2f} | '
                 f'{r["max_ms"]:.2f} | {r["first_call_s"]:.2f} | '
                 f'{r["gflops"]:.0f} | {r["fraction_of_peak"]:.2f} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
