"""A recording of ``P`` streams cut into batches: each batch's plan continues the previous batch's
(:meth:`BatchPlan.continued`: the keys compared with the expected ones, nothing looked up). The
continued plan equals the plan made from scratch; batches that only look like a continuation get the
full lookup; either way the numbers are those of one whole-sequence call per stream."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_helpers import F, feed_all, lstm, make_batch, outputs, reference

import streamlstm as sl
from streamlstm.runtime import segments, slabs
from streamlstm.runtime.keys import KeyIndex
from streamlstm.runtime.placement import Placement
from streamlstm.runtime.prepared import BatchPlan
from streamlstm.runtime.segments import plan_rows
from streamlstm.runtime.store import StreamStore

SETTINGS = settings(max_examples=40, deadline=None)
NEVER = 1 << 62   # PERIODIC_ROWS that turns the shortcuts off


@pytest.fixture(autouse=True)
def small_batches_are_recordings(monkeypatch):
    """The shortcuts start at 4,096 rows; here at any size, so that small recordings exercise them."""
    monkeypatch.setattr(segments, "PERIODIC_ROWS", 1)
    monkeypatch.setattr(slabs, "ROTATED_ROWS", 2)


def scratch_plan(store: StreamStore, keys: pa.Array) -> BatchPlan:
    """The plan of ``keys`` made the long way: the store's lookup, then plan_rows."""
    lookup = store.lookup(keys, "int")
    rows = plan_rows(lookup.group, lookup.distinct, None, None, False)
    return BatchPlan(Placement(keys, "int", lookup, rows.key_rows, lookup.slots[rows.key_rows], rows.key_released),
                     {False: rows})


def assert_same_placement(got: BatchPlan, want: BatchPlan) -> None:
    assert got.rows is want.rows   # the shared plan of the batch's length
    for name in ("key_rows", "key_slots", "released"):
        np.testing.assert_array_equal(getattr(got.placement, name), getattr(want.placement, name), err_msg=name)
    for name in ("slots", "group", "new_rows"):
        np.testing.assert_array_equal(getattr(got.placement.lookup, name), getattr(want.placement.lookup, name),
                                      err_msg=name)
    assert got.placement.lookup.distinct == want.placement.lookup.distinct
    assert got.placement.settled and want.placement.settled
    # One range of slots, rotated or not: known without the slots, the same as found from them.
    assert (got.placement.start, got.placement.rotation) == (want.placement.start, want.placement.rotation)


def held_store(head: np.ndarray, shuffled: bool = True) -> StreamStore:
    """A store holding the keys ``head`` (fed once, in a shuffled order: slots are not key order; else
    in their order: slots 0, 1, ..)."""
    runtime = sl.StreamRuntime(lstm(4), key="id", features="x")
    order = np.random.default_rng(len(head)).permutation(head) if shuffled else head
    runtime.feed(make_batch(order, np.zeros((len(order), F), np.float32)))
    return runtime.shared_store(F)


recordings = st.tuples(st.integers(1, 40), st.lists(st.integers(1, 130), min_size=2, max_size=8),
                       st.integers(0, 2**62), st.integers(0, 39))


@SETTINGS
@given(recordings, st.booleans())
def test_a_continued_plan_is_the_plan_made_from_scratch(recording, shuffled):
    period, sizes, seed, start = recording
    rng = np.random.default_rng(seed)
    head = rng.choice(1 << 40, period, replace=False)
    store = held_store(head, shuffled)
    rows = np.cumsum([start % period, *sizes])
    keys = head[np.arange(rows[-1]) % period]
    previous = None
    for lo, hi in zip(rows[:-1], rows[1:]):
        batch = pa.array(keys[lo:hi])
        want = scratch_plan(store, batch)
        got = None if previous is None else previous.continued(batch)
        if previous is not None and previous.rows.period is not None and hi - lo > period:
            assert got is not None
            assert_same_placement(got, want)
        else:   # the first batch, or one without a repeat (no period), or after one
            assert got is None
        previous = want


