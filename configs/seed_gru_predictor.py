"""A compressed GRU forecaster: 10 features in, 5 values out, distilled.

  python train.py --config=configs/seed_gru_predictor.py
  python train.py --config=configs/seed_gru_predictor.py:smoke   # seconds

Data: monthly sunspot numbers, each step holding 10 consecutive months as 10
features (`data.kwargs.features = 10`): 12 steps = the last 120 months, and
the model predicts the next 5 months. The teacher is a float GRU with 64
hidden units (`:teacher`, trained first into <workdir>/teacher); the student
has 32 hidden units and is compressed while it distills: 50% magnitude (L1
norm |w|) pruning of its recurrent-layer kernels (gradual), int8 per-channel
quantization of every kernel, and an output-matching distillation loss.
`results.json` has `test_rmse` (sunspot units), `teacher_test_rmse`,
`naive_rmse`, `compressed_bytes` (the artifact `model.rnnc`).

Args (`:key=value,...`): smoke; teacher (the teacher's recipe).
"""

from compression import pruning
from compression import quantization
from configs import common


def get_config(arg=None):
  """The student recipe (or the teacher's, with `:teacher`)."""
  a = common.parse_arg(arg, smoke=False, teacher=False)
  c = common.base_config()
  c.name = 'seed_gru_predictor_teacher' if a.teacher else 'seed_gru_predictor'
  c.arg = arg or ''
  c.data.name = 'sunspots'
  c.data.kwargs.series = 'monthly'
  c.data.kwargs.window = 120  # 12 steps x 10 months.
  c.data.kwargs.features = 10  # Input features per step.
  c.data.kwargs.horizon = 5  # Output values.
  c.data.kwargs.test_fraction = 0.2
  c.data.batch_size = 64
  c.model.cell = 'gru'
  c.optimizer.learning_rate = 3e-3
  c.train.steps = 800
  c.train.log_every = 100
  c.train.eval_every = 400
  c.train.checkpoint_every = 400
  if a.teacher:
    c.model.hidden = 64
  else:
    c.model.hidden = 32
    c.teacher.config = 'seed_gru_predictor.py:teacher' + (
        ',smoke' if a.smoke else '')
    c.distill.alpha = 0.5  # Half the loss from the targets, half the teacher.
    c.distill.scratch = False
    c.compression.methods = 'prune,quantize'
    c.compression.prune = pruning.config(
        score='magnitude', granularity='unstructured', allocation='uniform',
        schedule='gradual', sparsity=0.5, begin_step=100, end_step=500,
        frequency=10, regex=r'rnn/.*_kernel')
    c.compression.quantize = quantization.config(bits=8, regex='.*kernel')
  if a.smoke:
    common.make_smoke(c)
    c.model.hidden = 16 if a.teacher else 8
    if not a.teacher:
      c.compression.prune.begin_step = 0
      c.compression.prune.end_step = 3
      c.compression.prune.frequency = 1
  return c
