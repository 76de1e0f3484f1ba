"""The LSTM step math, written once, and the two native PyTorch kernels every path calls.

Keras gate order ``i, f, c~, o`` (torch's too), ``a`` = activation, ``ra`` = recurrent_activation::

    z  = x @ kernel + h @ recurrent_kernel + bias        # [batch, 4 * units]
    c' = ra(f) * c + ra(i) * a(c~)
    h' = ra(o) * a(c')

- :func:`gates`: the math above for any activations (the generic loop, training, dropout).
- :func:`gate_major_weights`, :func:`gate_major_cell`: the same math for ``ra = sigmoid, a = tanh``
  with the gates in *gate-major* layout ``z [4, batch, u]``, blocks in the order ``i, f, o, c~``: ONE
  batched GEMM over the joined inputs ``[x | h | 1]`` [batch, F + u + 1] against the stacked weights
  ``[kernel; recurrent_kernel; bias]`` [4, F + u + 1, u] computes all four blocks (no ``1`` column and
  no bias row without a bias). Every block is then contiguous, so ``sigmoid_`` runs once over
  ``z[:3]`` and ``tanh_`` over ``z[3]`` at full vector speed (on ``[batch, 4u]`` the per-gate slices
  are strided, which costs torch's CPU kernels 3-4x: tanh of a [1000, 32] slice of [1000, 128] takes
  ~78 us, of a contiguous [1000, 32] ~21 us). The step of the stream runtime on batches from
  ``CELL_ROWS`` rows (``LSTMCell.step`` picks the kernel by rows; the threshold measured by
  benchmarks/bench_kernels.py, lone steps and the chained rounds of a live batch).
- :func:`native_cell`: ``torch._VF.lstm_cell``, one dispatch for a whole step (small batches, where
  per-operation overhead dominates). Weights in torch's layout (``kernel.T``, ``recurrent_kernel.T``).
- :func:`native_sequence`: ``torch._VF.lstm``, PyTorch's fused sequence kernel (cuDNN on CUDA, the
  native kernel on CPU), used by :mod:`streamlstm.layers.fused`.

The tanh/sigmoid variants give the same numbers to float32 rounding (the sums of the GEMMs are
ordered differently); tests/layers/test_step_kernels.py checks them against the Keras formula and
against each other.

Precision policy: PyTorch's one knob, ``torch.get_float32_matmul_precision()``, decides for every
kernel. ``"highest"`` (PyTorch's default) computes float32 exactly (IEEE) everywhere; ``"high"`` and
``"medium"`` let CUDA use TF32 tensor cores. The GEMM kernels (the step path, the generic loop, Dense
heads; cuBLAS on CUDA) read that setting themselves. cuDNN's LSTM does not: it reads
``torch.backends.cudnn.rnn.fp32_precision`` (``cudnn.allow_tf32`` before torch 2.9), "tf32" by
default, so ``mode="step"`` and ``mode="chunk"`` would differ by about 1e-3 on Ampere and later GPUs.
:func:`native_sequence` therefore
runs cuDNN under :func:`cudnn_rnn_precision` (``"ieee"`` at "highest", ``"tf32"`` otherwise) and puts the
global setting back after the call; when gradients are needed, cuDNN's backward runs under the same
precision (autograd would otherwise run it later at the global setting). Tensors on the CPU skip all
of this (one attribute read): cuDNN never runs there. On the CPU, PyTorch applies the same knob to
its own kernels ("medium" lets oneDNN GEMMs use bfloat16 on CPUs that have it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch

__all__ = ["GateMajorWeights", "cudnn_rnn_precision", "gate_major_cell", "gate_major_weights", "gates",
           "native_cell", "native_sequence"]

# Resolved once: ``torch._VF`` looks names up on every attribute access.
_VF_LSTM_CELL = torch._VF.lstm_cell  # noqa: SLF001 (torch's native kernels have no public name)
_VF_LSTM = torch._VF.lstm  # noqa: SLF001

_CUDNN_RNN = torch.backends.cudnn.rnn
# One cuDNN call under the policy at a time: two threads that each save, set and restore the global
# setting could otherwise restore each other's value in the middle of a call (or leave it changed).
_CUDNN_RNN_LOCK = threading.Lock()

Activation = Callable[[torch.Tensor], torch.Tensor]
_T = TypeVar("_T")


class _CudnnRnnSetting:
    """The global setting cuDNN's RNN kernels read (``allowTF32CuDNN(Float32Op::RNN)``): the per-operator
    ``torch.backends.cudnn.rnn.fp32_precision`` where torch has one (2.9 and later), else cuDNN's one
    legacy flag ``torch.backends.cudnn.allow_tf32``."""

    def __init__(self, per_operator: bool) -> None:
        self.per_operator = per_operator

    def read(self) -> str | bool:
        return _CUDNN_RNN.fp32_precision if self.per_operator else torch.backends.cudnn.allow_tf32

    def write(self, value: str | bool) -> None:
        if self.per_operator:
            _CUDNN_RNN.fp32_precision = value
        else:
            torch.backends.cudnn.allow_tf32 = value

    def value_for(self, precision: str) -> str | bool:
        """What to write for ``precision`` ("ieee" or "tf32")."""
        return precision if self.per_operator else precision == "tf32"


_SETTING = _CudnnRnnSetting(per_operator=hasattr(_CUDNN_RNN, "fp32_precision"))


def gates(z: torch.Tensor, c: torch.Tensor, activation: Activation,
          recurrent_activation: Activation) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h', c')`` from the pre-activations ``z`` [batch, 4u] and the cell state ``c`` [batch, u]."""
    i, f, g, o = z.chunk(4, dim=-1)
    c_new = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
    return recurrent_activation(o) * activation(c_new), c_new