def near_misses(head: np.ndarray, start: int, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Batches of ``size`` rows that would continue a recording of the streams ``head`` at row ``start``
    but for one thing; none of them is the continuation (``len(head) >= 2``, ``size > len(head)``)."""
    period = len(head)
    keys = head[(start + np.arange(size)) % period]
    row = int(rng.integers(size))
    other, new, swapped = keys.copy(), keys.copy(), keys.copy()
    other[row] = head[(start + row + int(rng.integers(1, period))) % period]   # another stream's key
    new[row] = -1 - int(rng.integers(1000))   # a key not held
    a = int(rng.integers(size - 1))
    swapped[[a, a + 1]] = swapped[[a + 1, a]]   # two neighbours: always two streams
    later = head[(start + int(rng.integers(1, period)) + np.arange(size)) % period]
    return {"another stream's key": other, "a new key": new, "two rows swapped": swapped, "started later": later}


@SETTINGS
@given(st.integers(2, 30), st.integers(1, 4), st.integers(0, 60), st.integers(0, 2**62))
def test_batches_that_only_look_like_a_continuation_take_the_full_lookup(period, rounds, extra, seed):
    rng = np.random.default_rng(seed)
    head = rng.choice(1 << 40, period, replace=False)
    store = held_store(head)
    first = pa.array(head[np.arange(period * rounds + extra + 1) % period])   # a repeat: periodic
    plan = scratch_plan(store, first)
    size = period + 1 + int(rng.integers(3 * period))
    assert plan.continued(pa.array(head[(len(first) + np.arange(size)) % period])) is not None
    for name, keys in near_misses(head, len(first), size, rng).items():
        assert plan.continued(pa.array(keys)) is None, name


def test_string_keys_and_short_batches_are_not_continued():
    head = np.arange(5)
    store = held_store(head)
    plan = scratch_plan(store, pa.array(np.tile(head, 3)))
    assert plan.rows.period == 5
    assert plan.continued(pa.array(head)) is None   # 5 rows of 5 streams: no repeat, no period
    assert plan.continued(pa.array(np.tile(head, 2)[:6])) is not None
    text = pa.array([str(k) for k in np.tile(head, 2)])
    assert BatchPlan(Placement(text, "str", plan.placement.lookup, plan.rows.key_rows, plan.placement.key_slots,
                               plan.rows.key_released), plan.row_plans).continued(text) is None


def recording_with_misses(period: int, sizes: list[int], rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Keys of a recording cut at ``sizes``; some batches start late (rows skipped), repeat a key or
    bring a new stream: the next batch is no continuation, the one after may be again."""
    head = rng.choice(1 << 40, period, replace=False)
    parts, at = [], 0
    for size in sizes:
        keys = head[(at + np.arange(size)) % period]
        kind = int(rng.integers(4))
        if kind == 1:      # rows skipped: starts later in the round
            at += int(rng.integers(1, period + 1))
            keys = head[(at + np.arange(size)) % period]
        elif kind == 2:    # one row of another stream
            keys = keys.copy()
            keys[int(rng.integers(size))] = head[int(rng.integers(period))]
        elif kind == 3 and size > 1:    # a stream seen for the first time
            keys = keys.copy()
            keys[int(rng.integers(size))] = (1 << 41) + int(rng.integers(1 << 20))
        parts.append(keys)
        at += size
    return np.concatenate(parts), list(np.cumsum(sizes)[:-1])


@SETTINGS
@given(st.integers(1, 12), st.lists(st.integers(1, 40), min_size=1, max_size=7), st.integers(0, 2**62),
       st.sampled_from(["none", "mask", "reset", "both"]))
def test_a_recording_with_near_misses_gives_one_call_per_streams_numbers(period, sizes, seed, flags):
    """Masks and resets too: a batch with a reset row takes the full path, the next may continue."""
    rng = np.random.default_rng(seed)
    keys, cuts = recording_with_misses(period, sizes, rng)
    x = rng.normal(size=(len(keys), F)).astype(np.float32)
    mask = rng.random(len(keys)) > 0.3 if flags in ("mask", "both") else None
    reset = rng.random(len(keys)) < 0.05 if flags in ("reset", "both") else None
    model = lstm(4)
    runtime = sl.StreamRuntime(model, key="id", features="x", mask="m" if mask is not None else None,
                               reset="r" if reset is not None else None)
    got = feed_all(runtime, keys, x, cuts, mask=mask, reset=reset)
    np.testing.assert_allclose(got, reference(model, keys, x, mask, reset, None), rtol=1e-5, atol=1e-6)


def test_changes_between_batches_end_the_continuation():
    """A stream reset, forgotten, or restored between two batches of a recording: the continued
    plan would hold stale slots or has_output flags; the store's generation refuses it."""
    rng = np.random.default_rng(3)
    period, size = 6, 16
    keys = np.arange(period)[np.arange(8 * size) % period] + 100
    x = rng.normal(size=(len(keys), F)).astype(np.float32)
    model = lstm(4)
    runtime = sl.StreamRuntime(model, key="id", features="x")
    got = []
    expected_keys, expected_x, reset = [], [], []
    for i, lo in enumerate(range(0, len(keys), size)):
        rows = slice(lo, lo + size)
        change = ["reset", "forget", "set_state", None][i % 4] if i else None
        if change == "reset":
            runtime.reset([103])
        elif change == "forget":
            runtime.forget([101])
        elif change == "set_state":
            runtime.set_state(104, runtime.state(104))   # same numbers, has_output becomes False
        got.append(outputs(runtime.feed(make_batch(keys[rows], x[rows]))))
        starts = np.zeros(size, bool)   # where the reference starts a new sequence
        if change in ("reset", "forget"):
            starts[np.flatnonzero(keys[rows] == (103 if change == "reset" else 101))[0]] = True
        expected_keys.append(keys[rows])
        expected_x.append(x[rows])
        reset.append(starts)
    keys_all, x_all, reset_all = (np.concatenate(v) for v in (expected_keys, expected_x, reset))
    np.testing.assert_allclose(np.concatenate(got), reference(model, keys_all, x_all, None, reset_all, None),
                               rtol=1e-5, atol=1e-6)


def test_a_continued_batch_keeps_the_streams_has_output_flags():
    """A stream fully masked in the first batch has had no real step (its masked rows output zeros);
    after real steps in a continued batch, its next masked row repeats its last output."""
    period, size = 5, 12
    keys = np.arange(period)[np.arange(3 * size) % period]
    x = np.random.default_rng(4).normal(size=(len(keys), F)).astype(np.float32)
    mask = np.ones(len(keys), bool)
    mask[:size] = keys[:size] != 2                     # stream 2: every row of batch 1 masked
    mask[2 * size + np.flatnonzero(keys[2 * size:] == 2)[0]] = False   # and its first row of batch 3
    model = lstm(4)
    runtime = sl.StreamRuntime(model, key="id", features="x", mask="m")
    got = feed_all(runtime, keys, x, [size, 2 * size], mask=mask)   # batch 2 has no masked row
    np.testing.assert_allclose(got, reference(model, keys, x, mask, None, None), rtol=1e-5, atol=1e-6)


@SETTINGS
@given(st.integers(1, 40), st.integers(2, 150), st.integers(0, 2**62), st.sampled_from(["dense", "wide", "none"]))
def test_a_recordings_keys_are_looked_up_from_their_first_round(period, rows, seed, held):
    """KeyIndex.lookup of a batch recorded live (some keys held, some new) looks up one round and
    repeats it: the same slots, groups and first appearances as the lookup of every row."""
    rng = np.random.default_rng(seed)
    head = rng.permutation(period) * 3 if held != "wide" else rng.choice(1 << 50, period, replace=False)
    index = KeyIndex("int")
    if held != "none":
        kept = head[rng.random(period) < 0.6]
        index.insert_values(kept, rng.permutation(len(kept)) + 5)
    start = int(rng.integers(period))
    keys = pa.array(head[(start + np.arange(rows)) % period])
    got = index.lookup(keys)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segments, "PERIODIC_ROWS", NEVER)
        want = index.lookup(keys)
    for name in ("slots", "group", "new_rows"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.distinct == want.distinct


@pytest.mark.parametrize("flag", ["reset", "end"])
def test_a_reset_or_end_row_in_a_batch_that_continues_the_keys_is_not_ignored(flag):
    """Batch 2 has exactly the keys that continue batch 1, but one row resets (or ends) its stream: the
    row plan must cut there, so the batch takes the full path."""
    period, size = 3, 7
    keys = np.arange(period)[np.arange(3 * size) % period]
    x = np.random.default_rng(0).normal(size=(len(keys), F)).astype(np.float32)
    cut = np.zeros(len(keys), bool)
    cut[size + 3] = True   # in batch 2, neither its first nor its last row
    model = lstm(4)
    runtime = sl.StreamRuntime(model, key="id", features="x", **{flag: "r" if flag == "reset" else "e"})
    got = feed_all(runtime, keys, x, [size, 2 * size], **{flag: cut})
    reset, end = (cut, None) if flag == "reset" else (None, cut)
    np.testing.assert_allclose(got, reference(model, keys, x, None, reset, end), rtol=1e-5, atol=1e-6)
