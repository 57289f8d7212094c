"""Distils a GRU-128 teacher into a GRU-16 student on JapaneseVowels.

  python train.py --config=configs/gru_kd.py            # the main job
  python train.py --config=configs/gru_kd.py:smoke      # seconds, for tests

The run trains the teacher first (into <workdir>/teacher) when it has none,
then the student with soft labels (T=4, alpha=0.3), hidden-state (weight 3)
and attention-map (weight 1) losses, then the same student from scratch (into <workdir>/scratch) for
comparison. results.json holds `teacher_test_accuracy`,
`scratch_test_accuracy` and the distilled `test_accuracy`.

Args (`:key=value,...`): smoke; teacher (build the teacher's recipe instead);
student_hidden (default 16); seed.
"""

from configs import common


def get_config(arg=None):
  """The student recipe (or the teacher's, with `:teacher`)."""
  a = common.parse_arg(arg, smoke=False, teacher=False, student_hidden=16,
                       seed=0)
  c = common.base_config()
  c.name = 'gru_kd_teacher' if a.teacher else 'gru_kd'
  c.arg = arg or ''
  c.seed = a.seed
  c.data.name = 'japanese_vowels'
  c.data.kwargs.normalize = True
  c.data.batch_size = 32
  c.model.cell = 'gru'
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
    c.teacher.config = 'gru_kd.py:teacher' + (',smoke' if a.smoke else '')
    c.distill.alpha = 0.3  # 70% of the label loss comes from soft labels.
    c.distill.temperature = 4.0
    c.distill.feature_weight = 3.0  # Projected top-layer states vs teacher's.
    c.distill.attention_weight = 1.0  # KL between attention-pooling maps.
    c.distill.scratch = True
  if a.smoke:
    common.make_smoke(c)
    c.model.hidden = 16 if a.teacher else 4
  return c
