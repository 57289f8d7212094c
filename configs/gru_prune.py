"""Gradual magnitude pruning of the GRU-64 speaker classifier.

  python train.py --config=configs/gru_prune.py               # 80% sparse
  python train.py --config=configs/gru_prune.py:sparsity=0.9
  python train.py --config=configs/gru_prune.py:smoke         # seconds

Fine-tunes the trained float baseline (`gru_baseline`, trained first into
<workdir>/init unless `--config.init_from` names a run) for 400 steps while
the Zhu & Gupta schedule raises the sparsity of every recurrent kernel from 0
to the target over steps 0..250, masks updated every 10 steps; the last 150
steps recover at the final sparsity. The head is kept dense (see
`compression.pruning.config`).

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); sparsity
(default 0.8); scratch (prune while training from a random init instead of
fine-tuning the baseline); hidden (default 64).
"""

from compression import pruning
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """Baseline recipe plus a gradual magnitude-pruning section."""
  a = common.parse_arg(arg, cell='gru', smoke=False, sparsity=0.8,
                       scratch=False, hidden=64)
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_prune'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.compression.methods = 'prune'
  c.compression.prune = pruning.config(
      score='magnitude', granularity='unstructured', allocation='uniform',
      schedule='gradual', sparsity=a.sparsity, begin_step=0, end_step=250,
      frequency=10)
  if a.scratch:
    c.compression.prune.begin_step = 50
    c.compression.prune.end_step = 300
  else:
    c.init_config = 'gru_baseline.py:smoke' if a.smoke else 'gru_baseline'
    c.optimizer.learning_rate = 3e-3
  if not a.smoke:
    c.model.hidden = a.hidden
  else:
    c.compression.prune.begin_step = 0
    c.compression.prune.end_step = 3
    c.compression.prune.frequency = 1
  return c


def sweep(arg=None):
  """The grid of REPRODUCTION.md's Zhu & Gupta (2017) item, for sweep.py.

  Per seed: the float GRU-64 baseline (stage 0, shared by the fine-tuned
  points), gradual pruning of it to 50/75/90/95% sparsity, 90% pruning while
  training from scratch (the baseline's 400-step budget), and the dense
  GRU-21 and GRU-16 that have about as many nonzero parameters as the 90%-
  and 95%-sparse GRU-64 (2361 vs 2300, 1561 vs 1570), each trained for 400
  steps and for 800 (the baseline's 400 plus the fine-tune's 400).

  Args:
    arg: `smoke` (a tiny grid of smoke runs), `seeds=N` (default 3;
      1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  a = common.parse_arg(arg, smoke=False, seeds=0)
  smoke = 'smoke' if a.smoke else ''
  join = lambda *parts: ','.join(p for p in parts if p)
  sparsities = (0.5, 0.9) if a.smoke else (0.5, 0.75, 0.9, 0.95)
  points = []
  for s in range(a.seeds or (1 if a.smoke else 3)):
    tune = {'seed': s, 'init_from': f'{{sweep_dir}}/baseline_s{s}'}
    points.append(common.baseline_point(s, a.smoke))
    for sp in sparsities:
      points.append(dict(name=f'prune{sp}_s{s}', group=f'prune{sp}',
                         method='gradual pruning (fine-tuned)',
                         arg=join(f'sparsity={sp}', smoke), overrides=tune))
    if a.smoke:
      continue
    points.append(dict(name=f'scratch0.9_s{s}', group='scratch0.9',
                       method='gradual pruning (from scratch)',
                       arg='sparsity=0.9,scratch', overrides={'seed': s}))
    for hidden in (21, 16):
      for steps in (400, 800):
        points.append(dict(
            name=f'dense{hidden}_{steps}_s{s}', group=f'dense{hidden}_{steps}',
            method='small dense GRU', config='gru_baseline.py',
            overrides={'seed': s, 'model.hidden': hidden,
                       'train.steps': steps}))
  return points
