"""Distils a character-level GRU-256 language model into a GRU-64 student.

  python train.py --config=configs/lm_kd.py          # teacher, student, scratch
  python train.py --config=configs/lm_kd.py:smoke

Soft targets are per step: the student matches the teacher's next-character
distribution at every position (T=2), plus the hidden-state loss through a
learned 64 -> 256 projection. Metric: held-out bits per character.

Args (`:key=value,...`): smoke; teacher (the teacher's recipe); seed.
"""

from configs import gru_lm
from configs import common


def get_config(arg=None):
  """The student recipe (or the teacher's, with `:teacher`)."""
  a = common.parse_arg(arg, smoke=False, teacher=False, seed=0)
  c = gru_lm.get_config('smoke' if a.smoke else None)
  c.name = 'lm_kd_teacher' if a.teacher else 'lm_kd'
  c.arg = arg or ''
  c.seed = a.seed
  c.train.eval_every = 0
  if a.teacher:
    c.model.hidden = 16 if a.smoke else 256
  else:
    c.model.hidden = 4 if a.smoke else 64
    c.teacher.config = 'lm_kd.py:teacher' + (',smoke' if a.smoke else '')
    c.distill.alpha = 0.5
    c.distill.temperature = 2.0
    c.distill.feature_weight = 1.0
    c.distill.attention_weight = 0.0  # The language model has no pooling.
    c.distill.scratch = True
  return c
