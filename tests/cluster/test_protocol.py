"""The one-round-trip feed protocol: a shard's commit travels with its next call (see
``streamlstm.cluster.sharded``). What must hold: a batch's output is returned only when every shard
prepared it; every returned batch is applied before anything reads the state; a bad batch, an
unfinished ``feed_many`` or a shard killed before its deferred commit change nothing else."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cluster_helpers import (
    ACTOR_CPUS,
    COLUMNS,
    SHARED_MODEL,
    assert_same_output,
    assert_same_streams,
    kill,
    make_batch,
    model,
)

import streamlstm as sl
from streamlstm.runtime.report import COUNTERS


def keys_on(shard: int, shards: int, count: int, first: int) -> list[int]:
    """``count`` int keys from ``first`` on that shard ``shard`` of ``shards`` owns (16 key groups)."""
    candidates = np.arange(first, first + 200 * count)
    owner = sl.key_group(candidates, 16) * shards // 16
    return candidates[owner == shard][:count].tolist()


def _batch(keys: list[int], seed: int, time: int = 1, bad_row: int | None = None):
    x = np.random.default_rng(seed).normal(size=(len(keys), 3))
    if bad_row is not None:
        x[bad_row, 1] = np.inf
    return make_batch(keys, x, time=np.full(len(keys), time))


def _direct(ray_session, runtime, what: str = "stats") -> list:
    """What each shard actor answers when asked directly, bypassing the driver's pending commits."""
    return ray_session.get([getattr(actor, what).remote() for actor in runtime.shard_actors()])


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_bad_batch_after_a_good_one_keeps_the_good_one_and_applies_nothing_of_its_own(shared_sharded, pipelined):
    """The good batch touches both shards; the bad one only shard 1 (so shard 0's commit of the good
    one is still owed when the bad one fails). Fed one by one, or pipelined: the bad batch is then
    sent before the good one is awaited."""
    runtime = shared_sharded(2)
    first = 3 * 10**6 + 1000 * pipelined
    zero, one = keys_on(0, 2, 4, first), keys_on(1, 2, 4, first)
    good, bad = _batch(zero + one, 0), _batch(one, 1, time=2, bad_row=2)
    local = sl.StreamRuntime(SHARED_MODEL, key_groups=16, **COLUMNS)
    expected = local.feed(good)
    with pytest.raises(sl.errors.StreamError) as refused:
        local.feed(bad)
    outputs = []
    with pytest.raises(type(refused.value), match="^" + re.escape(str(refused.value)) + "$"):
        if pipelined:
            outputs.extend(runtime.feed_many([good, bad]))
        else:
            outputs.append(runtime.feed(good))
            runtime.feed(bad)
    assert len(outputs) == 1
    assert_same_output(outputs[0], expected)
    assert_same_streams(runtime, local, zero + one)
    after = _batch(zero + one, 2, time=3)   # the bad batch left nothing behind: the next one is right
    assert_same_output(runtime.feed(after), local.feed(after))
    assert_same_streams(runtime, local, zero + one)


def test_the_commit_is_deferred_but_every_read_sees_it(shared_sharded, ray_session, tmp_path):
    """``feed`` returns after one round trip: the shards have prepared, not committed (asked directly,
    they do not count the rows yet). Queries, ``save`` and ``flush`` commit first. A batch of one
    shard's streams calls that shard only."""
    runtime = shared_sharded(2)
    local = sl.StreamRuntime(SHARED_MODEL, key_groups=16, **COLUMNS)
    zero = keys_on(0, 2, 3, 4 * 10**6)
    runtime.flush()
    before = _direct(ray_session, runtime)
    assert_same_output(runtime.feed(_batch(zero, 0)), local.feed(_batch(zero, 0)))
    pending = _direct(ray_session, runtime)
    assert pending[0]["rows"] == before[0]["rows"]                   # prepared, not committed yet
    assert pending[0]["busy_seconds"] > before[0]["busy_seconds"]    # ... but computed
    assert pending[1]["busy_seconds"] == before[1]["busy_seconds"]   # shard 1 was not called at all
    runtime.flush()
    assert _direct(ray_session, runtime)[0]["rows"] == before[0]["rows"] + 3
    reads = [lambda: runtime.state(zero[0]), lambda: zero[1] in runtime, lambda: len(runtime), runtime.keys,
             runtime.stats, runtime.export_streams, lambda: runtime.save(tmp_path / "ck")]
    for index, read in enumerate(reads):   # each right after a feed whose commit is owed
        batch = _batch(zero, 10 + index, time=2 + index)
        runtime.feed(batch)
        local.feed(batch)
        read()
        assert _direct(ray_session, runtime)[0]["rows"] == before[0]["rows"] + 6 + 3 * index, index
    assert_same_streams(runtime, local, zero)
    saved = sl.ShardedRuntime.load(tmp_path / "ck", shards=1, num_cpus=ACTOR_CPUS)
    try:
        assert_same_streams(saved, local, zero)
    finally:
        saved.close()


