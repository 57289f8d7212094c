"""GRU forecaster of the next 6 monthly sunspot numbers from the last 48.

  python train.py --config=configs/gru_forecast.py[:smoke]

Metric: test RMSE in sunspot units, reported beside the naive forecast that
repeats the last observed value.
"""

from configs import common


def get_config(arg=None):
  """A GRU over 48-month windows predicting 6 months ahead."""
  a = common.parse_arg(arg, smoke=False)
  c = common.base_config()
  c.name = 'gru_forecast'
  c.arg = arg or ''
  c.data.name = 'sunspots'
  c.data.kwargs.series = 'monthly'  # monthly | yearly.
  c.data.kwargs.window = 48  # Input steps.
  c.data.kwargs.horizon = 6  # Predicted steps.
  c.data.kwargs.test_fraction = 0.2  # The last 20% of the series is test.
  c.data.batch_size = 64
  c.model.cell = 'gru'
  c.model.hidden = 32
  c.optimizer.learning_rate = 3e-3
  c.train.steps = 600
  c.train.log_every = 100
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  if a.smoke:
    common.make_smoke(c)
  return c
