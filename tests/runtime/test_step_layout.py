"""Step mode's layout (layouts.step_layout) against a layout built row by row in plain Python, for
random live batches: keys drawn with repeats, resets, ends, both directions. The end-to-end numbers
(step == chunk == one stream at a time) are checked in test_properties.py and test_live_rounds.py."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlstm.runtime.layouts import step_layout
from streamlstm.runtime.segments import plan_rows


@st.composite
def live_batches(draw):
    n = draw(st.integers(1, 40))
    keys = np.array(draw(st.lists(st.integers(0, draw(st.integers(0, 12))), min_size=n, max_size=n)), np.int64)
    flags = st.lists(st.booleans(), min_size=n, max_size=n)
    reset = np.array(draw(flags)) if draw(st.booleans()) else None
    end = np.array(draw(flags)) if draw(st.booleans()) else None
    slots = np.array(draw(st.permutations(range(64))))[:13]   # keys live in scattered slots
    return slots[keys], len(set(keys.tolist())) == n, reset, end, draw(st.booleans())


def reference(plan) -> tuple[list[int], list[int], dict[int, int]]:
    """Segments sorted longest first (stable), rounds, and the input row of every packed position."""
    proc = np.arange(plan.num_rows) if plan.proc_rows is None else plan.proc_rows
    segs = [[int(proc[first + t]) for t in range(length)] for first, length in zip(plan.seg_first, plan.seg_len)]
    order = sorted(range(len(segs)), key=lambda s: -len(segs[s]))   # sorted() is stable
    rounds, packed = [], {}
    for r in range(max(map(len, segs))):
        running = [s for s in order if len(segs[s]) > r]
        assert running == order[:len(running)]   # every round is a prefix
        for j, s in enumerate(running):
            packed[sum(rounds) + j] = segs[s][r]
        rounds.append(len(running))
    return order, rounds, packed


@settings(max_examples=300, deadline=None)
@given(batch=live_batches())
def test_step_layout_matches_a_row_by_row_layout(batch):
    group, distinct, reset, end, backwards = batch
    plan = plan_rows(group, distinct, reset, end, backwards)
    layout = step_layout(plan)
    order, rounds, packed = reference(plan)
    n, segments = plan.num_rows, plan.num_segments
    assert layout.rounds == rounds
    assert (np.arange(segments) if layout.seg_order is None else layout.seg_order).tolist() == order
    rows = np.arange(n) if layout.rows is None else layout.rows
    assert rows.tolist() == [packed[p] for p in range(n)]
    if layout.row_pos is not None:   # the inverse: where each input row is in packed order
        assert rows[layout.row_pos].tolist() == list(range(n))
    else:
        assert layout.rows is None or np.array_equal(layout.rows, np.arange(n))
    offsets = np.concatenate([[0], np.cumsum(rounds)])
    if layout.seg_last is not None:   # packed position of each sorted segment's last row
        lengths = plan.seg_len[order]
        assert layout.seg_last.tolist() == [int(offsets[lengths[j] - 1]) + j for j in range(segments)]
    sorted_at = {s: j for j, s in enumerate(order)}
    key_final = np.arange(len(plan.key_rows)) if layout.key_final is None else layout.key_final
    assert key_final.tolist() == [sorted_at[int(s)] for s in plan.key_last_seg]


def test_step_layout_of_a_known_batch():
    # keys a b a c a b: a has 3 rows, b 2, c 1 -> rounds 3, 2, 1; sorted a, b, c
    group = np.array([7, 3, 7, 9, 7, 3])
    layout = step_layout(plan_rows(group, False, None, None, False))
    assert layout.rounds == [3, 2, 1]
    assert layout.rows.tolist() == [0, 1, 3, 2, 5, 4]   # round 0: a b c, round 1: a b, round 2: a
    assert layout.row_pos.tolist() == [0, 1, 3, 2, 5, 4]
    assert layout.seg_last.tolist() == [5, 4, 2]
    backwards = step_layout(plan_rows(group, False, None, None, True))
    assert backwards.rows.tolist() == [4, 5, 3, 2, 1, 0]   # each key's rows last to first
