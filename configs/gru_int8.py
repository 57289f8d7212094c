"""Integer-ready GRU speaker classifier: 8-bit weights and 8-bit activations.

  python train.py --config=configs/gru_int8.py                  # W8 A8, static
  python train.py --config=configs/gru_int8.py:weights=4 --workdir=runs/gru_int8_w4
  python train.py --config=configs/gru_int8.py:dynamic --workdir=runs/gru_int8_dyn
  python train.py --config=configs/gru_int8.py:cell=lstm        # runs/lstm_int8
  python train.py --config=configs/gru_int8.py:smoke            # seconds
  python eval.py --artifact=runs/gru_int8/model.rnnc --runtime=int

Quantization-aware fine-tuning of the float `gru_baseline` model (trained
first into <workdir>/init when missing) with every kernel (input, recurrent,
head: regex `.*kernel`) fake-quantized symmetric per channel and every
activation on the integer runtimes' grids (`compression.activations`): the
input on an int8 grid whose step is calibrated from the training inputs
(their largest |x| / 127), gates in Q12 / Q15, the LSTM cell state in Q4.11,
h and the head's input on the int8 grid of step 1/127. The artifact's header
carries the input step, so `eval.py --runtime=int` computes the same model
in integers.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru, default gru);
weights (weight bits, 2..8, default 8); dynamic (an input step per sequence
and time step from max|x_t| instead of the calibrated one); scale (the static
input step: absmax | percentile | learned, default absmax).
"""

from compression import activations
from compression import quantization
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """QAT of weights and activations from the float baseline."""
  a = common.parse_arg(arg, cell='gru', smoke=False, weights=8, dynamic=False,
                       scale='absmax')
  c = gru_baseline.get_config()
  c.name = 'gru_int8'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  c.compression.methods = 'quantize'
  c.compression.quantize = quantization.config(bits=a.weights)
  c.compression.activations = activations.config(
      bits=8, mode='dynamic' if a.dynamic else 'static', scale=a.scale)
  # As gru_qat.py: a short fine-tuning at a tenth of the baseline's peak
  # rate, enough for the weights to settle on the grids.
  common.finetune(c, a.smoke, 1e-3)
  if a.smoke:
    common.make_smoke(c)
  return c
