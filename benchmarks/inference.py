"""Jitted inference latency of a GRU classifier: dense against compressed.

One forward pass of a GRU classifier (last-state pooling) on a batch, jitted;
the median over many timed calls after warm-up. Every variant runs in the same
process, in blocks of consecutive calls, round-robin (`benchmarks/timing.py`),
so a busy neighbour on a shared machine slows every variant alike; ratios are
against `dense`.

Variants are entries of `VARIANTS`, a list of `Variant(name, build)`: `build`
gets the shape arguments and the dense model's parameters and returns a
`(forward, params)` pair, `forward(params, x, lengths) -> logits` being jitted
here. To add one, append a Variant.

* `dense`: the float model as trained.
* `lowrank`: every recurrent and input kernel replaced by truncated-SVD
  factors at a quarter of its full rank (`--rank_fraction`), multiplied
  through as (x U) V by `models.cells.matmul`.
* `shrunk`: half the hidden units removed by one-shot unit pruning
  (`compression.pruning`, granularity 'unit', `--unit_sparsity`) and the
  model rebuilt without them (`pruning.shrink`): a physically smaller GRU.
* `artifact 8-bit 80%`: the model pruned to 80% unstructured sparsity and
  quantized to 8 bits, written as a `.rnnc` artifact and rebuilt from the
  file (`compression.export.read`): the dense float32 model the artifact
  decodes to, so its latency is the dense model's (the artifact saves
  storage, not compute, on dense float kernels).
* `artifact lowrank`: the `lowrank` model written and rebuilt from its
  artifact; the rebuilt model keeps the factors.
* `artifact shrunk`: the `shrunk` model's artifact, rebuilt.

Usage:
  python -m benchmarks.inference [--hidden 256 --features 64 --steps 64
                                  --batch 64 --repeats 200] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
import compression
from compression import export
from compression import lowrank
from compression import pruning
from compression import quantization
from configs import common
import models

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


def model_config(args: argparse.Namespace, hidden: int | None = None
                 ) -> Any:
  """The `model` config section of the GRU classifier every variant uses."""
  cfg = common.base_config().model
  cfg.cell, cfg.layers, cfg.pooling = 'gru', args.layers, 'last'
  cfg.hidden = args.hidden if hidden is None else hidden
  return cfg


def info(args: argparse.Namespace) -> dict[str, Any]:
  """The data facts `models.make` and the artifact header need."""
  return {'num_classes': args.classes, 'input_dim': args.features,
          'max_len': args.steps}


def make_model(args: argparse.Namespace, hidden: int | None = None) -> Any:
  """The GRU classifier (`models.make`), at `hidden` units if given."""
  return models.make(model_config(args, hidden), 'classification', info(args))


def forward_of(model: Any) -> Forward:
  """`forward(params, x, lengths)` of a Flax model."""
  def forward(p, x, lengths):
    return model.apply({'params': p}, x, lengths)
  return forward


def build_dense(args: argparse.Namespace, params: Any
                ) -> tuple[Forward, Any]:
  """The dense float model."""
  return forward_of(make_model(args)), params


def compression_config(methods: str, **sections: Any) -> Any:
  """A `config.compression` section naming `methods`, with their sections."""
  cfg = common.base_config().compression
  cfg.methods = methods
  for name, section in sections.items():
    cfg[name] = section
  return cfg


def _lowrank_config(args: argparse.Namespace) -> Any:
  return compression_config('lowrank', lowrank=lowrank.config(
      regex=r'rnn/.*(input|recurrent)_kernel',
      rank_fraction=args.rank_fraction))


def build_lowrank(args: argparse.Namespace, params: Any
                  ) -> tuple[Forward, Any]:
  """Recurrent and input kernels as SVD factors at a fraction of full rank."""
  model = make_model(args)
  comp = compression.make(_lowrank_config(args))
  factored, state = comp.init(params)

  def forward(p, x, lengths):
    # `apply` is the identity on unshared factors; kept so the variant times
    # exactly what training and evaluation run.
    return model.apply({'params': comp.apply(p, state)}, x, lengths)

  return forward, factored


def _compressed(comp: compression.Compressor, params: Any
                ) -> tuple[Any, Any]:
  """`comp` initialized on `params` and updated once at step 0 (one-shot
  masks are computed there)."""
  p, state = comp.init(params)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, p)
  return comp.update(p, state, zeros, jnp.zeros((), jnp.int32))


def _shrunk_params(args: argparse.Namespace, params: Any) -> tuple[Any, int]:
  """Unit-pruned (one shot) and physically shrunk parameters, hidden kept."""
  comp = compression.make(compression_config('prune', prune=pruning.config(
      granularity='unit', schedule='oneshot', sparsity=args.unit_sparsity,
      begin_step=0)))
  p, state = _compressed(comp, params)
  return pruning.shrink(comp.apply(p, state), 'gru')


def build_shrunk(args: argparse.Namespace, params: Any
                 ) -> tuple[Forward, Any]:
  """Half the units removed and the model rebuilt smaller."""
  small, kept = _shrunk_params(args, params)
  return forward_of(make_model(args, kept)), small


def _rebuilt(args: argparse.Namespace, cfg: Any, params: Any,
             hidden: int | None = None) -> tuple[Forward, Any]:
  """Writes the artifact of `params` compressed as the `cfg` section says and
  rebuilds the model from it."""
  comp = compression.make(cfg)
  p, state = _compressed(comp, params)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, export.FILENAME)
    export.write(path, dense=comp.apply(p, state), exports=comp.export(p, state),
                 methods=compression.method_names(cfg),
                 model_cfg=model_config(args, hidden), task='classification',
                 info=info(args))
    artifact = export.read(path)
  return forward_of(artifact.model), artifact.params


def build_artifact(args: argparse.Namespace, params: Any
                   ) -> tuple[Forward, Any]:
  """80% unstructured pruning + 8-bit, through the artifact file."""
  return _rebuilt(args, compression_config(
      'prune,quantize',
      prune=pruning.config(sparsity=0.8, schedule='oneshot', begin_step=0),
      quantize=quantization.config(bits=8)), params)


def build_artifact_lowrank(args: argparse.Namespace, params: Any
                           ) -> tuple[Forward, Any]:
  """The low-rank model through its artifact file."""
  return _rebuilt(args, _lowrank_config(args), params)


def build_artifact_shrunk(args: argparse.Namespace, params: Any
                          ) -> tuple[Forward, Any]:
  """The shrunk model through its artifact file."""
  small, kept = _shrunk_params(args, params)
  return _rebuilt(args, compression_config(''), small, kept)


VARIANTS: list[Variant] = [
    Variant('dense', build_dense),
    Variant('lowrank', build_lowrank),
    Variant('shrunk', build_shrunk),
    Variant('artifact 8-bit 80%', build_artifact),
    Variant('artifact lowrank', build_artifact_lowrank),
    Variant('artifact shrunk', build_artifact_shrunk),
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
  parser = timing.parser(__doc__.splitlines()[0], features=64, hidden=256,
                         unit='calls')
  parser.add_argument('--layers', type=int, default=1)
  parser.add_argument('--rank_fraction', type=float, default=0.25,
                      help='lowrank: share of each kernel\'s full rank')
  parser.add_argument('--unit_sparsity', type=float, default=0.5,
                      help='shrunk: share of hidden units removed')
  parser.add_argument('--variants', type=str, default='',
                      help='comma-separated names to run (default: all)')
  args = parser.parse_args(argv)

  x, lengths, _ = timing.synthetic_batch(args, full_length=True)
  dense_params = make_model(args).init(jax.random.key(0), x,
                                       lengths)['params']
  wanted = [v.strip() for v in args.variants.split(',') if v.strip()]
  variants = [v for v in VARIANTS if not wanted or v.name in wanted]
  if not any(v.name == 'dense' for v in variants):
    variants.insert(0, VARIANTS[0])  # The reference of every ratio.

  calls, params, compile_s = {}, {}, {}
  for v in variants:
    forward, p = v.build(args, dense_params)
    fn = jax.jit(forward)
    params[v.name] = p
    calls[v.name] = lambda fn=fn, p=p: fn(p, x, lengths).block_until_ready()
    compile_s[v.name] = timing.first_call(calls[v.name])
  times = timing.round_robin(calls, args.repeats, args.block, args.warmup)

  ref = statistics.median(times['dense'])
  results = {}
  print(f'{jax.devices()[0].platform} B={args.batch} T={args.steps} '
        f'F={args.features} H={args.hidden} layers={args.layers}, '
        f'{len(times["dense"])} calls each')
  print(f'{"variant":20s} {"params":>9s} {"median ms":>10s} {"min":>8s} '
        f'{"max":>8s} {"compile s":>10s} {"dense/this":>10s}')
  for v in variants:
    t = times[v.name]
    med = statistics.median(t)
    r = results[v.name] = dict(
        **timing.summary(t), compile_s=compile_s[v.name],
        params=count(params[v.name]), speedup_vs_dense=ref / med)
    print(f'{v.name:20s} {r["params"]:9d} {med:10.3f} {r["min_ms"]:8.3f} '
          f'{r["max_ms"]:8.3f} {r["compile_s"]:10.2f} '
          f'{r["speedup_vs_dense"]:10.2f}')
  timing.write_json(args.json, args, results)
  return results


if __name__ == '__main__':
  main()