# Gate-major block order: the three sigmoid gates first (one sigmoid_ call), the candidate last.
_GATE_MAJOR_ORDER = (0, 1, 3, 2)   # Keras blocks i, f, c~, o -> i, f, o, c~


class GateMajorWeights(NamedTuple):
    """A standard cell's weights for :func:`gate_major_cell`: ``stacked`` [4, F + u (+ 1), u] holds
    ``kernel`` above ``recurrent_kernel`` above ``bias`` (when there is one), blocks in the order
    ``i, f, o, c~`` (see the module docstring)."""

    stacked: torch.Tensor
    has_bias: bool


def gate_major_weights(kernel: torch.Tensor, recurrent_kernel: torch.Tensor,
                       bias: torch.Tensor | None) -> GateMajorWeights:
    """Keras weights (``kernel`` [F, 4u], ``recurrent_kernel`` [u, 4u], ``bias`` [4u]) re-laid out,
    detached copies (the same numbers, moved)."""
    units = recurrent_kernel.shape[0]
    rows = [kernel, recurrent_kernel] + ([] if bias is None else [bias.reshape(1, -1)])
    joined = torch.cat([weight.detach() for weight in rows], dim=0)                # [F + u (+ 1), 4u]
    stacked = joined.reshape(joined.shape[0], 4, units).permute(1, 0, 2)[list(_GATE_MAJOR_ORDER)].contiguous()
    return GateMajorWeights(stacked, bias is not None)


def gate_major_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                    weights: GateMajorWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """One sigmoid/tanh step of ``x`` [n, F] from ``h``, ``c`` [n, u] with one GEMM:
    ``z = [x | h | 1] @ stacked`` in gate-major layout [4, n, u] (``x @ kernel + h @ recurrent_kernel +
    bias``). Returns new tensors ``(h', c')`` [n, u]; ``x``, ``h`` and ``c`` are only read."""
    parts = [x, h, _ones_column(x)] if weights.has_bias else [x, h]
    joined = torch.cat(parts, dim=1)
    return _gate_math(torch.bmm(joined.expand(4, *joined.shape), weights.stacked), c)


# The ``1`` columns of gate_major_cell by (rows, dtype, device): a step of a hundred rows would
# otherwise spend a few microseconds of its ~100 making one. Only ever read (``cat`` copies it).
_ONES: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _ones_column(like: torch.Tensor) -> torch.Tensor:
    """A ones column ``[rows, 1]`` of ``like``'s dtype and device, made once per shape: a plain
    tensor (not an inference tensor, whatever mode made it) that nothing writes."""
    key = (like.shape[0], like.dtype, like.device)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) >= 32:
            _ONES.clear()
        with torch.inference_mode(False):
            ones = _ONES[key] = torch.ones((key[0], 1), dtype=key[1], device=key[2])
    return ones


