"""The two compute modes over a batch's segments (see :mod:`streamlstm.runtime.segments`).

Both take the gathered initial carries and return new tensors; nothing here writes the state table,
so a failure anywhere leaves every carry as it was (the runtime commits afterwards).

- **chunk**: the segments become rows of one right-padded batch ``[segments, max_len, F]`` with a
  mask (padding and the user's mask), run through the layer's validated loop
  (``RNN.run_sequences``, which takes the fused kernel for LSTMs), the stream's previous output being
  the loop's ``initial_output``.
- **step**: round ``r`` takes the r-th row of every segment long enough, runs one batched cell step
  per cell, and writes the carries back into the working tensors; it can also record every row's
  ``[h, c]``.

Masked steps follow Keras: carries unchanged, output = previous output (``h`` when the stream has had
a real step, else zeros; zeros with ``zero_output_for_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamlstm.layers.lstm_cell import LSTMCell
from streamlstm.runtime.model_plan import RecurrentStage
from streamlstm.runtime.segments import RowPlan

__all__ = ["StageResult", "run_stage_chunk", "run_stage_step", "lstm_step"]


@dataclass
class StageResult:
    outputs: torch.Tensor                    # [n, units] in processing order
    final: list[torch.Tensor]                # flat states [segments, size]
    has_output: torch.Tensor | None          # [segments] bool; None: all True (no mask in the batch)
    row_states: list[torch.Tensor] | None = None   # flat states after each row, processing order


def lstm_step(cell: LSTMCell, standard: bool, z_x: torch.Tensor, h: torch.Tensor,
              c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step from projected inputs ``z_x`` [m, 4u] (consumed: it may be overwritten)."""
    if not standard:
        h_new, (_, c_new) = cell.recurrent_step(z_x, [h, c], False)
        return h_new, c_new
    z = z_x.addmm_(h, cell.recurrent_kernel)
    u = cell.units
    z[:, :2 * u].sigmoid_()
    z[:, 2 * u:3 * u].tanh_()
    z[:, 3 * u:].sigmoid_()
    i, f, g, o = z.split(u, dim=1)
    c_new = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c_new), c_new


def _pad_index(plan: RowPlan, device: torch.device) -> torch.Tensor | None:
    if plan.uniform:
        return None
    seg_of = np.repeat(np.arange(plan.num_segments), plan.seg_len)
    pos = np.zeros(plan.num_rows, np.int64) if plan.pos_in_seg is None else plan.pos_in_seg
    return torch.as_tensor(seg_of * plan.max_len + pos, device=device)


def run_stage_chunk(stage: RecurrentStage, x: torch.Tensor, plan: RowPlan, states: list[torch.Tensor],
                    has: torch.Tensor, mask: torch.Tensor | None) -> StageResult:
    """Chunk mode for one recurrent stage; ``x`` [n, F] and ``mask`` [n] in processing order, or in
    input order when ``plan.layout`` is "time_major" (outputs then come back in input order too).

    ``has`` [segments] (whether each segment's stream has had a real step) is only read, and may be
    None, when ``mask`` is None."""
    segments, steps, features = plan.num_segments, plan.max_len, x.shape[1]
    time_major = plan.layout == "time_major"
    index = None if time_major else _pad_index(plan, x.device)
    if time_major:   # a transposed view: the kernel runs time-major inside, so nothing is copied
        x_pad = x.view(steps, segments, features).transpose(0, 1)
        pad_mask = None if mask is None else mask.view(steps, segments).T
    elif index is None:
        x_pad = x.view(segments, steps, features)
        pad_mask = None if mask is None else mask.view(segments, steps)
    else:
        x_pad = x.new_zeros(segments * steps, features).index_copy_(0, index, x).view(segments, steps, features)
        pad_mask = torch.zeros(segments * steps, dtype=torch.bool, device=x.device)
        pad_mask[index] = True if mask is None else mask
        pad_mask = pad_mask.view(segments, steps)
    initial_output = None
    if mask is not None and not stage.zero_output_for_mask:
        # Padding is at the end, so only the user's mask can put a masked step before a real one.
        initial_output = states[-2] * has[:, None]
    outputs, _, final = stage.runner.run_sequences(x_pad, pad_mask, states, training=False,
                                                   initial_output=initial_output)
    if time_major:
        out = outputs.transpose(0, 1).reshape(segments * steps, stage.units)
    else:
        flat = outputs.reshape(segments * steps, stage.units)
        out = flat if index is None else flat.index_select(0, index)
    new_has = None if mask is None else has | pad_mask.any(dim=1)
    return StageResult(out, list(final), new_has)


def _cells_step(stage: RecurrentStage, z_first: torch.Tensor, states: list[torch.Tensor],
                mask: torch.Tensor | None) -> list[torch.Tensor]:
    """One step of every cell of the stage; masked rows keep their states."""
    new_states, inputs = [], None
    for j, cell in enumerate(stage.cells):
        h, c = states[2 * j], states[2 * j + 1]
        z_x = z_first if j == 0 else cell.project_inputs(inputs, False)
        h_new, c_new = lstm_step(cell, stage.standard(cell), z_x, h, c)
        if mask is not None:
            keep = mask[:, None]
            h_new, c_new = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        new_states += [h_new, c_new]
        inputs = h_new
    return new_states


def run_stage_step(stage: RecurrentStage, x: torch.Tensor, plan: RowPlan, states: list[torch.Tensor],
                   has: torch.Tensor, mask: torch.Tensor | None, record: bool = False) -> StageResult:
    """Step mode for one recurrent stage (same arguments as :func:`run_stage_chunk`)."""
    z_all = stage.cells[0].project_inputs(x, False)   # one GEMM for every row's input projection
    if plan.max_len == 1:  # one round over every row, in processing order: no gathers
        new = _cells_step(stage, z_all, states, mask)
        out = _round_output(stage, new[-2], states[-2], has, mask)
        new_has = None if mask is None else has | mask
        return StageResult(out, new, new_has, list(new) if record else None)
    work = [s.clone() for s in states]
    has = None if has is None else has.clone()
    out = x.new_empty(plan.num_rows, stage.units)
    rows_states = [x.new_empty(plan.num_rows, s.shape[1]) for s in states] if record else None
    for r in range(plan.max_len):
        active_np = np.flatnonzero(plan.seg_len > r)
        active = torch.as_tensor(active_np, device=x.device)
        rows = torch.as_tensor(plan.seg_first[active_np] + r, device=x.device)
        current = [w.index_select(0, active) for w in work]
        m = None if mask is None else mask.index_select(0, rows)
        active_has = None if has is None else has.index_select(0, active)
        new = _cells_step(stage, z_all.index_select(0, rows), current, m)
        out.index_copy_(0, rows, _round_output(stage, new[-2], current[-2], active_has, m))
        for w, value in zip(work, new):
            w.index_copy_(0, active, value)
        if m is not None:
            has.index_copy_(0, active, active_has | m)
        if rows_states is not None:
            for buffer, value in zip(rows_states, new):
                buffer.index_copy_(0, rows, value)
    return StageResult(out, work, has, rows_states)


def _round_output(stage: RecurrentStage, h_new: torch.Tensor, h_old: torch.Tensor, has: torch.Tensor,
                  mask: torch.Tensor | None) -> torch.Tensor:
    """Outputs of one round: the new h for real steps, the previous output (or zeros) for masked ones."""
    if mask is None:
        return h_new
    if stage.zero_output_for_mask:
        return h_new * mask[:, None]
    # Masked rows kept h (h_new == h_old there); the previous output is that h only after a real step.
    return h_new * (mask | has)[:, None]
