"""Carry slabs: gathers and writes at a rotated range of slots (two slices) equal those by index."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlstm.runtime.slabs import ROTATED_ROWS, CarrySlabs, range_order, rotated_split


def slabs_with(values: list[torch.Tensor], flags: torch.Tensor) -> CarrySlabs:
    slabs = CarrySlabs([[v.shape[1] for v in values]], torch.float32, torch.device("cpu"), len(flags))
    all_slots = np.arange(len(flags))
    slabs.write(0, all_slots, values, flags, None)   # None: by index
    return slabs


@pytest.mark.parametrize(("first", "second", "count", "split"), [
    (3000, 0, ROTATED_ROWS + 10, ROTATED_ROWS + 10 - 3000),   # the batch starts at stream 3000 of the round
    (0, 5000, ROTATED_ROWS, 1000),                             # two runs in increasing order
    (200, 5000, ROTATED_ROWS + 1, 1),                          # one slot, then a run
])
def test_rotated_slots_read_and_write_like_an_index(first, second, count, split):
    slots = np.concatenate([np.arange(first, first + split), np.arange(second, second + count - split)])
    assert rotated_split(slots) == split
    rng = np.random.default_rng(count)
    size = 10_000
    values = [torch.from_numpy(rng.normal(size=(size, n)).astype(np.float32)) for n in (3, 2)]
    flags = torch.from_numpy(rng.random(size) > 0.5)
    a, b = slabs_with(values, flags), slabs_with(values, flags)
    (got, got_has), want = a.gather(0, slots, None, True), [v[torch.from_numpy(slots)] for v in values]
    assert all(torch.equal(g, w) for g, w in zip(got, want)) and torch.equal(got_has, flags[torch.from_numpy(slots)])
    new = [torch.from_numpy(rng.normal(size=(count, n)).astype(np.float32)) for n in (3, 2)]
    new_has = torch.from_numpy(rng.random(count) > 0.5)
    a.write(0, slots, new, new_has)            # rotated: two slices
    index = torch.from_numpy(slots)
    for slab, value in zip(b.states[0], new):  # the reference: by index
        slab.index_copy_(0, index, value)
    b.has_output[0].index_copy_(0, index, new_has)
    assert all(torch.equal(x, y) for x, y in zip(a.states[0], b.states[0]))
    assert torch.equal(a.has_output[0], b.has_output[0])
    a.write_states(0, slots, [v * 2 for v in new], None)   # a whole range rotated (the first case) is adopted
    a.settle()
    assert all(torch.equal(x[index], 2 * v) for x, v in zip(a.states[0], new))


@pytest.mark.parametrize("slots", [
    np.arange(ROTATED_ROWS),                                                 # one run: contiguous_start's case
    np.concatenate([np.arange(10, 20), np.arange(0, 10), np.arange(30, ROTATED_ROWS + 10)]),   # three runs
    np.arange(ROTATED_ROWS)[::-1].copy(),                                    # decreasing
    np.concatenate([np.arange(3000, 5000), np.arange(0, 2000)])[:ROTATED_ROWS - 1],   # too few slots
])
def test_other_slot_orders_are_not_rotated_ranges(slots):
    assert rotated_split(slots) is None


@pytest.mark.parametrize("carry", [[False] * 4, [True, False, False, True]])
def test_rows_that_carry_nothing_start_from_zeros(carry):
    """A first batch (no row carries) and a mixed one: zeros and has_output False where nothing is
    carried, the stored values elsewhere."""
    rng = np.random.default_rng(1)
    values = [torch.from_numpy(rng.normal(size=(8, n)).astype(np.float32)) + 5 for n in (3, 2)]
    slabs = slabs_with(values, torch.ones(8, dtype=torch.bool))
    slots, carry = np.array([6, 2, 7, 1]), np.array(carry)
    states, has = slabs.gather(0, slots, carry, True)
    for got, stored in zip(states, values):
        want = torch.where(torch.from_numpy(carry)[:, None], stored[torch.from_numpy(slots)], torch.tensor(0.0))
        assert torch.equal(got, want)
    assert has.tolist() == carry.tolist()


@settings(max_examples=200, deadline=None)
@given(slots=st.lists(st.integers(-1, 40), min_size=0, max_size=30))
def test_range_order_finds_exactly_one_range_of_distinct_slots(slots):
    """``range_order``: (first, order, rank) when the slots are first .. first + n - 1, each once; else
    None (a slot repeated, a gap, a new key's -1), whatever ``slots.min()`` it is told."""
    values = np.array(slots, np.int64)
    is_range = len(slots) > 0 and min(slots) >= 0 and sorted(slots) == list(range(min(slots), min(slots) + len(slots)))
    for found in (range_order(values), range_order(values, min(slots)) if slots else None):
        assert (found is not None) == is_range
        if found is not None:
            first, order, rank = found
            assert first == min(slots)
            assert values[order].tolist() == list(range(first, first + len(slots)))
            assert rank.tolist() == [s - first for s in slots]
