"""The LSTM step math, written once, and the two native PyTorch kernels every path calls.

Keras gate order ``i, f, c~, o`` (torch's too), ``a`` = activation, ``ra`` = recurrent_activation::

    z  = x @ kernel + h @ recurrent_kernel + bias        # [batch, 4 * units]
    c' = ra(f) * c + ra(i) * a(c~)
    h' = ra(o) * a(c')

- :func:`gates`: the math above for any activations (the generic loop, training, dropout).
- :func:`standard_gates_`: the same math for ``ra = sigmoid, a = tanh``, in place on ``z`` (fewer
  allocations; the step of the stream runtime on large batches).
- :func:`native_cell`: ``torch._VF.lstm_cell``, one dispatch for a whole step (small batches, where
  per-operation overhead dominates). Weights in torch's layout (``kernel.T``, ``recurrent_kernel.T``).
- :func:`native_sequence`: ``torch._VF.lstm``, PyTorch's fused sequence kernel (cuDNN on CUDA, the
  native kernel on CPU), used by :mod:`streamlstm.layers.fused`.

The three tanh/sigmoid variants give the same numbers to float32 rounding; the tests check each
against :func:`gates`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["gates", "native_cell", "native_sequence", "standard_gates_"]

# Resolved once: ``torch._VF`` looks names up on every attribute access.
_VF_LSTM_CELL = torch._VF.lstm_cell  # noqa: SLF001 (torch's native kernels have no public name)
_VF_LSTM = torch._VF.lstm  # noqa: SLF001

Activation = Callable[[torch.Tensor], torch.Tensor]


def gates(z: torch.Tensor, c: torch.Tensor, activation: Activation,
          recurrent_activation: Activation) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h', c')`` from the pre-activations ``z`` [batch, 4u] and the cell state ``c`` [batch, u]."""
    i, f, g, o = z.chunk(4, dim=-1)
    c_new = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
    return recurrent_activation(o) * activation(c_new), c_new


def standard_gates_(z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gates` with sigmoid/tanh, computed in place on ``z`` (which is consumed)."""
    u = z.shape[1] // 4
    z[:, :2 * u].sigmoid_()
    z[:, 2 * u:3 * u].tanh_()
    z[:, 3 * u:].sigmoid_()
    i, f, g, o = z.split(u, dim=1)
    c_new = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c_new), c_new


def native_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weight_ih: torch.Tensor,
                weight_hh: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One sigmoid/tanh step in one dispatch; ``weight_ih`` [4u, F], ``weight_hh`` [4u, u]."""
    return _VF_LSTM_CELL(x, (h, c), weight_ih, weight_hh, bias)


def native_sequence(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, kernel: torch.Tensor,
                    recurrent_kernel: torch.Tensor,
                    bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's sequence kernel over ``x`` [batch, time, F] from ``(h0, c0)`` [batch, u], Keras weights.

    Returns ``(outputs [batch, time, u], h_n, c_n)``."""
    weights = [kernel.T, recurrent_kernel.T]
    if bias is not None:
        weights += [bias, torch.zeros_like(bias)]
    # cuDNN keeps the workspace for backward only in train mode; on CPU the flag changes nothing.
    train = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, kernel, recurrent_kernel, bias))
    out, h_n, c_n = _VF_LSTM(x, (h0[None], c0[None]), weights, bias is not None, 1, 0.0, train, False, True)
    return out, h_n[0], c_n[0]
