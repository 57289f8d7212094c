"""Deep Compression (Han et al. 2016) of the GRU-64 speaker classifier.

  python train.py --config=configs/deep_compression.py          # all stages
  python train.py --config=configs/deep_compression.py:smoke    # seconds

The paper's three stages, each a run that starts from the previous one:

1. Train the float model (`gru_baseline`, into <workdir>/init/init).
2. Prune (`:stage=prune`, into <workdir>/init): gradual magnitude pruning of
   every kernel, the head included (at this size the head is 4% of the
   weights, and the biases that stay dense cost more than the pruned
   kernels), to `sparsity` with one global threshold, then retrain at that
   sparsity. Pruned master weights are zeroed, so the checkpoint holds exact
   zeros.
3. Share weights (this run): k-means on the surviving weights of each kernel
   (`compression.clustering` keeps a zero cluster pinned at exactly 0 for the
   pruned ones and clusters only the nonzero weights into `clusters - 1`
   centroids, linear init), then fine-tune the centroids with the indices
   fixed; biases are quantized to 8 bits.
4. Huffman coding: `model.rnnc` stores the kept positions as relative
   indices and the cluster indices, each Huffman-coded where that is smaller
   (`compression.accounting`); `results.json` has `compressed_bytes` (the
   file), `fixed_width_bytes` and `entropy_coded_bytes`.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); stage
('share' | 'prune'); sparsity (default 0.95); clusters (default 16, i.e. 4-bit
indices).
"""

from compression import clustering
from compression import pruning
from compression import quantization
from configs import common
from configs import gru_baseline


def _named(name: str, cell: str) -> str:
  """The recipe's name; another cell's runs get their own default workdir."""
  return name if cell == 'gru' else f'{cell}_{name}'


def get_config(arg=None):
  """The weight-sharing stage, or with `:stage=prune` the pruning stage."""
  a = common.parse_arg(arg, cell='gru', smoke=False, stage='share',
                       sparsity=0.95, clusters=16)
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  if a.stage == 'prune':
    c.name = _named('deep_compression_prune', a.cell)
    c.init_config = 'gru_baseline.py:smoke' if a.smoke else 'gru_baseline'
    c.compression.methods = 'prune'
    c.compression.prune = pruning.config(
        score='magnitude', granularity='unstructured', allocation='global',
        schedule='gradual', sparsity=a.sparsity, begin_step=0, end_step=400,
        frequency=10, regex='.*kernel')
    c.optimizer.learning_rate = 3e-3
    c.train.steps = 700  # 400 steps of rising sparsity, 300 of retraining.
    c.train.eval_every = 350
    c.train.checkpoint_every = 350
    if a.smoke:
      c.compression.prune.end_step = 3
      c.compression.prune.frequency = 1
      c.train.steps = 4
      c.train.eval_every = 2
      c.train.checkpoint_every = 2
    return c
  if a.stage != 'share':
    raise common.InputError(f"config arg stage: {a.stage!r}; valid: share, "
                            'prune')
  c.name = _named('deep_compression', a.cell)
  prune_arg = f'stage=prune,sparsity={a.sparsity}' + (',smoke' if a.smoke
                                                      else '')
  c.init_config = f'deep_compression.py:{prune_arg}'
  c.compression.methods = 'kmeans,quantize'
  c.compression.kmeans = clustering.config(clusters=a.clusters,
                                           regex='.*kernel')
  c.compression.quantize = quantization.config(
      bits=8, regex='.*bias', granularity='per_tensor')
  # The codebooks only need a nudge; a large rate overfits the few centroids.
  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 0
  c.train.steps = 300
  c.train.eval_every = 150
  c.train.checkpoint_every = 150
  if a.smoke:
    common.make_smoke(c)
  return c


def sweep(arg=None):
  """The grid of REPRODUCTION.md's Deep Compression item, for sweep.py.

  Per seed: the float baseline (stage 0), pruning it to 80% and 92% sparsity
  (stage 1, `:stage=prune`), then weight sharing of each pruned model with 16
  and 4 clusters (stage 2), each run starting from the previous stage's run.

  Args:
    arg: `smoke` (a tiny grid of smoke runs), `seeds=N` (default 3;
      1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  a = common.parse_arg(arg, smoke=False, seeds=0)
  smoke = ',smoke' if a.smoke else ''
  points = []
  for s in range(a.seeds or (1 if a.smoke else 3)):
    points.append(common.baseline_point(s, a.smoke))
    for sp in ((0.92,) if a.smoke else (0.8, 0.92)):
      points.append(dict(
          name=f'prune{sp}_s{s}', group=f'prune{sp}',
          method='pruning (global, all kernels)',
          arg=f'stage=prune,sparsity={sp}' + smoke,
          overrides={'seed': s, 'init_from': f'{{sweep_dir}}/baseline_s{s}'}))
      for k in ((4,) if a.smoke else (16, 4)):
        points.append(dict(
            name=f'prune{sp}_share{k}_s{s}', group=f'prune{sp}_share{k}',
            method='Deep Compression (prune + share + Huffman)', stage=2,
            arg=f'sparsity={sp},clusters={k}' + smoke,
            overrides={'seed': s,
                       'init_from': f'{{sweep_dir}}/prune{sp}_s{s}'}))
  return points
