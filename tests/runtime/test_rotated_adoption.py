"""Carry slabs adopt a batch's states for a whole range of slots written rotated (a recording replayed
in batches that start mid-round): every later read, write and settle sees the right rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_helpers import F, lstm, make_batch, outputs

import streamlstm as sl
from streamlstm.runtime import segments, slabs
from streamlstm.runtime.slabs import ROTATED_ROWS, CarrySlabs, whole_rotation

SIZE = ROTATED_ROWS + 904   # slots in the slabs
SIZES = (3, 2)


def rotated(start: int, count: int, offset: int) -> np.ndarray:
    """Slots ``start .. start + count - 1`` beginning at ``start + offset``."""
    return start + (np.arange(count) + offset) % count


def reads(rng: np.random.Generator, start: int, count: int) -> list[np.ndarray]:
    """Slot lists a later batch may read: other rotations, runs inside the range, any order, beyond it."""
    return [rotated(start, count, int(rng.integers(count))), rotated(start, count, 0),
            np.arange(start + 5, start + count - 7), rotated(start, count, 3)[:ROTATED_ROWS],
            rng.permutation(np.arange(start, start + count)), rng.choice(SIZE, 50, replace=False),
            np.arange(SIZE)]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 600), st.integers(1, ROTATED_ROWS + 250), st.integers(0, 2**31))
def test_adopted_rotation_reads_like_the_written_rows(start, offset_seed, seed):
    rng = np.random.default_rng(seed)
    count = ROTATED_ROWS + 250
    offset = 1 + offset_seed % (count - 1)
    slots = rotated(start, count, offset)
    assert whole_rotation(slots) == (start, offset)
    reference = [torch.from_numpy(rng.normal(size=(SIZE, n)).astype(np.float32)) for n in SIZES]
    slabs = CarrySlabs([list(SIZES)], torch.float32, torch.device("cpu"), SIZE)
    slabs.write(0, np.arange(SIZE), [r.clone() for r in reference], None)
    new = [torch.from_numpy(rng.normal(size=(count, n)).astype(np.float32)) for n in SIZES]
    slabs.write_states(0, slots, new, None)
    for ref, value in zip(reference, new):
        ref[torch.from_numpy(slots)] = value
    for index in reads(rng, start, count):
        states, has = slabs.gather(0, index, None, True)
        assert all(torch.equal(s, r[torch.from_numpy(index)]) for s, r in zip(states, reference))
        assert bool(has.all())
        carry = rng.random(len(index)) > 0.3
        states, _ = slabs.gather(0, index, carry, False)
        keep = torch.from_numpy(carry)[:, None]
        assert all(torch.equal(s, torch.where(keep, r[torch.from_numpy(index)], 0)) for s, r in zip(states, reference))
    # The next batch rotated differently is adopted in turn; a read of every slot settles the rows.
    again = rotated(start, count, int(rng.integers(count)))
    newer = [torch.from_numpy(rng.normal(size=(count, n)).astype(np.float32)) for n in SIZES]
    slabs.write_states(0, again, newer, None)
    for ref, value in zip(reference, newer):
        ref[torch.from_numpy(again)] = value
    (got, _), = slabs.read(np.arange(SIZE))
    assert all(np.array_equal(g, r.numpy()) for g, r in zip(got, reference))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 600), st.integers(0, 2**31))
def test_adopted_rotation_read_with_the_callers_rotation(start, seed):
    """gather told the slots' whole_rotation (what a recording's batch knows) reads the adopted rows
    without looking at the slots: the same rows as without it, for every rotation (the adopted one too)."""
    rng = np.random.default_rng(seed)
    count = ROTATED_ROWS + 250
    offset = int(rng.integers(1, count))
    slabs = CarrySlabs([list(SIZES)], torch.float32, torch.device("cpu"), SIZE)
    slabs.write(0, np.arange(SIZE), [torch.zeros(SIZE, n) for n in SIZES], None)
    new = [torch.from_numpy(rng.normal(size=(count, n)).astype(np.float32)) for n in SIZES]
    slots = rotated(start, count, offset)
    slabs.write_states(0, slots, new, None)
    by_slot = [torch.zeros(SIZE, n).index_copy_(0, torch.from_numpy(slots), value) for n, value in zip(SIZES, new)]
    for turn in [offset, 1, count - 1, *rng.integers(1, count, 3)]:
        index = rotated(start, count, int(turn))
        states, has = slabs.gather(0, index, None, True, None, (start, int(turn)))
        assert all(torch.equal(s, r[torch.from_numpy(index)]) for s, r in zip(states, by_slot))
        assert bool(has.all())
    assert slabs.gather(0, slots, None, False, None, (start, offset))[0][0] is new[0]   # its own rotation: as adopted


def test_a_rotated_range_with_a_gap_is_not_adopted_and_is_copied():
    slots = np.concatenate([np.arange(3000, ROTATED_ROWS + 500), np.arange(0, 2999)])   # slot 2999 missing
    assert whole_rotation(slots) is None
    rng = np.random.default_rng(1)
    slabs = CarrySlabs([list(SIZES)], torch.float32, torch.device("cpu"), SIZE)
    before = [torch.from_numpy(rng.normal(size=(SIZE, n)).astype(np.float32)) for n in SIZES]
    slabs.write(0, np.arange(SIZE), [b.clone() for b in before], None)
    new = [torch.from_numpy(rng.normal(size=(len(slots), n)).astype(np.float32)) for n in SIZES]
    slabs.write_states(0, slots, new, None)
    for ref, value in zip(before, new):
        ref[torch.from_numpy(slots)] = value
    assert all(torch.equal(s, r) for s, r in zip(slabs.states[0], before))   # in the slabs at once
    assert whole_rotation(np.arange(ROTATED_ROWS)) is None                     # not rotated
    assert whole_rotation(rotated(0, ROTATED_ROWS - 1, 5)) is None             # too few slots


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 30), st.lists(st.integers(1, 70), min_size=2, max_size=6), st.booleans())
def test_a_replayed_recording_keeps_the_states_and_stamps_of_copied_rows(period, sizes, read_between):
    """Batches of a recording that start mid-round (rotated slot ranges: states adopted with their
    rotation, stamps deferred) leave every stream's carries, flags and idle counts as when the rows
    are copied into the slabs at once; ``read_between`` reads them after every batch too."""
    steps = -(-sum(sizes) // period) + 1
    keys = np.tile(np.arange(period), steps)
    x = np.random.default_rng(period).normal(size=(len(keys), F)).astype(np.float32)
    cuts = np.cumsum(sizes)
    cuts = [int(c) for c in cuts[cuts < len(keys)]]
    tables = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segments, "PERIODIC_ROWS", 1)   # the recording shortcuts at any size
        for rotated_rows in (2, 1 << 62):              # rotated ranges found (adopted) / never
            patch.setattr(slabs, "ROTATED_ROWS", rotated_rows)
            runtime = sl.StreamRuntime(lstm(4), key="id", features="x")
            got, seen = [], []
            for start, stop in zip([0, *cuts], [*cuts, len(keys)]):
                got.append(outputs(runtime.feed(make_batch(keys[start:stop], x[start:stop]))))
                if read_between:
                    seen.append(runtime.export_streams().drop_columns(["idle_seconds"]))
            tables.append((np.concatenate(got), seen, runtime.export_streams().drop_columns(["idle_seconds"])))
    (adopted, seen, last), (copied, seen_copied, last_copied) = tables
    np.testing.assert_array_equal(adopted, copied)
    assert last.equals(last_copied)
    assert all(a.equals(b) for a, b in zip(seen, seen_copied))


def test_a_failed_feed_after_rotated_batches_leaves_every_stream_as_it_was(monkeypatch):
    monkeypatch.setattr(segments, "PERIODIC_ROWS", 1)
    monkeypatch.setattr(slabs, "ROTATED_ROWS", 2)
    period, size = 7, 10   # batches of 10 rows of a 7-stream recording: rotated from the second on
    keys = np.tile(np.arange(period), 8)
    x = np.random.default_rng(3).normal(size=(len(keys), F)).astype(np.float32)
    runtimes = [sl.StreamRuntime(lstm(4), key="id", features="x") for _ in range(2)]
    for runtime in runtimes:
        for start in range(0, 30, size):
            runtime.feed(make_batch(keys[start:start + size], x[start:start + size]))
    failed, clean = runtimes
    bad = x[30:40].copy()
    bad[4, 1] = np.nan
    with pytest.raises(sl.StreamError, match="non-finite"):   # held rows adopted, stamps deferred: kept
        failed.feed(make_batch(keys[30:40], bad))
    for start in range(30, len(keys), size):
        batch = make_batch(keys[start:start + size], x[start:start + size])
        np.testing.assert_array_equal(outputs(failed.feed(batch)), outputs(clean.feed(batch)))
    assert failed.export_streams().drop_columns(["idle_seconds"]).equals(
        clean.export_streams().drop_columns(["idle_seconds"]))


def test_a_recording_cut_inside_a_step_hands_its_h_to_the_next_batch_as_its_last_output_rows(monkeypatch):
    """The fused cut kernel's finals come in the next batch's order: its h carries are the last rows of
    the batch's outputs themselves (no copy), which is also what they must equal (h is the output)."""
    monkeypatch.setattr(segments, "PERIODIC_ROWS", 1)
    monkeypatch.setattr(slabs, "ROTATED_ROWS", 2)
    period, size, units = 30, 100, 4   # each batch ends inside a step, and starts mid-round from the second on
    keys = np.tile(np.arange(period), 20)
    x = np.random.default_rng(5).normal(size=(len(keys), F)).astype(np.float32)
    runtime = sl.StreamRuntime(lstm(units), key="id", features="x")
    for start in range(0, 500, size):
        result = runtime.feed(make_batch(keys[start:start + size], x[start:start + size]))
        values = result.column("output").flatten()
        nxt = (start + size) % period   # the next batch starts at this key (slot: keys got slots 0, 1, ...)
        slots = (np.arange(period) + nxt) % period
        (h, _), _ = runtime.shared_store(F).gather(0, slots, None, False, None, (0, nxt) if nxt else None)
        last = values.to_numpy()[(size - period) * units:].reshape(period, units)
        np.testing.assert_array_equal(h.numpy(), last)
        if start >= 2 * size:   # the first two batches' commits put the carries in place; then adopted
            assert h.data_ptr() == values.buffers()[1].address + (size - period) * units * 4
