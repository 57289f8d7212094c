"""Post-training quantization of the float GRU baseline (no training).

  python train.py --config=configs/gru_ptq.py             # 8-bit, 4 batches
  python train.py --config=configs/gru_ptq.py:bits=4 --workdir=runs/gru_ptq4
  python train.py --config=configs/gru_ptq.py:smoke       # seconds

Trains `gru_baseline` into <workdir>/init first when missing, then picks per
kernel the clipping (absmax, three |w| percentiles, or the MSE-optimal scale)
whose loss on `calibration_batches` training batches is lowest, quantizes and
evaluates; `train.steps = 0`. The float model's own numbers are in
<workdir>/init/results.json.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); bits
(2..8, default 8); batches (calibration batches, default 4); granularity
(per_channel | per_tensor).
"""

from compression import quantization
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """Calibrated 8-bit PTQ of the baseline's kernels."""
  a = common.parse_arg(arg, cell='gru', smoke=False, bits=8, batches=4,
                       granularity='per_channel')
  c = gru_baseline.get_config()
  c.name = 'gru_ptq'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.init_config = 'gru_baseline.py:smoke' if a.smoke else 'gru_baseline'
  c.compression.methods = 'quantize'
  c.compression.quantize = quantization.config(bits=a.bits,
                                               granularity=a.granularity)
  c.compression.calibration_batches = a.batches
  if a.smoke:
    common.make_smoke(c)
  c.train.steps = 0  # Post-training: calibrate, quantize, evaluate.
  c.train.eval_every = 0
  return c


def sweep(arg=None):
  """The PTQ half of REPRODUCTION.md's bit-width item, for sweep.py.

  Per seed: the float baseline (stage 0), then calibrated post-training
  quantization of it at 8, 6, 4, 3 and 2 bits (the seed also picks the
  calibration batches).

  Args:
    arg: `smoke` (a tiny grid of smoke runs), `seeds=N` (default 3;
      1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  return common.finetune_grid(arg, 'bits', (8, 6, 4, 3, 2), (8, 2), 'ptq',
                              'PTQ')
