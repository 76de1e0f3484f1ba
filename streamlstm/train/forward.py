"""The training forward pass: every stream of a batch from its carries, with gradients.

Each recurrent stage runs the batch's segments (see :mod:`streamlstm.runtime.segments`) as rows of one
right-padded batch ``[segments, max_len, F]`` through the layer's own loop
(:meth:`RNN.run_sequences <streamlstm.RNN.run_sequences>`, ``training=True``), starting from the
carries gathered from the :class:`~streamlstm.runtime.store.StreamStore` (zeros after a reset or for a
new stream), with a mask for the padding and the user's mask. That is Keras's stateful call on the same
window, so weights trained here equal Keras's. Per-step modules (Dense, Dropout, ...) run on the rows.

A layer's ``activity_regularizer`` (Keras adds it to the training loss) is applied to the stage's
outputs of the batch's rows, and divided by the number of sequences run (Keras's batch size:
``activity_loss / tf.shape(output)[0]``); padding steps are not outputs and are not penalized, masked
steps are (their output repeats the previous one, as in Keras's output tensor). In the Keras recipe
(one window of K rows per stream) this is Keras's penalty exactly: ``reg(outputs [N, K, U]) / N``.

Masked steps follow the runtime's rule: carries unchanged, output = the stream's previous output (its
``h`` once it has had a real step, even in an earlier batch; zeros before). Nothing here writes the
store: the trainer commits the detached finals after the optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamlstm.runtime.model_plan import MaskingStage, ModelPlan, RecurrentStage
from streamlstm.runtime.segments import RowPlan
from streamlstm.runtime.store import StreamStore

__all__ = ["TrainOutcome", "forward"]


@dataclass
class TrainOutcome:
    outputs: torch.Tensor                   # [n, out_dim] in input row order, with gradients
    finals: list[list[torch.Tensor]]        # per stage, flat states per key [keys, size], detached
    has_output: list[torch.Tensor]          # per stage [keys] bool
    penalties: list[torch.Tensor]           # activity penalties (scalars, with gradients)


def _pad(rows: RowPlan, h: torch.Tensor, mask: torch.Tensor | None):
    """The rows as a padded batch: ``(x_pad [S, T, F], pad_mask [S, T] or None when every step is
    real, unpad)``, where ``unpad(outputs [S, T, U])`` gives the outputs [n, U] in input row order.
    Equal segments stored stream by stream ("identity") or step by step ("time_major") are views."""
    segments, steps = rows.num_segments, rows.max_len
    if rows.uniform and rows.layout == "identity":
        return (h.view(segments, steps, -1), None if mask is None else mask.view(segments, steps),
                lambda out: out.reshape(segments * steps, -1))
    if rows.uniform and rows.layout == "time_major":
        return (h.view(steps, segments, -1).transpose(0, 1), None if mask is None else mask.view(steps, segments).T,
                lambda out: out.transpose(0, 1).reshape(segments * steps, -1))
    seg_of = np.repeat(np.arange(segments), rows.seg_len)
    pos = np.zeros(rows.num_rows, np.int64) if rows.pos_in_seg is None else rows.pos_in_seg
    place = torch.as_tensor(seg_of * steps + pos, device=h.device)   # per processing position
    order = None if rows.proc_rows is None else torch.as_tensor(rows.proc_rows, device=h.device)
    h_p = h if order is None else h.index_select(0, order)
    m_p = mask if mask is None or order is None else mask.index_select(0, order)
    x_pad = h.new_zeros(segments * steps, h.shape[1]).index_copy(0, place, h_p).view(segments, steps, -1)
    pad_mask = torch.zeros(segments * steps, dtype=torch.bool, device=h.device)
    pad_mask[place] = True if m_p is None else m_p

    def unpad(out: torch.Tensor) -> torch.Tensor:
        out_p = out.reshape(segments * steps, -1).index_select(0, place)
        return out_p if order is None else torch.zeros_like(out_p).index_copy(0, order, out_p)

    return x_pad, pad_mask.view(segments, steps), unpad


def _run_stage(stage: RecurrentStage, number: int, store: StreamStore, rows: RowPlan, key_slots: np.ndarray,
               h: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One recurrent stage: (outputs [n, units] in input order, finals per key, has_output per key)."""
    seg_slots = key_slots[rows.seg_key]
    carry = rows.seg_carry & (seg_slots >= 0)
    states, has = store.gather(number, seg_slots, None if carry.all() else carry, True)
    x_pad, pad_mask, unpad = _pad(rows, h, mask)
    # No padding and no masked step: the unmasked (fused) path.
    initial_output = None if stage.zero_output_for_mask or pad_mask is None else states[-2] * has[:, None]
    outputs, _, final = stage.runner.run_sequences(x_pad, pad_mask, states, training=True,
                                                   initial_output=initial_output)
    new_has = has | (True if pad_mask is None else pad_mask.any(dim=1))
    last = torch.as_tensor(rows.key_last_seg, device=h.device)
    return unpad(outputs), [f.detach().index_select(0, last) for f in final], new_has.index_select(0, last)


def forward(plan: ModelPlan, store: StreamStore, row_plans: dict[bool, RowPlan], key_slots: np.ndarray,
            x: torch.Tensor, mask: torch.Tensor | None) -> TrainOutcome:
    """Run the batch in training mode; ``row_plans[go_backwards]`` lays out the rows for the layers of
    that direction, ``key_slots`` [keys] holds each key's slot or -1 for a new key."""
    h = x
    finals, has_out, penalties = [], [], []
    for stage in plan.stages:
        if isinstance(stage, MaskingStage):
            real = stage.compute_mask(h)
            mask = real if mask is None else real & mask
        if not isinstance(stage, RecurrentStage):
            h = stage(h)
            continue
        rows = row_plans[stage.go_backwards]
        h, stage_finals, stage_has = _run_stage(stage, len(finals), store, rows, key_slots, h, mask)
        finals.append(stage_finals)
        has_out.append(stage_has)
        regularizer = stage.layer.activity_regularizer
        if regularizer is not None:
            penalties.append(regularizer(h) / rows.num_segments)
    return TrainOutcome(h, finals, has_out, penalties)
