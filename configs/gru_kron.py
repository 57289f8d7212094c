r"""GRU-64 speaker classifier with Kronecker-factored (or tensor-train) kernels.

  python train.py --config=configs/gru_kron.py              # 2 Kronecker terms
  python train.py --config=configs/gru_kron.py:bits=8       # and 8-bit factors
  python train.py --config=configs/gru_kron.py:tt           # tensor train
  python train.py --config=configs/gru_kron.py:smoke        # seconds

Every input and recurrent kernel of gru_baseline's model is a sum of `terms`
Kronecker products of two small factors (Thakker et al. 2019;
`compression/kronecker.py`), the shapes chosen per kernel (the recurrent
(64, 192) kernel: (8, 12) and (8, 16); the input (12, 192) kernel: (3, 16)
and (4, 12)), so with 2 terms the three kernels of the GRU-64 classifier
(input, recurrent, head) hold 1,216 parameters instead of 15,168 (12.5x
fewer). The model multiplies through the factors at every step. Trained
from scratch, 600 steps: the factors start as the nearest Kronecker terms
of the fresh initialization, scaled to its norm (`rescale`).

`tt` uses tensor-train cores instead (`compression/tensor_train.py`,
`cores` = 3, ranks `ranks`, balanced core shapes). `bits=B` chains B-bit
quantization-aware training of the factors (regex `.*kernel/core_\d+`) and
of the head's kernel (`head/kernel`) after the factorization, in the same
from-scratch run.

Args (`:key=value,...`): smoke; cell (rnn | lstm | gru); terms (Kronecker
products summed, default 2); tt (tensor train instead); cores (TT cores,
default 3); ranks (TT ranks, default '4'); bits (0 = float); shapes (the
factor shapes, `compression.kronecker.shapes` syntax with ';' between
entries, '' = chosen per kernel).
"""

from compression import kronecker
from compression import quantization
from compression import tensor_train
from configs import common
from configs import gru_baseline


def get_config(arg=None):
  """gru_baseline with factored input and recurrent kernels."""
  a = common.parse_arg(arg, smoke=False, cell='gru', terms=2, tt=False,
                       cores=3, ranks='4', bits=0, shapes='')
  c = gru_baseline.get_config('smoke' if a.smoke else None)
  c.name = 'gru_kron'
  c.arg = arg or ''
  common.use_cell(c, a.cell)
  if a.tt:
    method = 'tt'
    c.compression.tt = tensor_train.config(cores=a.cores, ranks=a.ranks,
                                           shapes=a.shapes, rescale=True)
  else:
    method = 'kronecker'
    c.compression.kronecker = kronecker.config(terms=a.terms, shapes=a.shapes,
                                               rescale=True)
  c.compression.methods = method
  c.train.steps = 600
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  if a.bits:
    # The factors train quantization-aware from the start: a factored
    # source run's checkpoint holds factors, which a dense init_from
    # restore cannot take.
    c.compression.methods = f'{method},quantize'
    c.compression.quantize = quantization.config(
        bits=a.bits, regex=r'.*kernel/core_\d+|head/kernel')
  if a.smoke:
    common.make_smoke(c)
  return c
