"""Quantization-aware training of the GRU speaker classifier (JapaneseVowels).

  python train.py --config=configs/gru_qat.py                 # 8-bit weights
  python train.py --config=configs/gru_qat.py:bits=4 --workdir=runs/gru_qat4
  python train.py --config=configs/gru_qat.py:smoke           # seconds

Every kernel (input, recurrent, head: regex `.*kernel`) is fake-quantized with
symmetric per-channel absmax scales while float master weights train. By
default the run fine-tunes the float `gru_baseline` model (trained first into
<workdir>/init when missing); `finetune=false` trains with fake-quant from
scratch instead (see `get_config` for which was better). Give each variant its
own --workdir: a rerun in the same workdir resumes its checkpoint.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru); bits
(2..8, default 8); hidden_bits (also quantize h_t, 0 = off); finetune (default
true); scale (absmax | minmax | percentile | learned).
"""

from compression import quantization
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """QAT from the float baseline (or from scratch)."""
  a = common.parse_arg(arg, cell='gru', smoke=False, bits=8, hidden_bits=0,
                       finetune=True, scale='absmax')
  c = gru_baseline.get_config()
  c.name = 'gru_qat'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.compression.methods = 'quantize'
  c.compression.quantize = quantization.config(bits=a.bits, scale=a.scale)
  c.compression.hidden_state.bits = a.hidden_bits
  if a.finetune:
    # Short fine-tuning at a tenth of the baseline's peak rate: the float
    # model is already near the optimum; the grid only needs to settle.
    common.finetune(c, a.smoke, 1e-3)
  if a.smoke:
    common.make_smoke(c)
  return c


def sweep(arg=None):
  """The QAT half of REPRODUCTION.md's bit-width item, for sweep.py.

  Per seed: the float baseline (stage 0), then QAT fine-tuning from it at
  8, 6, 4, 3 and 2 bits.

  Args:
    arg: `smoke` (a tiny grid of smoke runs), `seeds=N` (default 3;
      1 under smoke).

  Returns:
    The list of point dicts that sweep.py documents.
  """
  return common.finetune_grid(arg, 'bits', (8, 6, 4, 3, 2), (8, 2), 'qat',
                              'QAT')
