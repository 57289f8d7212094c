r"""Kronecker-product factorization of kernels: W = sum_t A_t (x) B_t.

Thakker et al. 2019, "Compressing RNNs for IoT devices by 15-38x using
Kronecker products": a matched kernel W (m, n) becomes `terms` Kronecker
products of two small factors, A_t (m_1, n_1) and B_t (m_2, n_2) with
m = m_1 m_2 and n = n_1 n_2, so

  W[i_1 m_2 + i_2, j_1 n_2 + j_2] = sum_t A_t[i_1, j_1] B_t[i_2, j_2]

with `terms (m_1 n_1 + m_2 n_2)` parameters instead of m n (`terms` = 1 is a
single product). This is the tensor train of two cores with inner rank
`terms` (`compression.tensor_train`), and it is stored, trained, multiplied
through (`models.cells.tt_matmul`: two small products per row instead of
one m x n), initialized (Van Loan and Pitsianis' nearest sum of Kronecker
products, by SVD of the rearranged kernel), exported and accounted exactly
as that module describes: the factor dict `{'core_0': (1, m_1, n_1, terms),
'core_1': (terms, m_2, n_2, 1)}` at the kernel's path.

Factor shapes (`shapes`, the syntax of `compression.tensor_train`):
'' picks, per kernel, the most balanced two-factor shapes (ties to the
fewest parameters), e.g. a GRU-64 recurrent kernel (64, 192) gets (8, 12)
and (8, 16), its (12, 192) input kernel (3, 16) and (4, 12); `'.*recurrent_kernel=8x12,8x16;.*input_kernel=3x16,
4x12'` sets them. Factors that do not multiply to the kernel's shape are
refused (one line).

Example:
  c.compression.methods = 'kronecker,quantize'
  c.compression.kronecker = kronecker.config(terms=2)
  c.compression.quantize = quantization.config(bits=8,
                                               regex=r'.*kernel/core_\d+')
"""

from __future__ import annotations

from typing import Any

from compression import core
from compression import tensor_train
from compression.errors import InputError

OPTIONS = core.Options(
    'compression.kronecker',
    core.Option('regex', tensor_train.KERNELS,
                'Kernels to factor (re.fullmatch); the default: input and '
                'recurrent kernels of every layer.'),
    core.Option('terms', 1, 'Kronecker products summed, W = sum_t A_t (x) '
                'B_t.', core.at_least(1)),
    core.Option('shapes', '', "Factor shapes '[regex=]m1xn1,m2xn2;...'; '' = "
                'the most balanced, ties to the fewest parameters.',
                tensor_train.shapes_check),
    core.Option('rescale', False, 'Scale the initial factors so their '
                "product has the replaced kernel's Frobenius norm (training "
                'from a fresh initialization).'),
)
config = OPTIONS.config
report = tensor_train.report


def make(cfg: Any) -> core.Compressor:
  """The Kronecker Compressor for a `config()` section.

  Args:
    cfg: the `compression.kronecker` ConfigDict.

  Returns:
    A Compressor whose `init` replaces each matched kernel by its two
    factors (a two-core tensor train of rank `terms`).

  Raises:
    InputError: a bad option (here), or, in `init`, a regex matching no 2-D
      kernel, factor shapes that do not make the kernel, or more terms than
      the factors allow (min(m_1 n_1, m_2 n_2)).
  """
  o = OPTIONS.parse(cfg)
  shapes = tensor_train.parse_shapes(o.shapes)
  for _, cores in shapes:
    if len(cores) != 2:
      raise InputError(f'compression.kronecker.shapes: a Kronecker product '
                       f'has 2 factors, got {len(cores)} (compression.tt '
                       'takes more)')
  return tensor_train.factor_method('compression.kronecker', o.regex, 2,
                                    [o.terms], shapes, o.rescale)


METHODS = {'kronecker': make}
