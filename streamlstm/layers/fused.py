"""The fused LSTM kernel adapter: PyTorch's native LSTM (cuDNN on CUDA) for any Keras mask.

A masked step leaves ``[h, c]`` untouched, so a row's real steps can run back to back. Each row's real
steps are moved to the front (stable, so their order is kept) and the rows run right-padded through the
ordinary dense kernel, the fastest one PyTorch has on each device. Padding steps are made inert with one
extra input feature: it is 1 at padding steps and 0 at real ones, and its kernel row adds ``-BIG`` to
the input gate and ``+BIG`` to the forget gate. There ``sigmoid`` saturates to exactly 0 and 1, so::

    c' = 1 * c + 0 * tanh(c~) = c          (bit for bit; the gradient passes through unchanged)

while real steps see ``x @ kernel + 0 * BIG``, the same numbers as without the feature. ``h`` is not
preserved by padding steps, so the final ``h`` of each row is read from its output at its last real
step. Outputs are put back with the repeat-previous-output rule, in one ``index_select``::

    k[b, t] = number of real steps of row b up to and including t
    out[b, t] = 0                                   if zero_output_for_mask and not mask[b, t]
              = output(row b, real step k - 1)      if k > 0
              = initial_output[b] (default 0)       otherwise

Rows without a real step keep their initial states. The saturation holds while ``|x @ kernel + h @
recurrent_kernel + bias|`` stays far below ``BIG`` (1e6, or 1e4 in float16), true of any trained LSTM.

:func:`fused_lstm_cut` uses the same padding for sequences stored time-major and cut after any row (a
recording of ``B`` streams cut into batches of a fixed number of rows): the batch is the head of a
time-major ``[steps, B]`` block, only the last step is partly padding, so the kernel's own output
buffer, read time-major, holds the outputs in the rows' order (no gather, no copy).
"""

from __future__ import annotations

import torch

from streamlstm.layers.kernels import native_sequence

Result = tuple[torch.Tensor | None, torch.Tensor, list[torch.Tensor]]


def _big(dtype: torch.dtype) -> float:
    return 1e4 if dtype == torch.float16 else 1e6


def _unmasked(x, h0, c0, kernel, recurrent_kernel, bias, return_sequences) -> Result:
    out, h_n, c_n = native_sequence(x, h0, c0, kernel, recurrent_kernel, bias)
    return (out if return_sequences else None), out[:, -1], [h_n, c_n]


def fused_lstm(x: torch.Tensor, mask: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor,
               kernel: torch.Tensor, recurrent_kernel: torch.Tensor, bias: torch.Tensor | None, *,
               zero_output_for_mask: bool = False, return_sequences: bool = True,
               initial_output: torch.Tensor | None = None) -> Result:
    """Run a tanh/sigmoid LSTM over ``x`` [batch, time, features] from ``(h0, c0)`` [batch, units].

    Returns ``(outputs [batch, time, units] or None, last_output [batch, units], [h_n, c_n])`` with the
    numbers of the generic Keras loop. ``initial_output`` [batch, units] replaces the zeros repeated by
    masked steps before a row's first real step.
    """
    if mask is None:
        return _unmasked(x, h0, c0, kernel, recurrent_kernel, bias, return_sequences)
    batch, time, features = x.shape
    units = h0.shape[1]
    lengths = mask.sum(dim=1)
    shortest, steps = (int(v) for v in torch.aminmax(lengths))
    if shortest == time:  # nothing masked after all
        return _unmasked(x, h0, c0, kernel, recurrent_kernel, bias, return_sequences)
    before_first = x.new_zeros(batch, units) if initial_output is None else initial_output
    if steps == 0:  # every row fully masked: outputs repeat the initial output, states unchanged
        outputs = before_first[:, None, :].expand(batch, time, units)
        outputs = torch.zeros_like(outputs) if zero_output_for_mask else outputs
        return (outputs if return_sequences else None), outputs[:, -1], [h0, c0]
    seen = torch.cumsum(mask, dim=1)   # real steps of each row up to and including t
    compact = _compact_inputs(x, mask, seen, lengths, steps)
    out, _, c_n = native_sequence(compact, h0, c0, _with_padding_feature(kernel), recurrent_kernel, bias)
    rows = torch.arange(batch, device=x.device)
    last_real = out[rows, (lengths - 1).clamp(min=0)]
    h_n = torch.where((lengths > 0)[:, None], last_real, h0)
    outputs = _scatter_outputs(out, mask, seen, lengths, before_first, zero_output_for_mask, return_sequences)
    return (outputs if return_sequences else None), outputs[:, -1], [h_n, c_n]


