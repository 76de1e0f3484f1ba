"""The fused LSTM kernel adapter: PyTorch's native LSTM (cuDNN on CUDA) for any Keras mask.

A masked step leaves ``[h, c]`` untouched, so a row's real steps can be run back to back: each row's
real steps are moved to the front (stable, so their order is kept), the rows are run as one packed
sequence with per-row lengths, and the outputs are put back with the repeat-previous-output rule::

    k[b, t] = number of real steps of row b up to and including t
    out[b, t] = 0                                   if zero_output_for_mask and not mask[b, t]
              = packed_output(row b, step k - 1)    if k > 0
              = initial_output[b] (default 0)       otherwise

One ``index_select`` builds the packed input and one builds the outputs. Fully masked rows never enter
the kernel: their outputs are zeros and their final states are their initial states.
"""

from __future__ import annotations

import torch

Result = tuple[torch.Tensor | None, torch.Tensor, list[torch.Tensor]]


def _weights(kernel: torch.Tensor, recurrent_kernel: torch.Tensor, bias: torch.Tensor | None) -> list[torch.Tensor]:
    if bias is None:
        return [kernel.T, recurrent_kernel.T]
    return [kernel.T, recurrent_kernel.T, bias, torch.zeros_like(bias)]


def _needs_train_mode(*tensors: torch.Tensor) -> bool:
    # cuDNN keeps the workspace for backward only in train mode; on CPU the flag changes nothing.
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors if t is not None)


def fused_lstm(x: torch.Tensor, mask: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor,
               kernel: torch.Tensor, recurrent_kernel: torch.Tensor, bias: torch.Tensor | None, *,
               zero_output_for_mask: bool = False, return_sequences: bool = True,
               initial_output: torch.Tensor | None = None) -> Result:
    """Run a tanh/sigmoid LSTM over ``x`` [batch, time, features] from ``(h0, c0)`` [batch, units].

    Returns ``(outputs [batch, time, units] or None, last_output [batch, units], [h_n, c_n])`` with the
    numbers of the generic Keras loop. ``initial_output`` [batch, units] replaces the zeros repeated by
    masked steps before a row's first real step.
    """
    weights = _weights(kernel, recurrent_kernel, bias)
    train = _needs_train_mode(x, h0, c0, kernel, recurrent_kernel, bias)
    if mask is None or bool(mask.all()):
        out, h_n, c_n = torch._VF.lstm(x, (h0[None], c0[None]), weights, bias is not None, 1, 0.0, train,
                                       False, True)
        return (out if return_sequences else None), out[:, -1], [h_n[0], c_n[0]]
    return _fused_masked(x, mask, h0, c0, weights, bias is not None, train, zero_output_for_mask, return_sequences,
                         initial_output)


def _fused_masked(x, mask, h0, c0, weights, has_biases, train, zero_output_for_mask, return_sequences,
                  initial_output) -> Result:
    batch, time, features = x.shape
    device = x.device
    lengths = mask.sum(dim=1)
    sorted_lengths, order = torch.sort(lengths, descending=True, stable=True)
    live = int((sorted_lengths > 0).sum())
    units = h0.shape[1]
    before_first = x.new_zeros(batch, units) if initial_output is None else initial_output
    if live == 0:  # every row fully masked: outputs repeat the initial output, states unchanged
        outputs = before_first[:, None, :].expand(batch, time, units)
        if zero_output_for_mask:
            outputs = torch.zeros_like(outputs)
        return (outputs if return_sequences else None), outputs[:, -1], [h0, c0]
    max_len = int(sorted_lengths[0])
    steps = torch.arange(max_len, device=device)
    # Packed layout: time-major, within a time step the rows in `order`, only rows still running.
    running = steps[:, None] < sorted_lengths[None, :]                     # [max_len, batch]
    batch_sizes = running.sum(dim=1)
    real_first = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # real steps' times, in order
    source = order[None, :] * time + real_first[order, :max_len].T          # flat [batch*time] index
    packed_x = x.reshape(batch * time, features).index_select(0, source[running])
    live_rows = order[:live]
    hx = (h0.index_select(0, live_rows)[None], c0.index_select(0, live_rows)[None])
    packed_out, h_n, c_n = torch._VF.lstm(packed_x, batch_sizes.cpu(), hx, weights, has_biases, 1, 0.0, train,
                                          False)
    h_final = h0.index_copy(0, live_rows, h_n[0])
    c_final = c0.index_copy(0, live_rows, c_n[0])
    # Where each (row, t) finds its output in `table` = packed_out, then one initial-output row per row,
    # then one zero row.
    offsets = torch.cumsum(batch_sizes, 0) - batch_sizes                  # start of each packed step
    rank = torch.empty_like(order)
    rank[order] = torch.arange(batch, device=device)
    seen = torch.cumsum(mask, dim=1)                                       # real steps up to t
    first_rows = packed_out.shape[0] + torch.arange(batch, device=device)[:, None]
    zero_row = packed_out.shape[0] + batch
    index = offsets[(seen - 1).clamp(min=0)] + rank[:, None]
    index = torch.where(seen > 0, index, first_rows)
    if zero_output_for_mask:
        index = torch.where(mask, index, zero_row)
    table = torch.cat([packed_out, before_first, packed_out.new_zeros(1, units)])
    if return_sequences:
        outputs = table.index_select(0, index.reshape(-1)).view(batch, time, units)
        return outputs, outputs[:, -1], [h_final, c_final]
    return None, table.index_select(0, index[:, -1]), [h_final, c_final]