def _gate_math(g: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``c' = sigmoid(f) * c + sigmoid(i) * tanh(c~)``, ``h' = sigmoid(o) * tanh(c')`` from the
    pre-activations ``g`` [4, n, u] (blocks i, f, o, c~; activated in place). Few calls: each costs
    about a microsecond of dispatch, which shows at a hundred rows."""
    i, f, o, candidate = g.unbind(0)
    g[:3].sigmoid_()
    candidate.tanh_()
    c_new = torch.mul(f, c).addcmul_(i, candidate)
    return torch.tanh(c_new).mul_(o), c_new


def native_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weight_ih: torch.Tensor,
                weight_hh: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One sigmoid/tanh step in one dispatch; ``weight_ih`` [4u, F], ``weight_hh`` [4u, u]."""
    return _VF_LSTM_CELL(x, (h, c), weight_ih, weight_hh, bias)


def native_sequence(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, kernel: torch.Tensor,
                    recurrent_kernel: torch.Tensor,
                    bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's sequence kernel over ``x`` [batch, time, F] from ``(h0, c0)`` [batch, u], Keras weights.

    Off the CPU it runs under the precision policy (module docstring), its backward too.
    Returns ``(outputs [batch, time, u], h_n, c_n)``."""
    weights = [kernel.T, recurrent_kernel.T]
    if bias is not None:
        weights += [bias, torch.zeros_like(bias)]
    # cuDNN keeps the workspace for backward only in train mode; on CPU the flag changes nothing.
    train = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, kernel, recurrent_kernel, bias))
    tensors = (x, h0[None], c0[None], *weights)
    if x.is_cpu:
        out, h_n, c_n = _sequence(bias is not None, train, *tensors)
    elif train:
        out, h_n, c_n = _SequenceUnderPolicy.apply(bias is not None, *tensors)
    else:
        out, h_n, c_n = _under_policy(cudnn_rnn_precision(), lambda: _sequence(bias is not None, False, *tensors))
    return out, h_n[0], c_n[0]


def _sequence(has_bias: bool, train: bool, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
              *weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _VF_LSTM(x, (h0, c0), weights, has_bias, 1, 0.0, train, False, True)


def cudnn_rnn_precision() -> str:
    """The ``torch.backends.cudnn.rnn.fp32_precision`` streamlstm's cuDNN calls run under: ``"ieee"``
    when ``torch.get_float32_matmul_precision()`` is ``"highest"``, else ``"tf32"`` (the choice cuBLAS
    makes from the same setting, see the module docstring)."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _under_policy(precision: str, call: Callable[[], _T], setting: _CudnnRnnSetting = _SETTING) -> _T:
    """``call()`` with cuDNN's RNN precision set to ``precision``, the global setting restored after.

    Only the RNN setting is touched: ``torch.backends.cudnn.flags(allow_tf32=...)`` would also reset
    ``enabled`` (to False: no cuDNN at all), ``benchmark`` and ``deterministic`` to its own defaults, and
    the legacy ``allow_tf32`` getter raises once the per-operator settings differ."""
    with _CUDNN_RNN_LOCK:
        saved = setting.read()
        setting.write(setting.value_for(precision))
        try:
            return call()
        finally:
            setting.write(saved)


class _SequenceUnderPolicy(torch.autograd.Function):
    """:func:`_sequence` when gradients are needed: autograd would run cuDNN's backward later, at
    whatever the global setting is then. The forward records the kernel's own graph on detached inputs
    (under the policy); the backward differentiates that graph under the same precision."""

    @staticmethod
    def forward(ctx, has_bias: bool, *tensors: torch.Tensor):
        precision = cudnn_rnn_precision()
        inner = [t.detach().requires_grad_(t.requires_grad) for t in tensors]
        with torch.enable_grad():
            outputs = _under_policy(precision, lambda: _sequence(has_bias, True, *inner))
        ctx.precision, ctx.inner, ctx.outputs = precision, inner, outputs
        return tuple(o.detach() for o in outputs)   # detach shares the version counter: in-place use is caught

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        wanted = [t for t in ctx.inner if t.requires_grad]
        found = iter(_under_policy(ctx.precision, lambda: torch.autograd.grad(
            ctx.outputs, wanted, grads, retain_graph=True)))   # kept while the caller's graph lives
        return (None, *(next(found) if t.requires_grad else None for t in ctx.inner))