def test_reads_between_the_outputs_of_feed_many_see_the_outputs_taken(shared_sharded):
    """A read while ``feed_many`` has a batch in flight (what replay's checkpoints do) sees the batches
    whose outputs were taken, and the pipeline goes on unharmed."""
    runtime = shared_sharded(3)
    keys = list(range(6 * 10**6, 6 * 10**6 + 9))
    batches = [_batch(keys, seed, time=seed) for seed in range(5)]
    local = sl.StreamRuntime(SHARED_MODEL, key_groups=16, **COLUMNS)
    for out, batch in zip(runtime.feed_many(batches), batches):
        assert_same_output(out, local.feed(batch))
        assert_same_streams(runtime, local, keys)


def test_an_unfinished_feed_many_applies_only_the_outputs_taken(shared_sharded):
    runtime = shared_sharded(3)
    keys = list(range(5 * 10**6, 5 * 10**6 + 9))
    batches = [_batch(keys, seed, time=seed) for seed in range(4)]
    local = sl.StreamRuntime(SHARED_MODEL, key_groups=16, **COLUMNS)
    feeds = runtime.feed_many(batches)
    assert_same_output(next(feeds), local.feed(batches[0]))   # batch 1 is in flight now
    assert_same_streams(runtime, local, keys)                 # ... and is dropped
    assert_same_output(runtime.feed(batches[1]), local.feed(batches[1]))
    assert_same_streams(runtime, local, keys)


def test_a_shard_killed_before_its_deferred_commit_is_restarted_with_it(ray_session):
    """Kill a shard after a feed returned (its commit owed), before the next feed, before a query, and
    in the middle of a pipelined ``feed_many`` (a batch in flight): no lost or repeated effect."""
    built = model(4)
    rng = np.random.default_rng(11)
    batches = [make_batch(rng.integers(0, 24, 16).tolist(), rng.normal(size=(16, 3)), time=100 * i + np.arange(16))
               for i in range(9)]
    local = sl.StreamRuntime(built, key_groups=16, **COLUMNS)
    expected = [local.feed(batch) for batch in batches]
    runtime = sl.ShardedRuntime(built, shards=2, key_groups=16, num_cpus=ACTOR_CPUS, **COLUMNS)
    try:
        assert_same_output(runtime.feed(batches[0]), expected[0])
        kill(ray_session, runtime.shard_actors()[1])
        assert_same_output(runtime.feed(batches[1]), expected[1])
        kill(ray_session, runtime.shard_actors()[0])
        assert sorted(runtime.keys()) == sorted(set(batches[0].column("id").to_pylist()
                                                    + batches[1].column("id").to_pylist()))
        for index, out in enumerate(runtime.feed_many(batches[2:]), start=2):
            assert_same_output(out, expected[index])
            if index == 4:
                kill(ray_session, runtime.shard_actors()[1])
        assert runtime.restarts == 3
        assert_same_streams(runtime, local)
        assert {n: runtime.stats()[n] for n in COUNTERS} == {n: local.stats()[n] for n in COUNTERS}
        runtime.close()   # settles the owed commits and ends the actors, with no error
        assert runtime.shard_actors() == []
    finally:
        runtime.close()
