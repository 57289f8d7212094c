"""Every compression method on the character language models (GRU or LSTM).

  python train.py --config=configs/lm_compress.py:method=prune,sparsity=0.9
  python train.py --config=configs/lm_compress.py:method=qat,bits=4,cell=lstm
  python train.py --config=configs/lm_compress.py:method=kd      # student
  python train.py --config=configs/lm_compress.py:method=prune,smoke

The recipes of REPRODUCTION.md part II. Each method starts from the trained
float LM (`gru_lm.py:small` or `lstm_lm.py:small`: GRU-128 or LSTM-110 over
64-character windows of the ASV Bible, trained first into <workdir>/init
unless `--config.init_from` names a run) and fine-tunes it for `steps` steps
at `lr` (cosine decay, no warmup), except `ptq` (post-training, calibrated on
4 batches), `dense` (a smaller LM trained from scratch for the float LM's
steps plus `steps`, the large-sparse comparison at equal nonzeros) and `kd`
(a smaller LM trained from scratch with the float LM as its teacher, next to
the same student trained without one). Metric: held-out bits per character.

Every weight matrix is compressed (the recurrent kernels, the embedding and
the softmax head) unless a method says otherwise, as in the language-model
papers the reproduction follows; biases stay float32.

Methods (`method=`):
  prune       gradual magnitude pruning to `sparsity` (Zhu & Gupta cubic
              ramp over the first 60% of the steps, masks every 10 steps)
  dense       GRU/LSTM of width `hidden`, from scratch
  qat         `bits`-bit per-channel fake quantization, clipping calibrated
              on 4 batches as for ptq, then fine-tuned
  ptq         `bits`-bit per-channel post-training quantization
  kmeans      `clusters` shared values per matrix, centroids fine-tuned
  units       remove `units` of the hidden units (magnitude of each unit's
              weight group plus a group-lasso penalty, ISS), then shrink
  svd         rank-`rank` factors of the recurrent kernel, fine-tuned
  deep_prune  Deep Compression's pruning stage: `sparsity` with one global
              threshold over all matrices
  deep        Deep Compression's sharing stage on `deep_prune`'s result:
              `clusters` shared values, biases 8-bit, Huffman-coded file
  kd          distil into a width-`hidden` LM (per-step soft labels at
              temperature `temperature`, hard-label weight `alpha`, hidden
              states through a learned projection with weight `feature`),
              `student_steps` steps; trains the scratch twin too

Args (`:key=value,...`): method (above; default prune); cell (gru | lstm,
default gru); sparsity (0.8); bits (4); clusters (16); units (0.5); rank
(32); hidden (0 = the method's default in WIDTHS: for `dense` about the nonzeros of
the 90%-sparse LM, for `kd` the student); steps (400);
lr (1e-3); for kd: temperature (1.0), alpha (0.5), feature (1.0), soft
(kl | mse), student_steps (1500), twin (also train the scratch twin,
default true); smoke.
"""

from compression import clustering
from compression import lowrank
from compression import pruning
from compression import quantization
from compression.errors import InputError
from configs import common
from configs import gru_lm

METHODS = ('prune', 'dense', 'qat', 'ptq', 'kmeans', 'units', 'svd',
           'deep_prune', 'deep', 'kd')

# Every weight matrix of the LM (the biases stay float32).
MATRICES = r'.*kernel|.*embedding'

# Default widths per cell: `dense` (about the nonzeros of the LM pruned to
# 90%, head and embedding included: GRU-24 has 8.2k parameters against 7.3k
# kept weights plus 0.9k biases of the GRU-128; LSTM-20 8.1k against 8.2k)
# and `kd` (the student).
WIDTHS = {'gru': {'dense': 24, 'kd': 48}, 'lstm': {'dense': 20, 'kd': 40}}


# Distillation settings tried before kd's defaults (temperature 1, alpha
# 0.5, hidden-state loss weight 1, 1500 steps), seed 0 of the GRU.
KD_SEARCH = {
    't2_a0.5_f1': 'temperature=2,alpha=0.5,feature=1',  # lm_kd.py's.
    't2_a0.5_f0': 'temperature=2,alpha=0.5,feature=0',
    't1_a0.5_f0': 'temperature=1,alpha=0.5,feature=0',
    't1_a0_f0': 'temperature=1,alpha=0,feature=0',
    't2_a0_f0': 'temperature=2,alpha=0,feature=0',
    'mse_a0.5_f0': 'soft=mse,alpha=0.5,feature=0',
    't1_a0_f0_3000': 'temperature=1,alpha=0,feature=0,student_steps=3000',
}


