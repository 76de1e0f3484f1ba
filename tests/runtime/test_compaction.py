"""Slots of departed streams are reused, and the store shrinks when few streams remain; either way every
stream keeps its own carries, previous output, last time and key group.

Each runtime that evicts is compared with a reference runtime that never evicts (it holds more streams,
so it never reuses or moves a slot); rows arrive in shuffled key order so that slots are scattered.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from runtime_helpers import F, assert_same_states, key_value, make_batch, outputs, two_lstm_model

import streamlstm as sl
from streamlstm.errors import StreamError

TOL = {"rtol": 1e-5, "atol": 1e-6}


def frozen() -> float:
    return 0.0


def make(model, **kwargs):
    return sl.StreamRuntime(model, key="id", features="x", mask="m", reset="r", clock=frozen, **kwargs)


@pytest.mark.parametrize("key_type", ["int", "str"])
def test_max_streams_reuses_slots_and_keeps_each_streams_carries(key_type):
    """capacity=64, max_streams=100: 50 batches of 20 survivors (fed every batch, 2 rows each) and 80 keys
    drawn from 4,000 (an evicted key comes back with a reset on its first row, so it starts from zeros in
    both runtimes). Every output equals the never-evicting reference's."""
    rng = np.random.default_rng(21)
    model = two_lstm_model()
    rt = make(model, capacity=64, max_streams=100)
    reference = make(model)
    survivors = 100_000 + np.arange(20) * 13
    pool = rng.permutation(4_000) * 7 + 5
    previous: set[int] = set()
    evicted, capacities = 0, []
    for _ in range(50):
        others = rng.choice(pool, 80, replace=False)
        ids = np.concatenate([np.repeat(survivors, 2), others])
        order = rng.permutation(len(ids))
        ids = ids[order]
        first = np.zeros(len(ids), bool)
        first[np.unique(ids, return_index=True)[1]] = True
        reset = first & ~np.isin(ids, survivors)         # the first row of every non-survivor key
        x = rng.normal(size=(len(ids), F))
        mask = rng.random(len(ids)) > 0.2
        batch = make_batch(ids, x, mask=mask, reset=reset, key_type=key_type)
        np.testing.assert_allclose(outputs(rt.feed(batch)), outputs(reference.feed(batch)), **TOL)
        held = set(np.unique(ids).tolist())
        evicted += len(previous | held) - 100
        previous = held
        assert sorted(rt.keys()) == sorted(key_value(k, key_type) for k in held), "LRU keeps the last batch's keys"
        capacities.append(rt.stats()["capacity"])
        assert rt.stats()["streams"] == 100
    assert rt.stats()["evicted_max_streams"] == evicted > 40 * 80 * 0.9
    assert max(capacities) <= 1024, capacities
    assert_same_states(rt, reference, rt.keys())
    table = rt.export_streams()
    keys = table.column("key").to_pylist()
    assert table.column("key_group").to_pylist() == sl.key_group(keys, 128).tolist()
    assert set(table.column("idle_batches").to_pylist()) == {0}

    final = make_batch(np.array(sorted(previous)), rng.normal(size=(100, F)), key_type=key_type)
    np.testing.assert_allclose(outputs(rt.feed(final)), outputs(reference.feed(final)), **TOL)


def timed_batch(ids, rng, time0, key_type, mask=True):
    n = len(ids)
    return make_batch(ids, rng.normal(size=(n, F)), mask=(rng.random(n) > 0.3) if mask else None,
                      time=time0 + np.arange(n), key_type=key_type)


def rows_of(batch: pa.RecordBatch, keys) -> pa.RecordBatch:
    wanted = pa.array(list(keys), batch.schema.field("id").type)
    return batch.filter(pc.is_in(batch.column("id"), value_set=wanted))


def compare_tables(got: pa.Table, expected: pa.Table) -> None:
    got, expected = got.sort_by("key"), expected.sort_by("key")
    for name in ("key", "key_group", "last_time", "idle_batches", "has_output_0", "has_output_1"):
        assert got.column(name).equals(expected.column(name)), name
    for name in ("h_0", "c_0", "h_1", "c_1"):
        values = [t.column(name).combine_chunks().flatten().to_numpy() for t in (got, expected)]
        np.testing.assert_allclose(values[0], values[1], **TOL)


@pytest.mark.parametrize("key_type", ["int", "str"])
def test_the_store_shrinks_and_the_remaining_streams_keep_their_state(key_type):
    """20,000 streams, then 100 of them (idle_ttl=1 evicts the rest): the store shrinks below 20,000 slots
    and the 100 continue like a reference that only ever held them; then 5,000 more come and go again."""
    rng = np.random.default_rng(22)
    model = two_lstm_model()
    rt = make(model, time="t", idle_ttl=1)
    reference = make(model, time="t")                 # only the kept keys' rows, never evicts
    everyone = rng.permutation(20_000) * 3 + 1
    kept = rng.choice(everyone, 100, replace=False)   # scattered over the slots
    kept_values = [key_value(k, key_type) for k in kept]

    def both(batch, compare=True):
        got = outputs(rt.feed(batch))
        mine = rows_of(batch, kept_values)
        expected = outputs(reference.feed(mine))
        if compare:
            rows = np.flatnonzero(np.isin(batch.column("id").to_numpy(zero_copy_only=False), kept_values))
            np.testing.assert_allclose(got[rows], expected, **TOL)

    both(timed_batch(everyone, rng, 0, key_type))     # some kept streams only had masked rows so far
    assert len(rt) == 20_000 and rt.stats()["capacity"] >= 20_000

    again = rng.permutation(np.concatenate([kept, kept[:30]]))
    both(timed_batch(again, rng, 100_000, key_type))  # the other 19,900 are evicted, the store compacts
    assert rt.stats()["capacity"] < 20_000
    assert len(rt) == 100 and sorted(rt.keys()) == sorted(kept_values)
    assert rt.stats()["evicted_ttl"] == 19_900
    assert key_value(int(np.setdiff1d(everyone, kept)[0]), key_type) not in rt
    assert_same_states(rt, reference, kept_values)
    compare_tables(rt.export_streams(), reference.export_streams())

    # the same key column again (a remembered layout must not outlive the move of the slots)
    same_keys = timed_batch(again, rng, 200_000, key_type, mask=False)
    both(same_keys)
    late = timed_batch(kept[:1], rng, 200_000, key_type)                 # a kept stream's last time survived
    with pytest.raises(StreamError) as from_rt:
        rt.feed(late)
    with pytest.raises(StreamError) as from_reference:
        reference.feed(late)
    assert str(from_rt.value) == str(from_reference.value) and "not after" in str(from_rt.value)

    newcomers = 10**7 + np.arange(5_000)
    grow = rng.permutation(np.concatenate([kept, newcomers]))
    both(timed_batch(grow, rng, 300_000, key_type))   # grows again
    assert len(rt) == 5_100
    grown = rt.stats()["capacity"]
    assert grown >= 5_100
    both(timed_batch(rng.permutation(kept), rng, 400_000, key_type))     # and shrinks again
    assert len(rt) == 100 and rt.stats()["capacity"] < grown
    assert_same_states(rt, reference, kept_values)
    compare_tables(rt.export_streams(), reference.export_streams())
    both(timed_batch(rng.permutation(np.concatenate([kept, kept])), rng, 500_000, key_type))
