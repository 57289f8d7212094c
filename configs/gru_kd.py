"""Distils a GRU-128 teacher into a GRU-16 student on JapaneseVowels.

  python train.py --config=configs/gru_kd.py            # the main job
  python train.py --config=configs/gru_kd.py:smoke      # seconds, for tests

The run trains the teacher first (into <workdir>/teacher) when it has none,
then the student with soft labels (T=4, alpha=0.3), hidden-state (weight 3)
and attention-map (weight 1) losses, then the same student from scratch (into <workdir>/scratch) for
comparison. results.json holds `teacher_test_accuracy`,
`scratch_test_accuracy` and the distilled `test_accuracy`.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); teacher
(build the teacher's recipe instead); student_hidden (default 16); seed;
quant=B (the student is fake-quantized to B bits while it distils); sparsity=S
(the student is pruned gradually to S).
"""

from compression import pruning
from compression import quantization
from configs import common


def get_config(arg=None):
  """The student recipe (or the teacher's, with `:teacher`)."""
  a = common.parse_arg(arg, cell='gru', smoke=False, teacher=False,
                       student_hidden=16, seed=0, quant=0, sparsity=0.0)
  c = common.base_config()
  c.name = 'gru_kd_teacher' if a.teacher else 'gru_kd'
  c.arg = arg or ''
  c.seed = a.seed
  c.data.name = 'japanese_vowels'
  c.data.kwargs.normalize = True
  c.data.batch_size = 32
  common.use_cell(c, a.cell)
  c.model.pooling = 'attention'  # Both pool by attention: its maps distil.
  c.optimizer.learning_rate = 1e-2
  c.train.log_every = 100
  c.train.eval_every = 0
  c.train.checkpoint_every = 200
  if a.teacher:
    c.model.hidden = 128
    c.train.steps = 400
  else:
    c.model.hidden = a.student_hidden
    c.train.steps = 800  # Soft targets keep teaching after the labels fit.
    c.teacher.config = (f'gru_kd.py:teacher,cell={a.cell}'
                        + (',smoke' if a.smoke else ''))
    c.distill.alpha = 0.3  # 70% of the label loss comes from soft labels.
    c.distill.temperature = 4.0
    c.distill.feature_weight = 3.0  # Projected top-layer states vs teacher's.
    c.distill.attention_weight = 1.0  # KL between attention-pooling maps.
    c.distill.scratch = True
    # The student can be compressed while it distils (and so is its
    # from-scratch twin, so the comparison stays fair).
    methods = []
    if a.sparsity:
      methods.append('prune')
      c.compression.prune = pruning.config(
          sparsity=a.sparsity, schedule='gradual', begin_step=0,
          end_step=c.train.steps // 2, frequency=10)
    if a.quant:
      methods.append('quantize')
      c.compression.quantize = quantization.config(bits=a.quant)
    c.compression.methods = ','.join(methods)
  if a.smoke:
    common.make_smoke(c)
    c.model.hidden = 16 if a.teacher else 4
  return c


def sweep(arg=None):
  """The grid of REPRODUCTION.md's Hinton et al. (2015) item, for sweep.py.

  One GRU-128 teacher (stage 0), shared by the GRU-16 students of seeds
  0..N-1; each student run also trains the same student from scratch and
  records `scratch_test_accuracy`.

  Args:
    arg: `smoke` (a tiny grid of smoke runs), `seeds=N` (default 3;
      1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  a = common.parse_arg(arg, smoke=False, seeds=0)
  smoke = ',smoke' if a.smoke else ''
  points = [dict(name='teacher', method='teacher GRU-128',
                 arg='teacher' + smoke, stage=0)]
  for s in range(a.seeds or (1 if a.smoke else 3)):
    points.append(dict(
        name=f'student_s{s}', group='student', method='distilled GRU-16',
        arg=f'seed={s}' + smoke,
        overrides={'teacher.workdir': '{sweep_dir}/teacher'}))
  return points
