"""A ShardedRuntime returns what one StreamRuntime returns, batch for batch, and is all or nothing."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from conftest import ACTOR_CPUS
from helpers import COLUMNS, assert_same_output, assert_same_streams, exported, make_batch, model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamlstm as sl
from streamlstm.runtime.report import COUNTERS

MODEL = model()
_examples = itertools.count()


@pytest.fixture(scope="module")
def sharded(ray_session):
    """One sharded runtime per (shards, key kind), made on first use; every example uses fresh keys. String
    keys run on 2 shards only (fewer actors: each is a process holding torch)."""
    made: dict = {}

    def get(shards: int, key_type: str) -> sl.ShardedRuntime:
        kind = "int" if key_type == "int" else "str"
        shards = shards if kind == "int" else 2
        if (shards, kind) not in made:
            made[shards, kind] = sl.ShardedRuntime(MODEL, shards=shards, key_groups=16, num_cpus=ACTOR_CPUS,
                                                   late="drop", **COLUMNS)
        return made[shards, kind]

    yield get
    for runtime in made.values():
        runtime.close()


@st.composite
def interleavings(draw):
    n = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    keys = rng.integers(0, draw(st.integers(1, 8)), n)
    late = draw(st.sampled_from([0.0, 0.2]))
    rows = {"keys": keys, "x": rng.normal(size=(n, 3)).astype(np.float32),
            "mask": rng.random(n) > draw(st.sampled_from([0.0, 0.3])),
            "reset": rng.random(n) < draw(st.sampled_from([0.0, 0.15])),
            "end": rng.random(n) < draw(st.sampled_from([0.0, 0.1])),
            # mostly increasing per stream; some rows go back in time (late rows, dropped)
            "time": np.arange(n) * 10 - (rng.random(n) < late) * 25}
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=4))) - {n})
    return rows, cuts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=interleavings(), shards=st.sampled_from([1, 2, 3]), key_type=st.sampled_from(["int", "str", "dict"]),
       pipelined=st.booleans())
def test_outputs_and_state_equal_one_local_runtime(sharded, data, shards, key_type, pipelined):
    rows, cuts = data
    example = next(_examples)
    keys = [int(k) + 1000 * example if key_type == "int" else f"e{example}-{k}" for k in rows["keys"]]
    bounds = [0, *cuts, len(keys)]
    batches = [make_batch(keys[lo:hi], rows["x"][lo:hi], rows["mask"][lo:hi], rows["reset"][lo:hi],
                          rows["end"][lo:hi], rows["time"][lo:hi], key_type=key_type)
               for lo, hi in zip(bounds[:-1], bounds[1:])]
    local = sl.StreamRuntime(MODEL, late="drop", key_groups=16, **COLUMNS)
    runtime = sharded(shards, key_type)
    expected = [local.feed(b) for b in batches]
    got = list(runtime.feed_many(batches)) if pipelined else [runtime.feed(b) for b in batches]
    for g, e in zip(got, expected):
        assert_same_output(g, e)
    mine = [k for k in runtime.keys() if (k.startswith(f"e{example}-") if isinstance(k, str) else k // 1000 == example)]
    assert sorted(mine) == sorted(local.keys())
    for key in local.keys():
        for (h1, c1), (h2, c2) in zip(runtime.state(key), local.state(key)):
            np.testing.assert_allclose(h1, h2, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(c1, c2, rtol=1e-5, atol=1e-6)


def _rows(n, seed):
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def test_a_bad_batch_changes_no_shard_and_raises_the_runtime_error(ray_session):
    runtime = sl.ShardedRuntime(MODEL, shards=3, key_groups=16, num_cpus=ACTOR_CPUS, **COLUMNS)
    local = sl.StreamRuntime(MODEL, key_groups=16, **COLUMNS)
    try:
        keys = list(range(12))
        first = make_batch(keys, _rows(12, 0), time=np.full(12, 5))
        assert_same_output(runtime.feed(first), local.feed(first))
        before, stats = exported(runtime), runtime.stats()
        owner = sl.key_group(keys, 16) * 3 // 16
        assert len(set(owner.tolist())) == 3   # every shard holds streams
        x = _rows(12, 1)
        x[9, 2] = np.nan                                         # a stateless error, on one shard only
        late = make_batch(keys, _rows(12, 2), time=np.r_[np.full(7, 9), 5, np.full(4, 9)])   # row 7 is late
        for bad in (make_batch(keys, x, time=np.full(12, 9)), late,
                    make_batch(keys, _rows(12, 3), time=np.full(12, 9)).drop_columns(["m"]),
                    pa.record_batch({"id": pa.array([1, None], pa.int64()), "x": first.column("x").slice(0, 2),
                                     "m": [True, True], "r": [False, False], "e": [False, False], "t": [9, 9]})):
            with pytest.raises(sl.errors.StreamError) as expected:
                local.feed(bad)
            with pytest.raises(type(expected.value), match="^" + _escaped(str(expected.value)) + "$"):
                runtime.feed(bad)
            assert exported(runtime) == before
            assert {n: runtime.stats()[n] for n in COUNTERS} == {n: stats[n] for n in COUNTERS}
        good = make_batch(keys, _rows(12, 4), time=np.full(12, 9))
        assert_same_output(runtime.feed(good), local.feed(good))
        assert_same_streams(runtime, local)
    finally:
        runtime.close()


def _escaped(message: str) -> str:
    import re

    return re.escape(message)


def test_state_len_keys_reset_and_stats(ray_session):
    runtime = sl.ShardedRuntime(MODEL, shards=2, key_groups=16, num_cpus=ACTOR_CPUS, key="id", features="x")
    local = sl.StreamRuntime(MODEL, key_groups=16, key="id", features="x")
    try:
        batch = pa.record_batch({"id": ["a", "b", "c", "a"], "x": make_batch([0] * 4, _rows(4, 5)).column("x")})
        assert_same_output(runtime.feed(batch), local.feed(batch))
        assert len(runtime) == 3 and "b" in runtime and "z" not in runtime
        runtime.reset(["a", "zz"])
        local.reset(["a", "zz"])
        assert_same_streams(runtime, local)
        assert_same_output(runtime.feed(batch), local.feed(batch))
        stats = runtime.stats()
        assert stats["rows"] == 8 and stats["batches"] == 2 and stats["streams"] == 3
        assert sum(s["rows"] for s in stats["shards"]) == 8 and len(stats["shards"]) == 2
        runtime.reset()
        local.reset()
        assert_same_streams(runtime, local)
        with pytest.raises(sl.errors.StateError, match="no stream with key 'zz'"):
            runtime.state("zz")
    finally:
        runtime.close()


def test_bad_options_are_refused_before_any_actor_starts():
    with pytest.raises(sl.errors.ConfigError, match="does not evict streams: idle_ttl"):
        sl.ShardedRuntime(MODEL, idle_ttl=3)
    with pytest.raises(sl.errors.ConfigError, match="must be built"):
        sl.ShardedRuntime(sl.LSTM(3))
    with pytest.raises(sl.errors.ConfigError, match="`shards` must be at most `key_groups`"):
        sl.ShardedRuntime(MODEL, shards=5, key_groups=4)
    with pytest.raises(sl.errors.ConfigError, match="`mode` must be one of"):
        sl.ShardedRuntime(MODEL, mode="fast")
