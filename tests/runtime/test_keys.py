"""The vectorized key index: integer, string and dictionary keys, slices, hash collisions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_helpers import F, feed_all, lstm, reference

from streamlstm.runtime.keys import KeyIndex


def test_int_lookup_insert_remove():
    index = KeyIndex("int")
    first = index.lookup(pa.array([5, 3, 5, 9]))
    assert first.slots.tolist() == [-1, -1, -1, -1] and not first.distinct
    assert first.group[0] == first.group[2] and len(set(first.group.tolist())) == 3
    assert first.new_rows.tolist() == [0, 1, 3]                    # one row per new key, first appearance
    index.insert(pa.array([5, 3, 5, 9]), first.new_rows, np.array([10, 11, 12]), first)
    again = index.lookup(pa.array([9, 5, 7]))
    assert again.slots.tolist() == [12, 10, -1] and again.distinct
    index.remove(np.array([10]))
    assert index.lookup(pa.array([5])).slots.tolist() == [-1] and len(index) == 2


def test_string_hash_handles_slices_empty_strings_and_dictionaries():
    index = KeyIndex("str")
    keys = pa.array(["", "a", "ab", "ba", "a\x00", "long-" * 30])
    first = index.lookup(keys)
    assert first.distinct
    index.insert(keys, first.new_rows, np.arange(6), first)
    sliced = keys.slice(2, 3)
    assert index.lookup(sliced).slots.tolist() == [2, 3, 4]
    assert index.lookup(pa.array(["ba", "", "zz"]).dictionary_encode()).slots.tolist() == [3, 0, -1]
    assert index.lookup(pa.array(["ab"], pa.large_string())).slots.tolist() == [2]


def test_hash_collisions_fall_back_to_an_exact_map(rng, monkeypatch):
    from streamlstm.runtime import keys as keys_module

    monkeypatch.setattr(keys_module, "stable_hash",
                        lambda strings: np.zeros(len(strings), np.uint64))   # everything collides
    layer = lstm(3)
    keys = rng.integers(0, 6, 80)
    x = rng.normal(size=(80, F)).astype(np.float32)
    import streamlstm as sl
    rt = sl.StreamRuntime(layer, key="id", features="x")
    got = feed_all(rt, keys, x, [20, 21, 50], key_type="str")
    assert all(f"stream-{k}" in rt for k in np.unique(keys))   # found by the exact map, not the hash
    np.testing.assert_allclose(got, reference(layer, keys, x, None, None, None), rtol=1e-5, atol=1e-6)
    assert sorted(rt.keys()) == sorted(f"stream-{k}" for k in np.unique(keys))


def test_int_lookups_agree_with_a_dict_whatever_the_key_range(rng):
    """Small non-negative keys are answered by a dense table, others by the sorted arrays; the index
    switches between them as keys arrive and leave (and slots move in a compaction): every lookup
    must match a plain dict."""
    index, model = KeyIndex("int"), {}
    small, huge, negative, wide = (0, 50), (10**12, 10**12 + 40), (-20, 30), (0, 200_000)
    ranges = [small] * 4 + [huge] + [small] * 3 + [negative] + [small] * 3 + [wide] + [small] * 3
    for round_, (low, high) in enumerate(ranges):
        keys = pa.array(rng.integers(low, high, 40))
        found = index.lookup(keys)
        assert found.slots.tolist() == [model.get(k, -1) for k in keys.to_pylist()], f"round {round_}"
        assert found.distinct == (len(set(keys.to_pylist())) == len(keys))
        new_keys = [keys[int(r)].as_py() for r in found.new_rows]
        free = sorted(set(range(len(model) + len(new_keys))) - set(model.values()))[:len(new_keys)]
        index.insert(keys, found.new_rows, np.array(free, np.int64), found)
        model.update(zip(new_keys, free))
        if round_ % 2:   # streams leave: a third at random, and every key outside [0, 1000)
            gone = {s for k, s in model.items() if not 0 <= k < 1000}
            gone |= set(rng.choice(sorted(model.values()), size=len(model) // 3, replace=False).tolist())
            index.remove(np.array(sorted(gone), np.int64))
            model = {k: s for k, s in model.items() if s not in gone}
        if round_ % 4 == 3:   # a compaction renumbers the slots
            order = np.array(sorted(model.values()), np.int64)
            index.move(order, 2 * max(len(order), 1))
            renumber = {int(old): new for new, old in enumerate(order)}
            model = {k: renumber[s] for k, s in model.items()}
        assert len(index) == len(model)


@settings(max_examples=100, deadline=None)
@given(held=st.lists(st.integers(-5, 10**12), min_size=1, max_size=30, unique=True), data=st.data(),
       kind=st.sampled_from(["int", "str"]))
def test_first_row_names_each_rows_first_row_of_its_key_when_every_key_is_held(held, data, kind):
    rows = data.draw(st.lists(st.sampled_from(held), min_size=0, max_size=40))
    def as_keys(values):
        return pa.array(values if kind == "int" else [f"k{v}" for v in values])

    index = KeyIndex(kind)
    known = index.lookup(as_keys(held))
    index.insert(as_keys(held), known.new_rows, np.arange(100, 100 + len(held)), known)
    found = index.lookup(as_keys(rows))
    expected = [rows.index(value) for value in rows]
    assert found.first_row is None if len(rows) < 2 else found.first_row.tolist() == expected
    assert found.distinct == (len(set(rows)) == len(rows))
    if len(rows) >= 2:   # a new key: no first rows (the planner finds them itself)
        assert index.lookup(as_keys([*rows, max(held) + 1])).first_row is None


@settings(max_examples=100, deadline=None)
@given(held=st.lists(st.integers(-5, 10**12), min_size=1, max_size=30, unique=True), data=st.data(),
       kind=st.sampled_from(["int", "str"]), start=st.sampled_from([0, 7]))
def test_a_batch_of_one_range_of_slots_in_any_order_is_recognised(held, data, kind, start):
    """``slot_range``: set exactly when every row's key is held, no key repeats and the slots are one
    range (a fleet in a new order); then ``slots[order]`` is that range and ``rank`` each row's place."""
    rows = data.draw(st.lists(st.sampled_from(held), min_size=0, max_size=40))
    def as_keys(values):
        return pa.array(values if kind == "int" else [f"k{v}" for v in values], pa.int64() if kind == "int" else None)

    index = KeyIndex(kind)
    known = index.lookup(as_keys(held))
    index.insert(as_keys(held), known.new_rows, np.arange(start, start + len(held)), known)
    found = index.lookup(as_keys(rows))
    slots = sorted(found.slots.tolist())
    is_range = len(rows) > 0 and slots == list(range(slots[0], slots[0] + len(rows)))
    assert (found.slot_range is not None) == is_range
    if is_range:
        first, order, rank = found.slot_range
        assert found.distinct and found.slots[order].tolist() == slots
        assert rank.tolist() == [slot - first for slot in found.slots.tolist()]
    missing = index.lookup(as_keys([*rows, max(held) + 1]))   # a new key: no range
    assert missing.slot_range is None and missing.slots[-1] == -1
