"""One batch through the model: gather carries, run every stage, then commit (a separate step).

:func:`execute` reads the state table and returns new tensors only; :func:`commit` is the single place
that writes carries, after everything else succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamlstm.runtime.compute import run_stage_chunk, run_stage_step
from streamlstm.runtime.model_plan import MaskingStage, ModelPlan, RecurrentStage
from streamlstm.runtime.segments import RowPlan
from streamlstm.runtime.state_table import StateTable

__all__ = ["Outcome", "commit", "execute"]


@dataclass
class Outcome:
    outputs: torch.Tensor                      # [n, out_dim], input row order
    finals: list[list[torch.Tensor]]           # per stage, flat states [keys, size]
    has_output: list[torch.Tensor | None]      # per stage [keys]; None = all True
    row_states: list[torch.Tensor] | None      # every cell's h and c after each row, input row order


def _index(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long, device=device)


def _unpermute(values: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    if perm is None:
        return values
    return torch.empty_like(values).index_copy_(0, perm, values)


def contiguous_start(slots: np.ndarray) -> int | None:
    """``slots[0]`` when ``slots`` is exactly ``slots[0], slots[0] + 1, ...``: gather and commit are then
    slices (a fleet fed in the same order every batch), else None."""
    n = len(slots)
    if n == 0 or slots[0] < 0 or slots[-1] - slots[0] != n - 1:
        return None
    return int(slots[0]) if n == 1 or bool((np.diff(slots) == 1).all()) else None


def _gather(table: StateTable, number: int, rows: RowPlan, key_slots: np.ndarray, device: torch.device,
            need_has: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Initial carries per segment: the stored ones where a segment continues its stream, else zeros.

    The results may be views of the slabs: compute never writes its inputs in place."""
    seg_slots = key_slots[rows.seg_key] if rows.proc_rows is not None else key_slots
    carry = rows.seg_carry & (seg_slots >= 0)
    start = contiguous_start(seg_slots) if rows.proc_rows is None and carry.all() else None
    if start is not None:
        n = len(seg_slots)
        has = table.has_output[number].narrow(0, start, n) if need_has else None
        return [slab.narrow(0, start, n) for slab in table.slabs[number]], has
    gather = _index(np.where(carry, seg_slots, 0), device)
    states = [slab.index_select(0, gather) for slab in table.slabs[number]]
    has = table.has_output[number].index_select(0, gather) if need_has else None
    if not carry.all():
        fill = torch.as_tensor(~carry, device=device)[:, None]
        states = [s.masked_fill_(fill, 0) for s in states]
        has = None if has is None else has & ~fill[:, 0]
    return states, has


def _masking(stage: MaskingStage, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask column (None: all real) combined with a Masking stage's rule on ``h``."""
    real = stage.compute_mask(h)
    if mask is not None:
        real = real & mask
    # None keeps the unmasked fast code; skipped on accelerators, where the check would synchronize.
    return None if real.device.type == "cpu" and bool(real.all()) else real


def execute(plan: ModelPlan, table: StateTable, row_plans: dict[bool, RowPlan], key_slots: np.ndarray,
            x: torch.Tensor, mask: torch.Tensor | None, mode: str, record: bool = False) -> Outcome:
    """Run the batch; ``row_plans[go_backwards]`` lays out the rows for the layers of that direction
    and ``key_slots`` [keys] holds each key's slot or -1 for a new key."""
    device = x.device
    h = x
    finals, has_out, row_states = [], [], []
    for stage in plan.stages:
        if isinstance(stage, MaskingStage):
            mask = _masking(stage, h, mask)
        if not isinstance(stage, RecurrentStage):
            h = stage(h)
            continue
        rows = row_plans[stage.go_backwards]
        states, has = _gather(table, len(finals), rows, key_slots, device, mask is not None)
        step = mode == "step" or record
        keep_order = rows.layout == "identity" or (rows.layout == "time_major" and not step)
        perm = None if keep_order else _index(rows.proc_rows, device)
        h_p = h if perm is None else h.index_select(0, perm)
        m_p = mask if perm is None or mask is None else mask.index_select(0, perm)
        if step:
            result = run_stage_step(stage, h_p, rows, states, has, m_p, record=record)
        else:
            result = run_stage_chunk(stage, h_p, rows, states, has, m_p)
        h = _unpermute(result.outputs, perm)
        if rows.proc_rows is None:   # one segment per key, in key order
            finals.append(result.final)
            has_out.append(result.has_output)
        else:
            last = _index(rows.key_last_seg, device)
            finals.append([f.index_select(0, last) for f in result.final])
            has = result.has_output
            has_out.append(None if has is None else has.index_select(0, last))
        if record:
            row_states += [_unpermute(s, perm) for s in result.row_states]
    return Outcome(h, finals, has_out, row_states if record else None)


def commit(table: StateTable, outcome: Outcome, key_slots: np.ndarray, released: np.ndarray) -> np.ndarray:
    """Write the final carries of every kept key; returns the slots per key (-1 where released).

    New keys get slots here (the table may grow); released keys that held a slot are freed by the
    caller, together with their key map entries.
    """
    keep = ~released
    slots = key_slots.copy()
    new = keep & (key_slots < 0)
    if new.any():
        slots[new] = table.allocate(int(new.sum()))
    slots[released] = -1
    all_kept = bool(keep.all())
    start = contiguous_start(slots) if all_kept else None
    target = None if start is not None else _index(slots if all_kept else slots[keep], table.device)
    chosen = None if all_kept else _index(np.flatnonzero(keep), table.device)

    def put(destination: torch.Tensor, values: torch.Tensor | None) -> None:
        if values is None:   # has_output: every kept stream had a real step
            if start is not None:
                destination.narrow(0, start, len(slots)).fill_(True)
            else:
                destination.index_fill_(0, target, True)
            return
        values = values if chosen is None else values.index_select(0, chosen)
        if start is not None:
            destination.narrow(0, start, len(slots)).copy_(values)
        else:
            destination.index_copy_(0, target, values)

    with torch.no_grad():
        for stage, finals in enumerate(outcome.finals):
            for slab, final in zip(table.slabs[stage], finals):
                put(slab, final)
            put(table.has_output[stage], outcome.has_output[stage])
    return slots