def float_lm_arg(cell: str, smoke: bool) -> str:
  """The `gru_lm.py` arg of the float LM that the methods start from."""
  return f'cell={cell},' + ('smoke' if smoke else 'small')


def float_lm(cell: str, smoke: bool) -> str:
  """The recipe of the float LM that the methods start from."""
  return 'gru_lm.py:' + float_lm_arg(cell, smoke)


def get_config(arg=None):
  """The float LM's recipe plus one method (see the module docstring)."""
  a = common.parse_arg(
      arg, method='prune', cell='gru', smoke=False, sparsity=0.8, bits=4,
      clusters=16, units=0.5, rank=32, hidden=0, steps=400, lr=1e-3,
      temperature=1.0, alpha=0.5, feature=1.0, student_steps=1500,
      soft='kl', twin=True)
  if a.method not in METHODS:
    raise InputError(f'config arg method: unknown {a.method!r}; valid: '
                     + ', '.join(METHODS))
  if a.cell not in WIDTHS:
    raise InputError(f'config arg cell: unknown {a.cell!r}; valid: '
                     + ', '.join(WIDTHS))
  c = gru_lm.get_config(float_lm_arg(a.cell, a.smoke))
  c.name = f'{a.cell}_lm_{a.method}'
  c.arg = arg or ''
  float_steps = c.train.steps
  steps = 4 if a.smoke else a.steps
  width = a.hidden or WIDTHS[a.cell].get(a.method, 0)
  if a.smoke and width:
    width = 4

  if a.method == 'dense':  # From scratch, as long as float + fine-tune.
    c.model.hidden = width
    c.train.steps = float_steps + steps
    return c
  if a.method == 'kd':
    c.model.hidden = width
    c.train.steps = 4 if a.smoke else a.student_steps
    c.train.checkpoint_every = max(1, c.train.steps // 2)
    c.teacher.config = float_lm(a.cell, a.smoke)
    c.distill.alpha = a.alpha
    c.distill.temperature = a.temperature
    c.distill.soft_loss = a.soft
    c.distill.feature_weight = a.feature
    c.distill.attention_weight = 0.0  # The LM has no pooling.
    c.distill.scratch = a.twin  # The same student without a teacher.
    return c

  c.init_config = float_lm(a.cell, a.smoke)
  c.optimizer.learning_rate = a.lr
  c.optimizer.warmup_steps = 0
  c.train.steps = steps
  c.train.eval_every = 0
  c.train.checkpoint_every = max(1, steps // 2)
  ramp = max(1, (3 * steps) // 5)  # Sparsity rises over the first 60%.
  every = 1 if a.smoke else 10
  if a.method in ('prune', 'deep_prune'):
    c.compression.methods = 'prune'
    c.compression.prune = pruning.config(
        score='magnitude', granularity='unstructured',
        allocation='global' if a.method == 'deep_prune' else 'uniform',
        schedule='gradual', sparsity=a.sparsity, begin_step=0,
        end_step=ramp, frequency=every, regex=MATRICES)
  elif a.method in ('qat', 'ptq'):
    c.compression.methods = 'quantize'
    c.compression.quantize = quantization.config(bits=a.bits, regex=MATRICES)
    # Both start from the clipping calibrated on 4 batches; QAT then
    # fine-tunes. (From the plain absmax grid, 2-bit QAT of the GRU LM
    # ended worse than calibrated PTQ: 3.564 against 3.516 bits/char, seed
    # 1, the first grid run.)
    c.compression.calibration_batches = 4
    if a.method == 'ptq':
      c.train.steps = 0  # Calibrate, quantize, evaluate.
  elif a.method == 'kmeans':
    c.compression.methods = 'kmeans'
    c.compression.kmeans = clustering.config(clusters=a.clusters,
                                             regex=MATRICES)
  elif a.method == 'units':
    c.compression.methods = 'prune'
    c.compression.prune = pruning.config(
        score='magnitude', granularity='unit', reduce='l2',
        allocation='uniform', schedule='gradual', sparsity=a.units,
        begin_step=0, end_step=ramp, frequency=every, group_lasso=1e-3)
  elif a.method == 'svd':
    c.compression.methods = 'lowrank'
    c.compression.lowrank = lowrank.config(rank=min(a.rank, 2) if a.smoke
                                           else a.rank)
  elif a.method == 'deep':
    c.init_config = 'lm_compress.py:' + ','.join(
        ['method=deep_prune', f'cell={a.cell}', f'sparsity={a.sparsity}',
         f'steps={a.steps}', f'lr={a.lr}'] + (['smoke'] if a.smoke else []))
    c.compression.methods = 'kmeans,quantize'
    c.compression.kmeans = clustering.config(clusters=a.clusters,
                                             regex=MATRICES)
    c.compression.quantize = quantization.config(
        bits=8, regex='.*bias', granularity='per_tensor')
    c.optimizer.learning_rate = a.lr / 3  # Centroids need only a nudge.
  return c


def sweep(arg=None):
  """REPRODUCTION.md part II, for sweep.py and `reproduce.py --only=lm`.

  Per cell (GRU-128, LSTM-110) and seed: the float LM (stage 0); then
  pruning to 50/80/90/95%, the dense LMs with about the nonzeros of the 80%-
  and 90%-sparse ones, QAT and PTQ at 8/4/3/2 bits, 16 shared values, ISS
  removing 25 and 50% of the units, SVD of the recurrent kernel at ranks 64,
  32 and 16, Deep Compression's pruning stage and the distilled student
  (stage 1); Deep Compression's sharing stage (stage 2).

  Args:
    arg: `smoke` (a tiny grid of smoke runs: one value per method, and only
      the float LM and PTQ for the LSTM), `seeds=N` (per cell; default 3
      for the GRU and 1 for the LSTM; 1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  a = common.parse_arg(arg, smoke=False, seeds=0)
  smoke = ',smoke' if a.smoke else ''
  grid = [('prune', 'sparsity', (0.5, 0.8, 0.9, 0.95), (0.9,)),
          ('qat', 'bits', (8, 4, 3, 2), (4,)),
          ('ptq', 'bits', (8, 4, 3, 2), (4,)),
          ('kmeans', 'clusters', (16,), (16,)),
          ('units', 'units', (0.25, 0.5), (0.5,)),
          ('svd', 'rank', (64, 32, 16), (2,)),
          ('deep_prune', 'sparsity', (0.9,), (0.9,))]
  points = []
  # Three seeds of the GRU, one of the LSTM: the LSTM's two more would add
  # about 20 minutes on 2 cores to a regeneration.
  seeds = {'gru': a.seeds or (1 if a.smoke else 3), 'lstm': a.seeds or 1}
  for cell in ('gru', 'lstm'):
    dense = {0.8: {'gru': 43, 'lstm': 37}[cell], 0.9: WIDTHS[cell]['dense']}
    for s in range(seeds[cell]):
      tag = f'{cell}_'
      base = f'{tag}float_s{s}'
      tune = {'seed': s, 'init_from': f'{{sweep_dir}}/{base}'}
      points.append(dict(name=base, group=f'{tag}float', method='float LM',
                         config='gru_lm.py', arg=float_lm_arg(cell, a.smoke),
                         overrides={'seed': s}, stage=0))
      for method, key, values, smoke_values in grid:
        if a.smoke and cell == 'lstm' and method != 'ptq':
          continue
        for v in (smoke_values if a.smoke else values):
          points.append(dict(
              name=f'{tag}{method}{v}_s{s}', group=f'{tag}{method}{v}',
              method=f'{method} (LM)',
              arg=f'method={method},cell={cell},{key}={v}' + smoke,
              overrides=tune))
      if a.smoke and cell == 'lstm':
        continue
      points.append(dict(
          name=f'{tag}deep_s{s}', group=f'{tag}deep',
          method='Deep Compression (LM)',
          arg=f'method=deep,cell={cell},sparsity=0.9' + smoke,
          overrides={'seed': s,
                     'init_from': f'{{sweep_dir}}/{tag}deep_prune0.9_s{s}'},
          stage=2))
      for sp, width in sorted(dense.items()):
        if a.smoke and sp != 0.9:
          continue
        points.append(dict(
            name=f'{tag}dense{sp}_s{s}', group=f'{tag}dense{sp}',
            method='small dense LM',
            arg=f'method=dense,cell={cell},hidden={width}' + smoke,
            overrides={'seed': s}))
      teach = {'seed': s, 'teacher.workdir': f'{{sweep_dir}}/{base}'}
      points.append(dict(
          name=f'{tag}kd_s{s}', group=f'{tag}kd', method='distilled LM',
          arg=f'method=kd,cell={cell}' + smoke, overrides=teach))
      if cell == 'gru' and s == 0 and not a.smoke:
        # The search that chose kd's settings (KD_SEARCH), one seed; only
        # a different step count needs its own scratch twin.
        for key, setting in KD_SEARCH.items():
          twin = '' if 'student_steps' in setting else ',twin=false'
          points.append(dict(
              name=f'{tag}kdsearch_{key}_s{s}', group=f'{tag}kdsearch_{key}',
              method='distillation search',
              arg=f'method=kd,cell={cell},{setting}{twin}', overrides=teach))
  return points
