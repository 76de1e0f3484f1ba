"""How a planned batch's rows run (see :mod:`streamlstm.runtime.segments` for the plan): step mode's
rounds (:class:`StepLayout`) and chunk mode without padding (:class:`RaggedLayout`). Each is derived
once per :class:`~streamlstm.runtime.segments.RowPlan` and kept in it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from streamlstm.runtime.segments import RowPlan, arange

__all__ = ["RaggedLayout", "StepLayout", "ragged_layout", "step_layout"]

RAGGED_ROUNDS = 2   # at most this many rows per stream beyond the shortest stream's take step mode


@dataclass
class StepLayout:
    """Step mode's order: segments sorted by length (longest first, stable), so that the segments
    still running at round ``r`` are the first ``rounds[r]`` ones, and every round reads and writes
    prefixes (slices, no gathers). Packed position ``offset(r) + j`` holds row ``r`` of sorted segment
    ``j`` (the layout of a packed sequence)."""

    seg_order: np.ndarray | None    # [S] segment at each sorted position; None = identity
    rounds: list[int]               # segments still running at each round (non-increasing)
    rows: np.ndarray | None         # [n] input row at each packed position; None = identity
    key_final: np.ndarray | None    # [K] sorted position of each key's last segment; None = identity
    seg_last: np.ndarray | None = None   # [S] packed position of each sorted segment's last row (None: one round)
    row_pos: np.ndarray | None = None    # [n] packed position of each input row (the inverse of ``rows``)


def _identity_or(values: np.ndarray, size: int) -> np.ndarray | None:
    """None when ``values`` is ``0 .. size - 1`` (a permutation that changes nothing), else ``values``."""
    if len(values) != size or (size and values[0] != 0):   # most permutations fail at once
        return values
    return None if (values == arange(size)).all() else values


def step_layout(plan: RowPlan) -> StepLayout:
    """The :class:`StepLayout` of ``plan``, computed once per plan (plans of repeated batches are
    cached by the runtime).

    Sorted position of segment ``s``: ``rank[s]`` (longest first, stable); ``rounds[r]`` = number of
    segments longer than ``r`` (suffix sums of the length histogram); the packed position of row
    ``pos`` of segment ``s`` is ``offset[pos] + rank[s]`` with ``offset`` the exclusive prefix sums of
    ``rounds``. About fifteen numpy calls on short arrays (each costs more than its work there)."""
    cached = plan.__dict__.get("_step_layout")
    if cached is not None:
        return cached
    segments, n, steps = plan.num_segments, plan.num_rows, plan.max_len
    if steps == 1:   # one round over every segment, in processing order
        row_pos = None
        if plan.proc_rows is not None:
            row_pos = np.empty(n, np.int64)
            row_pos[plan.proc_rows] = arange(n)
        layout = StepLayout(None, [segments], plan.proc_rows, _identity_or(plan.key_last_seg, segments),
                            row_pos=row_pos)
    else:
        # Sorted ascending by "shorter than the longest" = longest first (a radix sort on small ints).
        order = np.subtract(steps, plan.seg_len, dtype=np.uint16 if steps < 1 << 16 else np.int64,
                            casting="unsafe").argsort(kind="stable")
        # A few entries (one per round): Python sums cost less than numpy calls on them.
        longer = list(itertools.accumulate(np.bincount(plan.seg_len, minlength=steps + 1).tolist()[:0:-1]))
        rounds = longer[::-1]
        offsets = np.array([0, *itertools.accumulate(rounds[:-1])])
        rank = np.empty(segments, np.int64)
        rank[order] = arange(segments)
        seg_of = plan.__dict__.get("_seg_of")
        if seg_of is None:
            seg_of = np.repeat(arange(segments), plan.seg_len)
        packed = rank[seg_of]
        if plan.pos_in_seg is not None:
            packed += offsets[plan.pos_in_seg]
        rows = np.empty(n, np.int64)
        if plan.proc_rows is None:
            rows[packed] = arange(n)
            row_pos = packed
        else:
            rows[packed] = plan.proc_rows
            row_pos = np.empty(n, np.int64)
            row_pos[plan.proc_rows] = packed
        seg_last = offsets[plan.seg_len[order] - 1]   # a segment of length L ends in round L - 1
        seg_last += arange(segments)
        one_per_key = segments == len(plan.key_rows)   # then key k's segment is segment k
        rows = _identity_or(rows, n)
        layout = StepLayout(_identity_or(order, segments), rounds, rows,
                            _identity_or(rank if one_per_key else rank[plan.key_last_seg], segments), seg_last,
                            None if rows is None else row_pos)
    plan.__dict__["_step_layout"] = layout
    return layout


@dataclass
class RaggedLayout:
    """Chunk mode without padding for segments of nearly equal length (a recording cut into batches of
    a fixed number of rows gives some streams one row more than others): every segment's first
    ``steps`` rows run as one time-major sequence, the few rows beyond run in step rounds.

    ``prefix_rows[t * S + s]`` is the input row of step ``t`` of segment ``s`` (None: ``0 .. steps * S
    - 1``, the prefix is the head of the batch); ``tail`` holds per extra round the segments still
    running and their input rows. ``time_major``: the batch is all of it in order, row ``t * S + s``
    being step ``t`` of segment ``s`` for every row (the prefix is the head, one tail round of
    segments ``0 .. r - 1`` on the last rows): a time-major block cut after its last row, which
    :func:`~streamlstm.layers.fused.fused_lstm_cut` runs in one kernel call."""

    steps: int
    prefix_rows: np.ndarray | None
    tail: list[tuple[np.ndarray, np.ndarray]]
    time_major: bool = False


def ragged_layout(plan: RowPlan) -> RaggedLayout | None:
    """The :class:`RaggedLayout` of ``plan`` when its segments' lengths differ by at most
    ``RAGGED_ROUNDS`` (and are not all equal), else None; computed once per plan."""
    if "_ragged_layout" in plan.__dict__:
        return plan.__dict__["_ragged_layout"]
    layout = None
    shortest, longest = (int(plan.seg_len.min()), int(plan.seg_len.max())) if len(plan.seg_len) else (0, 0)
    if shortest >= 1 and 0 < longest - shortest <= RAGGED_ROUNDS:
        segments, n = plan.num_segments, plan.num_rows
        seg_of = plan.__dict__.get("_seg_of")
        if seg_of is None:
            seg_of = np.repeat(arange(segments), plan.seg_len)
        pos = np.zeros(n, np.int64) if plan.pos_in_seg is None else plan.pos_in_seg
        rows = arange(n) if plan.proc_rows is None else plan.proc_rows
        head = pos < shortest
        prefix = np.empty(shortest * segments, np.int64)
        prefix[pos[head] * segments + seg_of[head]] = rows[head]
        tail = []
        for step in range(shortest, longest):
            at = np.flatnonzero(pos == step)
            tail.append((seg_of[at], rows[at]))
        prefix_rows = _identity_or(prefix, len(prefix))
        time_major = (prefix_rows is None and len(tail) == 1 and _identity_or(tail[0][0], len(tail[0][0])) is None
                      and (tail[0][1] == arange(n)[len(prefix):]).all())
        layout = RaggedLayout(shortest, prefix_rows, tail, bool(time_major))
    plan.__dict__["_ragged_layout"] = layout
    return layout