def fused_lstm_cut(x: torch.Tensor, batch: int, h0: torch.Tensor, c0: torch.Tensor, kernel: torch.Tensor,
                   recurrent_kernel: torch.Tensor, bias: torch.Tensor | None, table: CutTable | None = None,
                   last_rows: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``batch`` sequences stored time-major and cut after any row, from ``(h0, c0)`` [batch, units].

    ``x`` [n, features]: row ``t * batch + b`` is step ``t`` of sequence ``b``, so with ``steps =
    ceil(n / batch)`` and ``r = n - (steps - 1) * batch`` the first ``r`` sequences have ``steps`` steps
    and the others ``steps - 1``. The missing rows of the last step are inert padding (module
    docstring): ``c`` passes them unchanged; ``h`` of the shorter sequences is their output at step
    ``steps - 2`` (their initial ``h`` when ``steps`` is 1). Costs the padding rows' compute, ``batch -
    r`` of them, and one copy of the inputs (with the indicator column), into ``table``'s buffer when
    one is given (see :class:`CutTable`).

    Returns ``(outputs [n, units], h_n, c_n)``; ``outputs`` is a view of the kernel's output buffer
    (``steps * batch`` rows, time-major), in the rows' order. ``h_n`` and ``c_n`` are in sequence order,
    or with ``last_rows`` in the order of the last ``batch`` rows: row ``i`` of them is sequence ``(n +
    i) % batch``'s, the one whose last row is row ``n - batch + i`` (every sequence has exactly one of
    the last ``batch`` rows): the order a recording's next batch, which starts at row ``n``, reads them
    in. When the cut is inside a step, ``h_n`` is then those rows of ``outputs`` (a view: the short
    sequences' rows are not copied into the kernel's ``h_n``) and ``c_n`` the kernel's rotated (one copy).
    """
    n, features = x.shape
    steps = -(-n // batch)
    short = steps * batch - n   # sequences without a last step: the last ``short`` ones
    if not short:
        out, h_n, c_n = native_sequence(x.view(steps, batch, features).transpose(0, 1), h0, c0, kernel,
                                        recurrent_kernel, bias)
        return out.transpose(0, 1).reshape(n, -1), h_n, c_n
    padded = (table or CutTable()).fill(x, steps * batch)
    out, h_n, c_n = native_sequence(padded.view(steps, batch, features + 1).transpose(0, 1), h0, c0,
                                    _with_padding_feature(kernel), recurrent_kernel, bias)
    flat = out.transpose(0, 1).reshape(steps * batch, -1)   # a view: the kernel writes time-major
    if last_rows and n >= batch:   # sequence (n + i) % batch = (batch - short + i) % batch ends at row n - batch + i
        turn = batch - short
        return flat[:n], flat[n - batch:n], torch.cat([c_n[turn:], c_n[:turn]])
    last_real = flat[n - batch:(steps - 1) * batch] if steps > 1 else h0[batch - short:]
    if h_n.requires_grad:   # a backward may have kept it: a new tensor then
        return flat[:n], torch.cat([h_n[:batch - short], last_real]), c_n
    h_n[batch - short:] = last_real   # the kernel's own tensor: only the short sequences' rows are replaced
    return flat[:n], h_n, c_n


class CutTable:
    """The padded input table of :func:`fused_lstm_cut` ``[rows, features + 1]``: ``x`` with a 0
    indicator column, then padding rows ``[0 ... 0, 1]``.

    An owner that calls the cut again and again (a runtime's stage, under its lock) keeps one: while
    autograd is off, the kernel keeps no reference to its inputs and returns new tensors, so the
    buffer is reused whenever the shape, dtype, device and inference mode repeat; then only ``x`` is
    copied in (the indicator column and padding rows are rewritten only when ``n`` changes), which
    saves the allocation and the first-touch page faults of a fresh 2 MB table every batch. With
    autograd on (a backward may keep the table) every call gets a new table, built out of place when
    ``x`` requires grad (``out=`` writes are not differentiable). Not thread-safe: one owner, one
    caller at a time.
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._real = -1   # rows of ``_buffer`` whose indicator is 0 (the rest are padding rows); -1: unknown

    def fill(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """The table for ``x`` [n, features] padded to ``rows`` rows (``rows >= n``)."""
        n, features = x.shape
        if torch.is_grad_enabled():
            if x.requires_grad:   # out of place, so that gradients reach ``x``
                padding = x.new_zeros(rows - n, features + 1)
                padding[:, features] = 1
                return torch.cat([torch.nn.functional.pad(x, (0, 1)), padding])
            return self._written(x.new_empty(rows, features + 1), x, -1)
        buffer = self._buffer
        if buffer is None or buffer.shape != (rows, features + 1) or buffer.dtype != x.dtype \
                or buffer.device != x.device or buffer.is_inference() != torch.is_inference_mode_enabled():
            self._buffer, self._real = None, -1
            buffer = x.new_empty(rows, features + 1)
        self._real, real = -1, self._real   # unknown until written (a failed copy leaves it unknown)
        self._written(buffer, x, real)
        self._buffer, self._real = buffer, n
        return buffer

    @staticmethod
    def _written(table: torch.Tensor, x: torch.Tensor, real: int) -> torch.Tensor:
        """``table`` with ``x`` in its first rows; the indicator column and padding rows too unless
        they are already right (``real`` = n): each row written once."""
        n, features = x.shape
        if real == n:
            table[:n, :features].copy_(x)
            return table
        torch.cat([x, x.new_zeros(1, 1).expand(n, 1)], 1, out=table[:n])
        table[n:] = 0
        table[n:, features] = 1
        return table


def _with_padding_feature(kernel: torch.Tensor) -> torch.Tensor:
    """``kernel`` [features, 4u] with the indicator feature's row: ``-BIG`` on the input gate, ``+BIG``
    on the forget gate, 0 elsewhere (padding steps then keep ``c`` bit for bit)."""
    units = kernel.shape[1] // 4
    inert = kernel.new_zeros(1, 4 * units)
    inert[0, :units], inert[0, units:2 * units] = -_big(kernel.dtype), _big(kernel.dtype)
    return torch.cat([kernel, inert])


def _scatter_outputs(out: torch.Tensor, mask: torch.Tensor, seen: torch.Tensor, lengths: torch.Tensor,
                     before_first: torch.Tensor,
                     zero_output_for_mask: bool, return_sequences: bool) -> torch.Tensor:
    """[batch, time (or 1), units]: each step's output after the repeat-previous-output rule.

    One gather reads the kernel's time-major output buffer in place (no copy of it); the rare steps
    before a row's first real step, and masked steps under ``zero_output_for_mask``, are patched after.
    """
    batch, steps, units = out.shape
    flat = out.transpose(0, 1).reshape(steps * batch, units)   # a view: the kernel writes time-major
    seen = seen if return_sequences else lengths[:, None]
    step_mask = mask if return_sequences else mask[:, -1:]
    rows = torch.arange(batch, device=out.device)[:, None]
    index = (seen - 1).clamp(min=0) * batch + rows
    picked = flat.index_select(0, index.reshape(-1)).view(batch, -1, units)
    before = seen == 0
    if bool(before.any()):
        picked[before] = before_first[:, None, :].expand_as(picked)[before]
    if zero_output_for_mask:
        picked = picked.masked_fill(~step_mask[..., None], 0.0)
    return picked


def _compact_inputs(x: torch.Tensor, mask: torch.Tensor, seen: torch.Tensor, lengths: torch.Tensor,
                    steps: int) -> torch.Tensor:
    """[batch, steps, features + 1]: each row's real steps first, then padding steps of zeros whose last
    feature is 1. Masked inputs never reach the kernel (they may hold NaN or garbage)."""
    batch, time, features = x.shape
    positions = torch.arange(steps, device=x.device)[None, :]
    padding = positions >= lengths[:, None]
    if torch.equal(mask[:, :steps], ~padding):   # right-padded already (the common case): keep the order
        real_first = positions
    else:   # real step t of row b goes to position seen[b, t] - 1; masked steps to a discarded column
        destination = torch.where(mask, seen - 1, steps)
        times = torch.arange(time, device=x.device).expand(batch, time)
        real_first = x.new_zeros(batch, steps + 1, dtype=torch.long).scatter_(1, destination, times)[:, :steps]
    source = torch.arange(batch, device=x.device)[:, None] * time + real_first
    source = torch.where(padding, batch * time, source)
    # One gather from the inputs with a 0 indicator column, plus one padding row [0 ... 0, 1].
    table = x.new_zeros(batch * time + 1, features + 1)
    table[:-1, :features] = x.reshape(batch * time, features)
    table[-1, -1] = 1
    return table.index_select(0, source.reshape(-1)).view(batch, steps, features + 1)
