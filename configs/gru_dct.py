"""GRU-64 speaker classifier trained as masked 2-D DCT coefficients.

  python train.py --config=configs/gru_dct.py                # keep 25%, 8x8
  python train.py --config=configs/gru_dct.py:keep=0.1,block=0
  python train.py --config=configs/gru_dct.py:keep=0.25,bits=8
  python train.py --config=configs/gru_dct.py:smoke          # seconds

Starts from the trained float baseline (`gru_baseline`, trained first into
<workdir>/init unless `--config.init_from` names a run), moves every
recurrent kernel to its blockwise orthonormal DCT-II coefficients, keeps the
largest-magnitude fraction `keep` of each kernel's coefficients and
fine-tunes the kept ones for 200 steps (the others stay zero).

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); keep
(default 0.25, in (0, 1]); block (square block side, default 8 as in JPEG, must
divide 64 and 192; 0 = the whole matrix); bits (0 = float32 coefficients, 2..8
= fake-quantized codes with one scale per kernel).
"""

from compression import dct
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """Baseline recipe plus a DCT section, fine-tuning the baseline."""
  a = common.parse_arg(arg, cell='gru', smoke=False, keep=0.25, block=8,
                       bits=0)
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_dct'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.compression.methods = 'dct'
  # Smoke models have hidden 8: an 8x24 kernel takes 8x8 blocks too.
  c.compression.dct = dct.config(keep=a.keep, block=a.block, bits=a.bits)
  common.finetune(c, a.smoke, 3e-3, warmup_steps=10)
  if a.smoke:
    common.make_smoke(c)
  return c
