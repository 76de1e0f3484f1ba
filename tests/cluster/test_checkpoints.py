"""Consistent checkpoints, rescaling N -> M by whole key groups, and runtime files in both directions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cluster_helpers import (
    ACTOR_CPUS,
    COLUMNS,
    SHARED_MODEL,
    assert_same_output,
    assert_same_streams,
    make_batch,
    model,
)

import streamlstm as sl

MODEL = model(1)


def _batches(count, seed=0, streams=20, first_key=0):
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        keys = (first_key + rng.integers(0, streams, 15)).tolist()
        time = 100 * index + np.arange(15)
        out.append(make_batch(keys, rng.normal(size=(15, 3)), reset=rng.random(15) < 0.1,
                              end=rng.random(15) < 0.05, time=time))
    return out


def test_save_on_two_load_on_one_and_three_continue_as_if_never_stopped(shared_sharded, tmp_path):
    """The session's 2-shard runtime (holding other tests' streams too) is saved; this test's streams
    continue on 1 and on 3 shards exactly as in a runtime that never stopped."""
    batches = _batches(6, first_key=2 * 10**6)
    local = sl.StreamRuntime(SHARED_MODEL, key_groups=16, **COLUMNS)
    two = shared_sharded(2)
    for batch in batches[:3]:
        assert_same_output(two.feed(batch), local.feed(batch))
    two.save(tmp_path)
    saved = two.stats()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["key_groups"] == 16 and manifest["batches"] == saved["batches"]
    assert [s["key_groups"] for s in manifest["shards"]] == [[0, 8], [8, 16]]
    assert manifest["counters"]["rows"] == saved["rows"]
    expected = [local.feed(batch) for batch in batches[3:]]
    for shards in (1, 3):
        loaded = sl.ShardedRuntime.load(tmp_path, shards=shards, num_cpus=ACTOR_CPUS)
        try:
            assert loaded.shard_ranges() == sl.cluster.ShardLayout(16, shards).ranges()
            assert loaded.stats()["rows"] == saved["rows"] and loaded.stats()["batches"] == saved["batches"]
            assert sorted(loaded.keys()) == sorted(two.keys())
            for batch, out in zip(batches[3:], expected):
                assert_same_output(loaded.feed(batch), out)
            assert_same_streams(loaded, local, local.keys())
            assert loaded.stats()["rows"] == saved["rows"] + 45
        finally:
            loaded.close()


def test_a_runtime_file_loads_into_shards_and_back(ray_session, tmp_path):
    batches = _batches(4, seed=3)
    local = sl.StreamRuntime(MODEL, key_groups=16, **COLUMNS)
    for batch in batches[:2]:
        local.feed(batch)
    sl.save_runtime(local, tmp_path / "one.arrow")
    sharded = sl.ShardedRuntime.load(tmp_path / "one.arrow", shards=2, num_cpus=ACTOR_CPUS)
    try:
        assert_same_output(sharded.feed(batches[2]), local.feed(batches[2]))
        sl.save_runtime(sharded, tmp_path / "back.arrow")     # a ShardedRuntime written as one runtime file
        back = sl.load_runtime(tmp_path / "back.arrow")
        assert back.stats()["rows"] == local.stats()["rows"] == 45
        assert_same_output(back.feed(batches[3]), local.feed(batches[3]))
        assert_same_streams(back, local)
    finally:
        sharded.close()


def test_a_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(sl.errors.ConfigError, match="holds no readable sharded checkpoint"):
        sl.ShardedRuntime.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "format_version": 1}))
    with pytest.raises(sl.errors.ConfigError, match="is not a sharded checkpoint manifest"):
        sl.ShardedRuntime.load(tmp_path)
