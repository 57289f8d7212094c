"""Elman RNN, LSTM and GRU layers with time as a `jax.lax.scan`.

One module, `RecurrentLayer`, runs any of the three cells; `RecurrentStack`
stacks `layers` of them. Inputs are batch-major: `x` (B, T, F) and `lengths`
(B,) int32. A step `t >= lengths[b]` never changes sequence `b`'s carry, so the
final carry is each sequence's state at its true last step, and the output at a
padded step is zero.

Parameters of one layer (G gates of width H concatenated on the last axis):

  =================  ============  =============================================
  name               shape         meaning
  =================  ============  =============================================
  input_kernel       (F, G*H)      input to gates
  recurrent_kernel   (H, G*H)      previous hidden state to gates
  bias               (G*H,)        gate bias (input side)
  recurrent_bias     (H,)          GRU only: bias of h W_hn inside r * (...)
  =================  ============  =============================================

Gate order: GRU G=3 `[r, z, n]`; LSTM G=4 `[i, f, g, o]`; RNN G=1 `[h]`.

Equations (sigma = sigmoid, x_t the input, h the previous hidden state)::

  RNN:  h' = tanh(x W + b + h U)
  LSTM: i, f, g, o = sigma(.), sigma(.), tanh(.), sigma(.) of x W + b + h U
        c' = f * c + i * g;  h' = o * tanh(c')
  GRU:  r, z = sigma(x W_r + b_r + h U_r), sigma(x W_z + b_z + h U_z)
        n = tanh(x W_n + b_n + r * (h U_n + b_hn));  h' = (1 - z) * n + z * h

The GRU is the same function as `flax.linen.GRUCell`: its `ir/iz/in` kernels
and biases are the column blocks of `input_kernel` and `bias`, `hr/hz/hn` of
`recurrent_kernel`, and `hn/bias` is `recurrent_bias`.

Every matrix product goes through `matmul`, so a factored or quantized kernel
later needs a new `matmul`, never a second copy of a cell.

Layout, measured with `benchmarks/gru_vs_flax.py` (1-layer GRU classifier,
F=16, H=128, T=64, B=64, Adam, full jitted train step with donated state;
median ms/step over 100 steps, XLA:CPU on a shared 2-core machine):

  flax.linen.RNN(GRUCell) unroll=1   11.57   (unroll=4: 11.71)
  ours, input projected per step     u1 10.70   u2 10.30   u4 10.82
  ours, one (T*B, F) projection
        hoisted before the scan      u1 11.52   u4 11.21

A rerun with busier neighbours: flax 11.86; ours per step u1 11.14, u2 10.52,
u4 10.92; hoisted u1 17.42 (min 11.06), u4 17.28: the hoisted layout also
suffers most from a loaded machine. (Part of that is memory: with the
hand-written backward at B=64 its extra (T, B, G*H) buffers take the step's
temporary allocation past glibc's 32 MB mmap limit, so every step maps it
afresh and page-faults ~9,000 times; see also "Why packed and hoisted
layouts lose" below.)

So the default projects each step's input inside the scan (`hoist_input=False`)
and scans time-major (lax.scan walks the leading axis; transposing the narrow
(B, T, F) input is cheaper than the (T, B, G*H) projection). The recurrent
matmuls dominate at this size, and hoisting only adds a (T, B, G*H) buffer and
its gradient's round trip through memory. On accelerators, where each step is a
kernel launch, hoisting is the usual win: flip `hoist_input` and rerun the
benchmark there. The config's `unroll` is passed through; 2 was best here by
~4%, within noise. `matmul` flattens to 2-D because XLA:CPU ran the 3-D form
of the hoisted dot (and its kernel gradient) 7x slower.

Backward pass: with no state hook and dense kernels (the float model, and
fake-quant or pruning masks, which act on the kernels before the layer), the
layer runs `fast_sequence`, a scan with a hand-written VJP (see "Fast path"
below); `custom_grad=False` or a `state_fn` / `cell_state_fn` / `gate_fn` /
factored kernel takes the generic scan that `jax.grad` differentiates. Measured on the
same benchmark shape (full jitted train step, Adam; all sequences full length;
median ms, rows interleaved in one process, load average 4-6 on the shared
2-core AMD EPYC, so read ratios, not absolute times):

  ====================================  ========  ========
  variant                                  GRU      LSTM
  ====================================  ========  ========
  jax.grad of the scan, unroll 1          15.02     20.49
  jax.grad of the scan, unroll 2          14.08     22.14
  custom VJP, unroll 1 (default)          10.63     15.68
  custom VJP, unroll 2                    11.27     16.61
  custom VJP, unroll 4                    12.54     23.45
  custom VJP, input hoisted, unroll 1     11.34     32.23 (min 16.16)
  ====================================  ========  ========

so the custom VJP gains 1.3-1.4x and unroll 1 with the per-step input
projection stays best. Two refinements were measured and dropped: saving one
packed (B, 4H) gate array per step and the carries once (previous states by
shifting them) instead of separate residual arrays was slower (GRU 12.79 vs
11.15, LSTM 17.42 vs 15.43 ms, interleaved), and one [x_t, h] @ [W; U]
product per LSTM step instead of two was no faster (min 15.02 vs 14.85 ms).

Why packed and hoisted layouts lose on XLA:CPU (read off the LLVM IR that
`--xla_dump_to` writes): a loop fusion whose operand is a slice the scan
takes of a stacked array (`xs[t]`) is emitted as scalar code as soon as it
reads that operand at two or more offsets (two gate blocks of a (B, G*H)
row, or two leading blocks of a (G, B, H) one); with one offset it is
vectorized (8-wide AVX). One GRU step's gate arithmetic on (32, 384) then
costs ~60 us scalar against ~7 us vectorized, more than its recurrent
matmul. Every residual the backward scans over is therefore its own (T, B, H)
array, read at a single offset. A per-gate layout (G separate (H, H)
products per step, every gate its own array) vectorizes everything but adds
thunks: in the real train step it was slower than this one (GRU 11.61 vs
10.72 ms, LSTM 15.40 vs 13.69 ms, min over 240 steps, 2 devices,
interleaved), as were hoisting the input projection per gate (GRU +13%, LSTM
+6%) and taking the previous state from the outputs instead of a residual
(+1-3%); giving every residual buffer its own zero-fill instead of XLA's one
shared fill and copies was within noise.

The per-step product of the backward multiplies by U^T; XLA folds a plain
transpose into the dot as a transposed operand, which YNNPACK runs slower
than a row-major matrix (GRU 44 vs 34 us, LSTM 59 vs 52 us per step at
B=32), so `_fast_sequence_bwd` makes one real transpose per call behind an
optimization barrier (measured 4-5% on the whole step).

The scan's per-step products are too small for XLA:CPU to spread over cores
(a scan of them keeps one core busy), so on CPU the other cores come in
through data parallelism: `train.py --cpu_devices=N` splits the host into N
JAX devices (README, "Speed and scale"; `benchmarks/step_time.py`).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Mapping, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from compression.errors import InputError

Array = jax.Array
# A kernel as `matmul` accepts it: a dense (K, N) array, a low-rank factor
# dict {'u': (K, r), 'v': (r, N)}, or a tensor-train / Kronecker factor dict
# {'core_0': ..., 'core_{d-1}': ...} (`compression.factors`), multiplied
# through without densifying.
Kernel = Any
Carry = Any
StateFn = Callable[[Array], Array]
# `gate_fn(pre_activation, nonlinearity) -> gate output`: how a cell applies
# each sigmoid / tanh, so activation quantization can put the pre-activation
# and the output on their integer grids (`compression.activations`).
GateFn = Callable[[Array, Callable[[Array], Array]], Array]
# `input_fn(x, learned) -> x`: the model's input quantizer; `learned` is the
# parameter entry `LEARNED_ACTIVATIONS` when the parameters hold one.
InputFn = Callable[[Array, Any], Array]
# A top-level parameter entry that is not a layer: values an input quantizer
# learns (`compression.activations`); `quantize_input` hands it to `input_fn`.
LEARNED_ACTIVATIONS = '_activations'

CELLS = ('gru', 'lstm', 'rnn')
DTYPES = ('float32', 'bfloat16', 'float16')
# `model.matmul_precision`: the values of `jax.default_matmul_precision` for
# float32 products ('default' leaves JAX's setting alone). On GPUs 'default'
# and 'tensorfloat32' let float32 matmuls run in TF32, 'highest' / 'float32'
# keep full float32, 'bfloat16' one bfloat16 pass; XLA:CPU computes float32
# products in float32 whatever the setting.
PRECISIONS = ('default', 'high', 'highest', 'bfloat16', 'tensorfloat32',
              'float32')


def matmul_precision(name: str) -> Any:
  """The context that sets the default precision of float32 matmuls.

  Every product traced inside it (forward and, when the gradient is taken
  inside it too, backward) gets this precision.

  Args:
    name: one of PRECISIONS.

  Returns:
    A context manager (a no-op for 'default').
  """
  if name == 'default':
    return contextlib.nullcontext()
  return jax.default_matmul_precision(name)


def matmul(x: Array, w: Kernel) -> Array:
  """The one matrix product of every cell: `x @ w`, accumulated in float32.

  Args:
    x: (..., K) activations in the compute dtype.
    w: (K, N) kernel, or a low-rank factor dict `{'u': (K, r), 'v': (r, N)}`
      (see `compression.lowrank`), multiplied through as `(x u) v` so a rank
      r < KN / (K + N) really costs fewer flops than the dense product. Cast
      to `x.dtype` so a float32 parameter runs in bfloat16 when the layer
      computes in bfloat16.

  Returns:
    (..., N) float32 product.
  """
  if isinstance(w, Mapping) and 'core_0' in w:
    return tt_matmul(x, tt_cores(w))
  if isinstance(w, Mapping):
    # The (..., r) intermediate goes back to the compute dtype so bfloat16
    # layers keep running both products in bfloat16.
    return matmul(matmul(x, w['u']).astype(x.dtype), w['v'])
  lead = x.shape[:-1]
  # A 2-D product: XLA:CPU ran the (T, B, F) x (F, N) dot, above all its
  # kernel gradient (a contraction over two axes), 7x slower than the same
  # dot on (T*B, F). The reshape is free.
  y = jnp.matmul(x.reshape(-1, x.shape[-1]), w.astype(x.dtype),
                 preferred_element_type=jnp.float32)
  return y.reshape(*lead, y.shape[-1])


def tt_cores(w: Mapping[str, Any]) -> list[Array]:
  """The cores `[core_0, ..., core_{d-1}]` of a tensor-train factor dict."""
  return [w[f'core_{k}'] for k in range(len(w))]


def tt_matmul(x: Array, cores: list[Array]) -> Array:
  """`x @ W` for W given by tensor-train cores, without forming W.

  Core k has shape (r_{k-1}, m_k, n_k, r_k) with r_0 = r_d = 1, and
  `W[(i_1..i_d), (j_1..j_d)] = G_1[0, i_1, j_1, :] ... G_d[:, i_d, j_d, 0]`
  with row-major multi-indices (see `compression.factors`). A sum of r
  Kronecker products `sum_k A_k (x) B_k` is the case d = 2, r_1 = r.

  The cores are contracted one at a time, each as one 2-D product (the
  layout `matmul` keeps for XLA:CPU), so the cost per row is
  `sum_k r_{k-1} m_k n_k r_k (n_1..n_{k-1}) (m_{k+1}..m_d)` multiply-adds
  instead of `m n`.

  Args:
    x: (..., m) activations in the compute dtype, m = m_1 ... m_d.
    cores: the d cores.

  Returns:
    (..., n) float32 product, n = n_1 ... n_d.
  """
  lead = x.shape[:-1]
  rows = 1
  for d in lead:
    rows *= d
  # t: (rows * P, r_{k-1}, rest) with P = n_1..n_{k-1} done, rest = m_k..m_d.
  t = x.reshape(rows, 1, x.shape[-1])
  done = 1
  for k, core in enumerate(cores):
    r0, m, n, r1 = core.shape
    rest = t.shape[-1] // m
    t = t.reshape(rows * done, r0, m, rest).transpose(0, 3, 1, 2)
    y = jnp.matmul(t.reshape(-1, r0 * m), core.reshape(r0 * m, n * r1).astype(
        x.dtype), preferred_element_type=jnp.float32)
    # (rows * P, rest, n_k, r_k) -> (rows * P * n_k, r_k, rest).
    y = y.reshape(rows * done, rest, n, r1).transpose(0, 2, 3, 1)
    done *= n
    t = y if k == len(cores) - 1 else y.astype(x.dtype)
    t = t.reshape(rows * done, r1, rest)
  return t.reshape(*lead, done)


def factored_shape(w: Mapping[str, Any]) -> tuple[int, int]:
  """The (K, N) shape of the kernel a factor dict stands for.

  Args:
    w: a low-rank dict `{'u': (K, r), 'v': (r, N)}` or a tensor-train dict
      `{'core_0': (1, m_1, n_1, r_1), ..., 'core_{d-1}': (r_{d-1}, m_d, n_d,
      1)}`.

  Returns:
    (K, N): (rows of u, columns of v), or (m_1 ... m_d, n_1 ... n_d).

  Raises:
    ValueError: the factors do not chain (inner sizes or ranks differ) or
      the dict is neither kind.
  """
  if 'core_0' in w:
    keys = set(w)
    if keys != {f'core_{k}' for k in range(len(keys))}:
      raise ValueError(f'tensor-train cores {sorted(keys)} are not core_0..')
    shapes = [tuple(jnp.shape(c)) for c in tt_cores(w)]
    if any(len(s) != 4 for s in shapes):
      raise ValueError(f'tensor-train cores must be 4-D, got {shapes}')
    ranks = [s[0] for s in shapes] + [s[3] for s in shapes[-1:]]
    if ranks[0] != 1 or ranks[-1] != 1 or any(
        a[3] != b[0] for a, b in zip(shapes, shapes[1:])):
      raise ValueError(f'tensor-train cores {shapes} do not chain (ranks '
                       'r_0 = r_d = 1 and r_k equal on both sides)')
    rows = cols = 1
    for s in shapes:
      rows, cols = rows * s[1], cols * s[2]
    return rows, cols
  if set(w) != {'u', 'v'}:
    raise ValueError(f'factor dict keys {sorted(w)} are neither u, v nor '
                     'core_k')
  u, v = jnp.shape(w['u']), jnp.shape(w['v'])
  if len(u) != 2 or len(v) != 2 or u[1] != v[0]:
    raise ValueError(f'low-rank factors {u} x {v} do not chain')
  return u[0], v[1]


def kernel_param(module: nn.Module, name: str,
                 init: nn.initializers.Initializer,
                 shape: tuple[int, int]) -> Kernel:
  """`module.param(name, init, shape)`, or the factored kernel given for it.

  Flax's `param` checks a provided value's leaves against the shape `init`
  would create, so a low-rank factor dict `{'u': (K, r), 'v': (r, N)}` (see
  `compression.lowrank`) or a tensor-train / Kronecker dict of cores (see
  `compression.factors`) would fail it; such a dict is returned as it is,
  after checking that it stands for a kernel of the expected shape
  (`factored_shape`), and `matmul` multiplies through it.

  Args:
    module: the module owning the parameter (inside its compact method).
    name: the parameter name.
    init: initializer of the dense kernel.
    shape: (K, N), the dense kernel's shape.

  Returns:
    The (K, N) float32 kernel, or the factor dict provided in its place.
  """
  if module.has_variable('params', name):
    value = module.get_variable('params', name)
    if isinstance(value, Mapping):
      try:
        got = factored_shape(value)
      except ValueError:
        got = None
      if got != tuple(shape):
        raise flax.errors.ScopeParamShapeError(
            name, module.scope.path_text, got, tuple(shape))
      return value
  return module.param(name, init, shape, jnp.float32)


class CellSpec(NamedTuple):
  """Static description of one cell type.

  Attributes:
    gates: number G of gate blocks of width H in the kernels.
    gate_names: the gate blocks in kernel column order.
  """
  gates: int
  gate_names: tuple[str, ...]


CELL_SPECS = {
    'rnn': CellSpec(1, ('h',)),
    'lstm': CellSpec(4, ('i', 'f', 'g', 'o')),
    'gru': CellSpec(3, ('r', 'z', 'n')),
}


def _identity(h: Array) -> Array:
  return h


def _gate(a: Array, fn: Callable[[Array], Array]) -> Array:
  return fn(a)


def quantize_input(module: nn.Module, x: Array,
                   input_fn: InputFn | None) -> Array:
  """`input_fn(x, learned)` inside a model's top-level module (x if None).

  `learned` is the top-level parameter entry `LEARNED_ACTIVATIONS` when the
  parameters the model runs with hold one (a learned input step, added by
  the compressor), else None. The model never creates the entry, so a
  checkpoint of the float model restores into it unchanged.

  Args:
    module: the top-level module (its parameters are the root's).
    x: the model input.
    input_fn: the input quantizer, or None.

  Returns:
    The (fake-)quantized input.
  """
  if input_fn is None:
    return x
  learned = (module.get_variable('params', LEARNED_ACTIVATIONS)
             if module.has_variable('params', LEARNED_ACTIVATIONS) else None)
  return input_fn(x, learned)


def rnn_step(params: dict, carry: Array, xp: Array, dtype: Any,
             state_fn: StateFn = _identity,
             gate_fn: GateFn = _gate) -> tuple[Array, Array]:
  """One Elman step, given the projected input `x_t W + b`.

  Args:
    params: the layer's parameters (`recurrent_kernel` is used here).
    carry: (B, H) float32 previous hidden state.
    xp: (B, H) float32 `x_t W + b`.
    dtype: compute dtype of the recurrent matmul.
    state_fn: applied to the new hidden state (e.g. fake-quant).
    gate_fn: applies the tanh (`gate_fn(pre_activation, jnp.tanh)`).

  Returns:
    (new carry, output); both the new hidden state.
  """
  h = state_fn(gate_fn(xp + matmul(carry.astype(dtype),
                                   params['recurrent_kernel']), jnp.tanh))
  return h, h


def lstm_step(params: dict, carry: tuple[Array, Array], xp: Array, dtype: Any,
              state_fn: StateFn = _identity,
              cell_state_fn: StateFn = _identity,
              gate_fn: GateFn = _gate
              ) -> tuple[tuple[Array, Array], Array]:
  """One LSTM step, given the projected input `x_t W + b`.

  Args:
    params: the layer's parameters (`recurrent_kernel` is used here).
    carry: `(h, c)`, each (B, H) float32.
    xp: (B, 4H) float32 `x_t W + b`, gates `[i, f, g, o]`.
    dtype: compute dtype of the recurrent matmul.
    state_fn: applied to the new hidden state h.
    cell_state_fn: applied to the new cell state c.
    gate_fn: applies each sigmoid and tanh, tanh(c) included.

  Returns:
    (new `(h, c)`, new h).
  """
  h, c = carry
  gates = xp + matmul(h.astype(dtype), params['recurrent_kernel'])
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  sigmoid = jax.nn.sigmoid
  c = cell_state_fn(gate_fn(f, sigmoid) * c
                    + gate_fn(i, sigmoid) * gate_fn(g, jnp.tanh))
  h = state_fn(gate_fn(o, sigmoid) * gate_fn(c, jnp.tanh))
  return (h, c), h


def gru_step(params: dict, carry: Array, xp: Array, dtype: Any,
             state_fn: StateFn = _identity,
             gate_fn: GateFn = _gate) -> tuple[Array, Array]:
  """One GRU step, given the projected input `x_t W + b`.

  Args:
    params: the layer's parameters (`recurrent_kernel`, `recurrent_bias`).
    carry: (B, H) float32 previous hidden state.
    xp: (B, 3H) float32 `x_t W + b`, gates `[r, z, n]`.
    dtype: compute dtype of the recurrent matmul.
    state_fn: applied to the new hidden state.
    gate_fn: applies each sigmoid and tanh.

  Returns:
    (new carry, output); both the new hidden state.
  """
  hp = matmul(carry.astype(dtype), params['recurrent_kernel'])
  xr, xz, xn = jnp.split(xp, 3, axis=-1)
  hr, hz, hn = jnp.split(hp, 3, axis=-1)
  r = gate_fn(xr + hr, jax.nn.sigmoid)
  z = gate_fn(xz + hz, jax.nn.sigmoid)
  n = gate_fn(xn + r * (hn + params['recurrent_bias']), jnp.tanh)
  h = state_fn((1.0 - z) * n + z * carry)
  return h, h


# ----------------------------------------------------------------------------
# Fast path: the scan with a hand-written backward pass.
#
# jax.grad of the scan transposes every step on its own: each reverse step
# runs, besides the (B, G*H) x (G*H, H) product that carries the gradient to
# h_{t-1}, two small weight-gradient products (x_t^T d_t and h_{t-1}^T d_t)
# and adds them into loop-carried accumulators. The custom VJP below keeps
# only the product that is truly sequential inside the reverse scan; the gate
# pre-activation gradients d_t of all steps come out of it as one (T, B, G*H)
# array, and the weight gradients are then two big (T*B)-row matmuls, the
# input gradient one more. The forward pass stores what the backward needs
# (the previous state and the gate activations) instead of letting autodiff
# save every intermediate of the step.


class _SeqSpec(NamedTuple):
  """Static settings of a fast-path sequence (hashable: a nondiff argument)."""
  cell: str
  dtype: Any
  unroll: int
  hoist: bool


def _split(a: Array, n: int) -> list[Array]:
  return jnp.split(a, n, axis=-1)


def _fast_forward_step(spec: _SeqSpec, w: dict, carry: Carry, xp: Array
                       ) -> tuple[Carry, Array, tuple]:
  """One step: (new carry, output h, residuals for the backward step)."""
  if spec.cell == 'gru':
    h = carry
    hp = matmul(h.astype(spec.dtype), w['recurrent_kernel'])
    xr, xz, xn = _split(xp, 3)
    hr, hz, hn = _split(hp, 3)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    hnb = hn + w['recurrent_bias']
    n = jnp.tanh(xn + r * hnb)
    new = (1.0 - z) * n + z * h
    return new, new, (h, r, z, n, hnb)
  if spec.cell == 'lstm':
    h, c = carry
    a = xp + matmul(h.astype(spec.dtype), w['recurrent_kernel'])
    ai, af, ag, ao = _split(a, 4)
    i, f, o = jax.nn.sigmoid(ai), jax.nn.sigmoid(af), jax.nn.sigmoid(ao)
    g = jnp.tanh(ag)
    c_new = f * c + i * g
    tc = jnp.tanh(c_new)
    h_new = o * tc
    return (h_new, c_new), h_new, (h, c, i, f, g, o, tc)
  h = carry
  h_new = jnp.tanh(xp + matmul(h.astype(spec.dtype), w['recurrent_kernel']))
  return h_new, h_new, (h, h_new)


def _fast_backward_step(spec: _SeqSpec, res: tuple, dnew: Carry
                        ) -> tuple[Array, Array, Carry]:
  """Transposes one step, given the gradient w.r.t. its (unmasked) new carry.

  Returns:
    (d of the projected input x_t W + b (B, G*H), d of h_{t-1} U (B, G*H),
    the gradient reaching the previous carry other than through U).
  """
  if spec.cell == 'gru':
    h, r, z, n, hnb = res
    dn = dnew * (1.0 - z)
    dz = dnew * (h - n)
    dan = dn * (1.0 - n * n)
    dar = dan * hnb * r * (1.0 - r)
    daz = dz * z * (1.0 - z)
    dxp = jnp.concatenate([dar, daz, dan], axis=-1)
    dhp = jnp.concatenate([dar, daz, dan * r], axis=-1)
    return dxp, dhp, dnew * z
  if spec.cell == 'lstm':
    h, c, i, f, g, o, tc = res
    dh, dc = dnew
    dc = dc + dh * o * (1.0 - tc * tc)
    da = jnp.concatenate([
        dc * g * i * (1.0 - i),
        dc * c * f * (1.0 - f),
        dc * i * (1.0 - g * g),
        dh * tc * o * (1.0 - o)], axis=-1)
    return da, da, (jnp.zeros_like(dh), dc * f)
  h, h_new = res
  da = dnew * (1.0 - h_new * h_new)
  return da, da, jnp.zeros_like(dnew)


def _fast_scan(spec: _SeqSpec, w: dict, xs: Array, mask: Array, carry0: Carry,
               save: bool) -> tuple[tuple[Array, Carry], Any]:
  """The forward scan; with `save`, also the residuals of every step."""
  if spec.hoist:
    xs = matmul(xs, w['input_kernel']) + w['bias']

  def step(carry, inputs):
    x_t, m_t = inputs
    xp = x_t if spec.hoist else matmul(x_t, w['input_kernel']) + w['bias']
    new, y, res = _fast_forward_step(spec, w, carry, xp)
    new = jax.tree_util.tree_map(lambda a, b: jnp.where(m_t, a, b), new,
                                 carry)
    return new, (jnp.where(m_t, y, 0.0), res if save else None)

  carry, (ys, res) = jax.lax.scan(step, carry0, (xs, mask),
                                  unroll=spec.unroll)
  return (ys, carry), res


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def fast_sequence(spec: _SeqSpec, w: dict, xs: Array, mask: Array,
                  carry0: Carry) -> tuple[Array, Carry]:
  """A layer over time-major inputs, differentiated by a hand-written VJP.

  The same function as the generic scan in `RecurrentLayer` (a test checks
  values and gradients against it).

  Args:
    spec: cell, compute dtype, unroll and input layout.
    w: the layer's dense parameters, kernels already in the compute dtype.
    xs: (T, B, F) inputs in the compute dtype.
    mask: (T, B, 1) bool, True at valid steps.
    carry0: the initial carry (float32).

  Returns:
    (outputs (T, B, H) float32, zero at padded steps; final carry).
  """
  return _fast_scan(spec, w, xs, mask, carry0, save=False)[0]


def _fast_sequence_fwd(spec, w, xs, mask, carry0):
  out, res = _fast_scan(spec, w, xs, mask, carry0, save=True)
  return out, (w, xs, mask, res)


def _fast_sequence_bwd(spec, saved, cts):
  w, xs, mask, res = saved
  dys, dcarry_last = cts
  u = w['recurrent_kernel']
  # The sequential product below multiplies by U^T at every step. Left to
  # itself XLA folds the transpose into the dot as a transposed operand,
  # which YNNPACK's small-matrix kernels run 13-29% slower than a row-major
  # (G*H, H) matrix (GRU 44 vs 34 us, LSTM 59 vs 52 us per step at B=32);
  # the barrier keeps one real transpose per call instead.
  u_t = jax.lax.optimization_barrier(u.T.astype(spec.dtype))
  is_lstm = spec.cell == 'lstm'

  def step(dcarry, inputs):
    dy, m_t, res_t = inputs
    # new carry = where(m, cell(...), carry) and y = where(m, h', 0): at a
    # valid step the gradient flows into the cell, at a padded one straight
    # through to the previous carry.
    if is_lstm:
      dnew = (jnp.where(m_t, dcarry[0] + dy, 0.0),
              jnp.where(m_t, dcarry[1], 0.0))
    else:
      dnew = jnp.where(m_t, dcarry + dy, 0.0)
    dxp, dhp, direct = _fast_backward_step(spec, res_t, dnew)
    dh_prev = jnp.matmul(dhp.astype(spec.dtype), u_t,
                         preferred_element_type=jnp.float32)
    passed = jax.tree_util.tree_map(lambda d: jnp.where(m_t, 0.0, d), dcarry)
    if is_lstm:
      dprev = (passed[0] + direct[0] + dh_prev, passed[1] + direct[1])
    else:
      dprev = passed + direct + dh_prev
    return dprev, (dxp, dhp if spec.cell == 'gru' else None)

  dcarry0, (dxp, dhp) = jax.lax.scan(step, dcarry_last, (dys, mask, res),
                                     reverse=True, unroll=spec.unroll)
  if dhp is None:
    dhp = dxp
  h_prev = res[0]
  # Weight gradients as single (T*B)-row products.
  def wgrad(a, d):
    a2 = a.reshape(-1, a.shape[-1]).astype(spec.dtype)
    d2 = d.reshape(-1, d.shape[-1]).astype(spec.dtype)
    return jnp.matmul(a2.T, d2, preferred_element_type=jnp.float32)
  dw = {
      'input_kernel': wgrad(xs, dxp).astype(w['input_kernel'].dtype),
      'recurrent_kernel': wgrad(h_prev, dhp).astype(u.dtype),
      'bias': jnp.sum(dxp, axis=(0, 1)).astype(w['bias'].dtype),
  }
  if 'recurrent_bias' in w:
    hidden = u.shape[0]
    dw['recurrent_bias'] = jnp.sum(dhp[..., 2 * hidden:], axis=(0, 1)).astype(
        w['recurrent_bias'].dtype)
  dxs = matmul(dxp.astype(spec.dtype), w['input_kernel'].T).astype(xs.dtype)
  return dw, dxs, None, dcarry0


fast_sequence.defvjp(_fast_sequence_fwd, _fast_sequence_bwd)


def _lstm_bias_init(hidden: int) -> nn.initializers.Initializer:
  """Zero bias with the forget-gate block at 1, so early gradients flow."""
  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)
  return init


def _cast_tree(tree: Any, dtype: Any) -> Any:
  """Casts the floating leaves of a parameter pytree to the compute dtype."""
  def cast(leaf):
    if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
      return leaf.astype(dtype)
    return leaf
  return jax.tree_util.tree_map(cast, tree)


def full_lengths(x: Array) -> Array:
  """Lengths (B,) int32 that mark every step of `x` (B, T, ...) valid."""
  return jnp.full((x.shape[0],), x.shape[1], jnp.int32)


class RecurrentLayer(nn.Module):
  """One recurrent layer (RNN, LSTM or GRU) scanned over time.

  Attributes:
    cell: 'gru', 'lstm' or 'rnn'.
    hidden: width H of the hidden state.
    dtype: compute dtype of the matmuls, 'float32', 'bfloat16' or 'float16'
      (`DTYPES`; float16 training needs loss scaling, see train.py). Parameters,
      the carry and the gate arithmetic stay float32.
    unroll: steps per iteration of the scan loop.
    state_fn: applied to the new hidden state at every step (identity when
      None); the hook for quantizing h_t.
    cell_state_fn: LSTM only: applied to the new cell state at every step.
    gate_fn: applies every sigmoid / tanh of the cell (`GateFn`; plain
      application when None): the hook for quantizing gates.
    hoist_input: project the whole input sequence in one matmul before the
      scan (True) or each step's input inside the scan (False, faster on
      CPU; see the module docstring).
    custom_grad: differentiate through `fast_sequence`'s hand-written VJP
      where it applies (no state hooks, dense kernels); False always uses
      the generic scan and `jax.grad` (the reference the tests compare to).
  """
  cell: str
  hidden: int
  dtype: str = 'float32'
  unroll: int = 1
  state_fn: StateFn | None = None
  cell_state_fn: StateFn | None = None
  gate_fn: GateFn | None = None
  hoist_input: bool = False
  custom_grad: bool = True

  def initial_carry(self, batch: int) -> Carry:
    """Zero carry: (B, H) for RNN/GRU, `(h, c)` for LSTM."""
    zeros = jnp.zeros((batch, self.hidden), jnp.float32)
    return (zeros, zeros) if self.cell == 'lstm' else zeros

  @nn.compact
  def __call__(self, x: Array, lengths: Array | None = None,
               initial_carry: Carry | None = None) -> tuple[Array, Carry]:
    """Runs the layer over a batch of padded sequences.

    Args:
      x: (B, T, F) inputs.
      lengths: (B,) int32 valid steps per sequence; None means all T.
      initial_carry: carry to start from; zeros when None.

    Returns:
      `(outputs, carry)`: outputs (B, T, H) float32, zero at padded steps;
      carry the state after each sequence's last valid step ((B, H), or
      `(h, c)` for LSTM).
    """
    if self.cell not in CELL_SPECS:
      raise InputError(f'model.cell: unknown cell {self.cell!r}; valid: '
                       f'{", ".join(CELLS)}')
    h_dim = self.hidden
    g_dim = CELL_SPECS[self.cell].gates * h_dim
    dtype = jnp.dtype(self.dtype)
    batch, steps = x.shape[:2]
    if lengths is None:
      lengths = full_lengths(x)

    params = {
        'input_kernel': kernel_param(
            self, 'input_kernel', nn.initializers.lecun_normal(),
            (x.shape[-1], g_dim)),
        'recurrent_kernel': kernel_param(
            self, 'recurrent_kernel', nn.initializers.orthogonal(),
            (h_dim, g_dim)),
        'bias': self.param(
            'bias',
            _lstm_bias_init(h_dim) if self.cell == 'lstm'
            else nn.initializers.zeros_init(),
            (g_dim,), jnp.float32),
    }
    if self.cell == 'gru':
      params['recurrent_bias'] = self.param(
          'recurrent_bias', nn.initializers.zeros_init(), (h_dim,),
          jnp.float32)
    # Cast kernels once here, not at every step inside the loop; biases stay
    # float32 because they add to the float32 accumulators.
    params = {k: _cast_tree(v, dtype) if k.endswith('kernel') else v
              for k, v in params.items()}

    # Time-major inside, since lax.scan walks the leading axis; transposing
    # the (B, T, F) input is cheaper than a (T, B, G*H) projection.
    x_tm = jnp.swapaxes(x, 0, 1).astype(dtype)
    mask = (jnp.arange(steps)[:, None] < lengths[None, :])[..., None]
    carry = (self.initial_carry(batch) if initial_carry is None
             else initial_carry)
    dense = not any(isinstance(v, Mapping) for v in params.values())
    if (self.custom_grad and dense and self.state_fn is None
        and self.cell_state_fn is None and self.gate_fn is None):
      spec = _SeqSpec(self.cell, dtype, self.unroll, self.hoist_input)
      ys, carry = fast_sequence(spec, params, x_tm, mask, carry)
      return jnp.swapaxes(ys, 0, 1), carry

    if self.hoist_input:
      # One big (T*B, F) x (F, G*H) projection outside the sequential loop.
      xs = matmul(x_tm, params['input_kernel']) + params['bias']
      project = _identity
    else:
      xs = x_tm
      def project(x_t):
        return matmul(x_t, params['input_kernel']) + params['bias']

    state_fn = self.state_fn or _identity
    cell_state_fn = self.cell_state_fn or _identity
    gate_fn = self.gate_fn or _gate
    if self.cell == 'lstm':
      def cell_step(carry, xp_t):
        return lstm_step(params, carry, xp_t, dtype, state_fn, cell_state_fn,
                         gate_fn)
    elif self.cell == 'gru':
      def cell_step(carry, xp_t):
        return gru_step(params, carry, xp_t, dtype, state_fn, gate_fn)
    else:
      def cell_step(carry, xp_t):
        return rnn_step(params, carry, xp_t, dtype, state_fn, gate_fn)

    def step(carry, inputs):
      x_t, m_t = inputs
      new_carry, y = cell_step(carry, project(x_t))
      # Padded steps keep the old carry, so the final carry is the state at
      # each sequence's true last step without a gather afterwards.
      new_carry = jax.tree_util.tree_map(
          lambda new, old: jnp.where(m_t, new, old), new_carry, carry)
      return new_carry, jnp.where(m_t, y, 0.0)

    carry = (self.initial_carry(batch) if initial_carry is None
             else initial_carry)
    carry, ys = jax.lax.scan(step, carry, (xs, mask), unroll=self.unroll)
    return jnp.swapaxes(ys, 0, 1), carry


class Dense(nn.Module):
  """`matmul(x, kernel) + bias`: a dense layer whose product is `matmul`.

  The task heads use it (not `flax.linen.Dense`) so that a compressed head
  kernel runs through the same single product as the recurrent kernels.
  Parameters: `kernel` (K, features), lecun normal; `bias` (features,), zero.

  Attributes:
    features: output width.
    dtype: compute dtype of the product, 'float32' or 'bfloat16'.
  """
  features: int
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies the layer.

    Args:
      x: (..., K) inputs.

    Returns:
      (..., features) float32 outputs.
    """
    kernel = kernel_param(self, 'kernel', nn.initializers.lecun_normal(),
                          (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,),
                      jnp.float32)
    return matmul(x.astype(self.dtype), kernel) + bias


