"""A ShardedRuntime returns what one StreamRuntime returns, batch for batch, and is all or nothing."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pyarrow as pa
import pytest
from cluster_helpers import COLUMNS, SHARED_MODEL, assert_same_output, assert_same_streams, exported, make_batch, model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamlstm as sl
from streamlstm.runtime.report import COUNTERS

_examples = itertools.count()


@st.composite
def interleavings(draw):
    n = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    keys = rng.integers(0, draw(st.integers(1, 8)), n)
    late = draw(st.sampled_from([0.0, 0.05]))
    rows = {"keys": keys, "x": rng.normal(size=(n, 3)).astype(np.float32),
            "mask": rng.random(n) > draw(st.sampled_from([0.0, 0.3])),
            "reset": rng.random(n) < draw(st.sampled_from([0.0, 0.15])),
            "end": rng.random(n) < draw(st.sampled_from([0.0, 0.1])),
            # increasing per stream, but a few rows go back in time: their batch is refused by both
            "time": np.arange(n) * 10 - (rng.random(n) < late) * 25}
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=4))) - {n})
    return rows, cuts


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=interleavings(), shards=st.sampled_from([1, 2, 3]), key_type=st.sampled_from(["int", "str", "dict"]),
       pipelined=st.booleans())
def test_outputs_errors_and_state_equal_one_local_runtime(shared_sharded, data, shards, key_type, pipelined):
    """Interleavings, masks, resets, ends and late rows, int / string / dictionary keys, 1-3 shards
    (string keys on 2). A batch with a late row is refused by both, with the same message."""
    rows, cuts = data
    example = next(_examples)
    keys = [int(k) + 1000 * example if key_type == "int" else f"e{example}-{k}" for k in rows["keys"]]
    bounds = [0, *cuts, len(keys)]
    batches = [make_batch(keys[lo:hi], rows["x"][lo:hi], rows["mask"][lo:hi], rows["reset"][lo:hi],
                          rows["end"][lo:hi], rows["time"][lo:hi], key_type=key_type)
               for lo, hi in zip(bounds[:-1], bounds[1:])]
    local = sl.StreamRuntime(SHARED_MODEL, key_groups=16, **COLUMNS)
    runtime = shared_sharded(shards if key_type == "int" else 2, "int" if key_type == "int" else "str")
    expected, refused = [], None
    for batch in batches:
        try:
            expected.append(local.feed(batch))
        except sl.errors.StreamError as exc:
            refused = exc
            break
    good = batches[:len(expected)]
    got = list(runtime.feed_many(good)) if pipelined else [runtime.feed(b) for b in good]
    for g, e in zip(got, expected):
        assert_same_output(g, e)
    if refused is not None:
        with pytest.raises(type(refused), match="^" + re.escape(str(refused)) + "$"):
            runtime.feed(batches[len(expected)])
    ours = [k for k in runtime.keys() if (k.startswith(f"e{example}-") if isinstance(k, str) else k // 1000 == example)]
    assert sorted(ours) == sorted(local.keys())
    assert_same_streams(runtime, local, local.keys())


def _rows(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def test_a_bad_batch_changes_no_shard_and_raises_the_runtime_error(shared_sharded):
    runtime = shared_sharded(3)
    local = sl.StreamRuntime(SHARED_MODEL, key_groups=16, **COLUMNS)
    keys = list(range(10**6, 10**6 + 12))
    first = make_batch(keys, _rows(12, 0), time=np.full(12, 5))
    assert_same_output(runtime.feed(first), local.feed(first))
    before, stats = exported(runtime), runtime.stats()
    owner = sl.key_group(keys, 16) * 3 // 16
    assert len(set(owner.tolist())) == 3   # every shard holds streams of this batch
    x = _rows(12, 1)
    x[9, 2] = np.nan                                                            # a stateless error, on one shard
    late = make_batch(keys, _rows(12, 2), time=np.r_[np.full(7, 9), 5, np.full(4, 9)])   # row 7 is late
    null_key = pa.record_batch({"id": pa.array([1, None], pa.int64()), "x": first.column("x").slice(0, 2),
                                "m": [True, True], "r": [False, False], "e": [False, False], "t": [9, 9]})
    for bad in (make_batch(keys, x, time=np.full(12, 9)), late, null_key,
                make_batch(keys, _rows(12, 3), time=np.full(12, 9)).drop_columns(["m"]), "not a batch"):
        with pytest.raises(sl.errors.StreamLSTMError) as expected:
            local.feed(bad)
        with pytest.raises(type(expected.value), match="^" + re.escape(str(expected.value)) + "$"):
            runtime.feed(bad)
        assert exported(runtime) == before
        assert {n: runtime.stats()[n] for n in COUNTERS} == {n: stats[n] for n in COUNTERS}
    good = make_batch(keys, _rows(12, 4), time=np.full(12, 9))
    assert_same_output(runtime.feed(good), local.feed(good))
    assert_same_streams(runtime, local, keys)


def test_state_len_keys_reset_and_stats(shared_sharded):
    runtime = shared_sharded(2, "str")
    local = sl.StreamRuntime(SHARED_MODEL, key_groups=16, **COLUMNS)
    keys = ["a-only", "b-only", "c-only", "a-only"]
    before = runtime.stats()
    batch = make_batch(keys, _rows(4, 5), time=[1, 1, 1, 2], key_type="str")
    assert_same_output(runtime.feed(batch), local.feed(batch))
    assert "b-only" in runtime and "z-only" not in runtime and len(runtime) >= 3
    assert runtime.reset(["a-only", "zz", "a-only"]) == local.reset(["a-only", "zz", "a-only"]) == 1
    assert_same_streams(runtime, local, local.keys())
    later = make_batch(keys, _rows(4, 6), time=[3, 3, 3, 4], key_type="str")
    assert_same_output(runtime.feed(later), local.feed(later))
    stats = runtime.stats()
    assert stats["rows"] - before["rows"] == 8 and stats["batches"] - before["batches"] == 2
    assert stats["streams"] == len(runtime) and len(stats["shards"]) == 2
    assert sum(s["rows"] for s in stats["shards"]) == stats["rows"]
    with pytest.raises(sl.errors.StateError, match="no stream with key 'zz'"):
        runtime.state("zz")


def test_bad_options_are_refused_before_any_actor_starts():
    built = model()
    with pytest.raises(sl.errors.ConfigError, match="does not evict streams: idle_ttl"):
        sl.ShardedRuntime(built, idle_ttl=3)
    with pytest.raises(sl.errors.ConfigError, match="must be built"):
        sl.ShardedRuntime(sl.LSTM(3))
    with pytest.raises(sl.errors.ConfigError, match="`shards` must be at most `key_groups`"):
        sl.ShardedRuntime(built, shards=5, key_groups=4)
    with pytest.raises(sl.errors.ConfigError, match="`mode` must be one of"):
        sl.ShardedRuntime(built, mode="fast")


def test_shards_that_could_never_be_scheduled_are_refused_instead_of_waiting_forever(shared_sharded):
    shared_sharded(2)   # the session's shared runtimes hold some of the session's 2 CPUs
    with pytest.raises(sl.errors.ConfigError, match="are free: other actors hold the rest"):
        sl.ShardedRuntime(model(), shards=2, num_cpus=0.99)

