"""The two compute modes over a batch's segments (see :mod:`streamlstm.runtime.segments`).

Both take the gathered initial carries and return new tensors; nothing here writes the state table,
so a failure anywhere leaves every carry as it was (the runtime commits afterwards).

- **chunk**: the segments become rows of one right-padded batch ``[segments, max_len, F]`` with a
  mask (padding and the user's mask), run through the layer's validated loop
  (``RNN.run_sequences``, which takes the fused kernel for LSTMs), the stream's previous output being
  the loop's ``initial_output``.
- **step**: round ``r`` takes the r-th row of every segment long enough (segments sorted longest
  first, so these are a prefix), runs one batched cell step per cell (:meth:`LSTMCell.step`); it can
  also record every row's ``[h, c]``. Tiny batches take it whatever the mode (see the runtime).

Masked steps follow Keras: carries unchanged, output = previous output (``h`` when the stream has had
a real step, else zeros; zeros with ``zero_output_for_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamlstm.layers.fused import fused_lstm_cut
from streamlstm.runtime.layouts import RaggedLayout, StepLayout
from streamlstm.runtime.model_plan import RecurrentStage
from streamlstm.runtime.segments import RowPlan
from streamlstm.runtime.slabs import contiguous_start, index_tensor

__all__ = ["StageResult", "cells_step", "run_stage_chunk", "run_stage_ragged", "run_stage_step"]


@dataclass
class StageResult:
    outputs: torch.Tensor                    # [n, units] in processing order
    final: list[torch.Tensor]                # flat states [segments, size]
    has_output: torch.Tensor | None          # [segments] bool; None: all True (no mask in the batch)
    row_states: list[torch.Tensor] | None = None   # flat states after each row, processing order
    order: np.ndarray | None = None          # final i is segment order[i]'s (None: segment i's)


def _pad_index(plan: RowPlan, device: torch.device) -> torch.Tensor | None:
    if plan.uniform:
        return None
    seg_of = np.repeat(np.arange(plan.num_segments), plan.seg_len)
    pos = np.zeros(plan.num_rows, np.int64) if plan.pos_in_seg is None else plan.pos_in_seg
    return index_tensor(seg_of * plan.max_len + pos, device)


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


def _rows(values: np.ndarray, device: torch.device) -> torch.Tensor | slice:
    """An index for ``values``: a slice when they are consecutive (a view instead of a gather)."""
    start = contiguous_start(values)
    return index_tensor(values, device) if start is None else slice(start, start + len(values))


def _take(values: torch.Tensor, index: torch.Tensor | slice) -> torch.Tensor:
    return values[index] if isinstance(index, slice) else values.index_select(0, index)


def _put(target: torch.Tensor, index: torch.Tensor | slice, values: torch.Tensor) -> None:
    if isinstance(index, slice):
        target[index] = values
    else:
        target.index_copy_(0, index, values)


def run_stage_ragged(stage: RecurrentStage, x: torch.Tensor, layout: RaggedLayout,
                     states: list[torch.Tensor], any_order: bool = False) -> StageResult:
    """Chunk mode without padding (see :class:`~streamlstm.runtime.layouts.RaggedLayout`): ``x`` [n, F]
    in input order, no mask; outputs in input order, final states per segment.

    The prefix (every segment's first ``steps`` rows) runs as one time-major sequence through the
    layer's sequence kernel; each tail round runs the segments still going one cell step further. A
    segment's final states are those of the last round it ran in; the rounds' finals replace the rows
    of their segments out of place, so nothing the kernel returned or the slabs hold is written.

    The tail takes cell steps, not the sequence kernel at length 1: on the CPU PyTorch's sequence
    kernel is oneDNN's, which builds a primitive for every new batch size (about 1.5 ms, and tails
    vary in size from batch to batch) and is no faster than a cell step at one step (measured on
    300-5,536 rows).

    A ``time_major`` layout of a fused LSTM layer instead runs in one kernel call
    (:func:`~streamlstm.layers.fused.fused_lstm_cut`): the missing rows of the last step are inert
    padding, ``S - r`` rows of compute, and the outputs are the kernel's own buffer. That saves the
    tail's cell step (about 1.5x the kernel's cost per row on the CPU), the copy of the outputs into
    place and the finals' copy (measured about as fast on one thread, faster on two). With ``any_order``
    its final states may come in the order of the batch's last rows (``order``; see
    ``fused_lstm_cut(last_rows=True)``), the order a recording's next batch reads them in: that saves
    the copy of the short segments' ``h`` and the next batch's copy of ``h`` into its order."""
    segments, steps = states[0].shape[0], layout.steps
    if layout.time_major and stage.fused:
        cell = stage.cells[0]
        out, h, c = fused_lstm_cut(x, segments, states[0], states[1], cell.kernel, cell.recurrent_kernel, cell.bias,
                                   stage.cut_table, any_order)
        n = x.shape[0]
        turn = n % segments if any_order and n >= segments else 0   # final i is segment (n + i) % segments's
        return StageResult(out, [h, c], None, order=(np.arange(segments) + turn) % segments if turn else None)
    head = None if layout.prefix_rows is None else torch.as_tensor(layout.prefix_rows, device=x.device)
    prefix = x[:steps * segments] if head is None else x.index_select(0, head)
    x_pad = prefix.view(steps, segments, x.shape[1]).transpose(0, 1)   # time-major: the kernel's own layout
    outputs, _, final = stage.runner.run_sequences(x_pad, None, states, training=False)
    out = x.new_empty(x.shape[0], stage.units)
    if head is None:   # one strided copy into place (a reshape first would copy twice)
        out[:steps * segments].view(steps, segments, stage.units).copy_(outputs.transpose(0, 1))
    else:
        out.index_copy_(0, head, outputs.transpose(0, 1).reshape(steps * segments, stage.units))
    for seg_ids, row_ids in layout.tail:
        segs, rows = _rows(seg_ids, x.device), _rows(row_ids, x.device)
        new = cells_step(stage, _take(x, rows), [_take(f, segs) for f in final], None)
        _put(out, rows, new[-2])
        final = [_replaced(f, segs, value) for f, value in zip(final, new)]
    return StageResult(out, list(final), None)


def _replaced(values: torch.Tensor, index: torch.Tensor | slice, rows: torch.Tensor) -> torch.Tensor:
    """A copy of ``values`` whose rows at ``index`` are ``rows`` (one pass; ``values`` is only read)."""
    if isinstance(index, slice):
        return torch.cat([values[:index.start], rows, values[index.stop:]])
    return values.index_copy(0, index, rows)


def cells_step(stage: RecurrentStage, x: torch.Tensor, states: list[torch.Tensor],
                mask: torch.Tensor | None) -> list[torch.Tensor]:
    """One step of every cell of the stage (:meth:`LSTMCell.step`); masked rows keep their states."""
    new_states, inputs = [], x
    for j, cell in enumerate(stage.cells):
        h, c = states[2 * j], states[2 * j + 1]
        h_new, c_new = cell.step(inputs, h, c)
        if mask is not None:
            keep = mask[:, None]
            h_new, c_new = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        new_states += [h_new, c_new]
        inputs = h_new
    return new_states


def run_stage_step(stage: RecurrentStage, x: torch.Tensor, layout: StepLayout, states: list[torch.Tensor],
                   has: torch.Tensor | None, mask: torch.Tensor | None, record: bool = False) -> StageResult:
    """Step mode for one recurrent stage: ``x`` [n, F] and ``mask`` [n] in packed order, ``states`` and
    ``has`` per segment in sorted order (see :class:`~streamlstm.runtime.layouts.StepLayout`).

    Round ``r`` runs the first ``rounds[r]`` segments one step: every read and write is a prefix of
    the previous round's rows, so a round costs one kernel call per cell (:meth:`LSTMCell.step`). The
    rounds' states are joined in packed order, a segment's final states are its last row's. Returns
    outputs (and recorded states) in packed order and the final states in sorted segment order."""
    rounds = layout.rounds
    if len(rounds) == 1:
        new = cells_step(stage, x, states, mask)
        out = _round_output(stage, new[-2], has, mask)
        return StageResult(out, new, None if mask is None else has | mask, list(new) if record else None)
    # Views made by one call each (slicing tensors from Python costs microseconds per slice).
    x_of = x.split_with_sizes(rounds)
    m_of = None if mask is None else mask.split_with_sizes(rounds)
    work = states
    pieces: list[list[torch.Tensor]] = [[] for _ in states]   # per state, each round's rows
    outputs, has_pieces = pieces[-2], []
    if mask is not None:
        outputs = []
    for r, count in enumerate(rounds):
        inputs, m, new = x_of[r], None if m_of is None else m_of[r], []
        for j, cell in enumerate(stage.cells):
            h, c = work[2 * j], work[2 * j + 1]
            if h.shape[0] != count:
                h, c = h[:count], c[:count]
            h_new, c_new = cell.step(inputs, h, c)
            if m is not None:   # masked rows keep their states
                keep = m[:, None]
                h_new, c_new = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
            new += [h_new, c_new]
            inputs = h_new
        if m is not None:
            current_has = has[:count]
            outputs.append(_round_output(stage, inputs, current_has, m))
            has = current_has | m
            has_pieces.append(has)
        for piece, value in zip(pieces, new):
            piece.append(value)
        work = new
    rows_of = [torch.cat(piece) for piece in pieces]   # every row's states, packed order
    last = index_tensor(layout.seg_last, x.device)
    final_has = None if mask is None else torch.cat(has_pieces).index_select(0, last)
    return StageResult(rows_of[-2] if mask is None else torch.cat(outputs),
                       [r.index_select(0, last) for r in rows_of], final_has, rows_of if record else None)


def _round_output(stage: RecurrentStage, h_new: torch.Tensor, has: torch.Tensor,
                  mask: torch.Tensor | None) -> torch.Tensor:
    """Outputs of one round: the new h for real steps, the previous output (or zeros) for masked ones."""
    if mask is None:
        return h_new
    if stage.zero_output_for_mask:
        return h_new * mask[:, None]
    # Masked rows kept their h; the previous output is that h only after a real step.
    return h_new * (mask | has)[:, None]