class RecurrentStack(nn.Module):
  """`layers` recurrent layers of the same cell; layer i reads layer i-1.

  Parameters live under `layer_{i}/` (see the table in the module docstring).

  Attributes:
    cell: 'gru', 'lstm' or 'rnn'.
    hidden: width H of every layer.
    layers: number of layers.
    dtype: compute dtype, 'float32' or 'bfloat16'.
    unroll: steps per iteration of the scan loop.
    state_fn: applied to every layer's new hidden state at every step.
    cell_state_fn: LSTM only: applied to every layer's new cell state.
    gate_fn: applies every layer's sigmoids and tanhs (see `RecurrentLayer`).
    hoist_input: see `RecurrentLayer`.
  """
  cell: str
  hidden: int
  layers: int = 1
  dtype: str = 'float32'
  unroll: int = 1
  state_fn: StateFn | None = None
  cell_state_fn: StateFn | None = None
  gate_fn: GateFn | None = None
  hoist_input: bool = False

  @nn.compact
  def __call__(self, x: Array, lengths: Array | None = None
               ) -> tuple[list[Array], list[Carry]]:
    """Runs the stack.

    Args:
      x: (B, T, F) inputs.
      lengths: (B,) int32 valid steps per sequence; None means all T.

    Returns:
      `(outputs, carries)`: per layer, the (B, T, H) outputs (zero at padded
      steps) and the final carry at each sequence's last valid step.
    """
    outputs, carries = [], []
    for i in range(self.layers):
      x, carry = RecurrentLayer(
          cell=self.cell, hidden=self.hidden, dtype=self.dtype,
          unroll=self.unroll, state_fn=self.state_fn,
          cell_state_fn=self.cell_state_fn, gate_fn=self.gate_fn,
          hoist_input=self.hoist_input,
          name=f'layer_{i}')(x, lengths)
      outputs.append(x)
      carries.append(carry)
    return outputs, carries


def final_hidden(carry: Carry) -> Array:
  """The hidden state of a carry: the carry itself, or h of LSTM's (h, c)."""
  return carry[0] if isinstance(carry, tuple) else carry
