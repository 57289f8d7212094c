"""Post-training quantization of the character GRU language model.

  python train.py --config=configs/lm_ptq.py             # 8-bit, 4 batches
  python train.py --config=configs/lm_ptq.py:bits=4 --workdir=runs/lm_ptq4
  python train.py --config=configs/lm_ptq.py:smoke       # seconds

Trains `gru_lm` into <workdir>/init first when missing, calibrates the
clipping of every kernel on `calibration_batches` training batches,
quantizes and evaluates held-out bits per character; `train.steps = 0`.

Args (`:key=value,...`): smoke; bits (2..8, default 8); batches (default 4).
"""

from compression import quantization
from configs import common
from configs import gru_lm


def get_config(arg=None):
  """Calibrated per-channel PTQ of the language model's kernels."""
  a = common.parse_arg(arg, smoke=False, bits=8, batches=4)
  c = gru_lm.get_config('smoke' if a.smoke else None)
  c.name = 'lm_ptq'
  c.arg = arg or ''
  c.init_config = 'gru_lm.py:smoke' if a.smoke else 'gru_lm'
  c.compression.methods = 'quantize'
  c.compression.quantize = quantization.config(bits=a.bits)
  c.compression.calibration_batches = a.batches
  c.train.steps = 0  # Post-training: calibrate, quantize, evaluate.
  c.train.eval_every = 0
  return c


def sweep(arg=None):
  """REPRODUCTION.md's language-model bit-width item, for sweep.py.

  The float `gru_lm` (stage 0, one seed: it trains for minutes), then PTQ of
  its kernels at 8, 6, 4, 3 and 2 bits.

  Args:
    arg: `smoke` (a tiny grid of smoke runs).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  a = common.parse_arg(arg, smoke=False)
  smoke = ',smoke' if a.smoke else ''
  points = [dict(name='float_s0', group='float', method='float LM',
                 config='gru_lm.py', arg=smoke.lstrip(','),
                 overrides={'seed': 0}, stage=0)]
  for bits in ((8, 2) if a.smoke else (8, 6, 4, 3, 2)):
    points.append(dict(
        name=f'ptq{bits}_s0', group=f'ptq{bits}', method='PTQ (LM)',
        arg=f'bits={bits}' + smoke,
        overrides={'seed': 0, 'init_from': '{sweep_dir}/float_s0'}))
  return points
