"""A shard actor killed mid-run is restarted from the last checkpoint and fed the driver's log."""

from __future__ import annotations

import numpy as np
from cluster_helpers import ACTOR_CPUS, COLUMNS, assert_same_output, assert_same_streams, kill, make_batch, model

import streamlstm as sl
from streamlstm.runtime.report import COUNTERS

MODEL = model(2)


def test_killed_shards_recover_with_no_lost_or_repeated_effect(ray_session, tmp_path):
    rng = np.random.default_rng(7)
    batches = [make_batch(rng.integers(0, 30, 20).tolist(), rng.normal(size=(20, 3)), time=100 * i + np.arange(20))
               for i in range(8)]
    local = sl.StreamRuntime(MODEL, key_groups=16, **COLUMNS)
    runtime = sl.ShardedRuntime(MODEL, shards=2, key_groups=16, num_cpus=ACTOR_CPUS, **COLUMNS)
    try:
        expected = [local.feed(batch) for batch in batches]
        for index, batch in enumerate(batches):
            if index == 2:      # no checkpoint yet: the shard starts empty and replays the log from the start
                kill(ray_session, runtime.shard_actors()[1])
            if index == 3:
                runtime.save(tmp_path / "dir")
            if index == 4:      # restored from its own file of the checkpoint, then fed the batches since
                kill(ray_session, runtime.shard_actors()[0])
            if index == 5:      # a runtime file as the checkpoint (what replay and serve write)
                sl.save_runtime(runtime, tmp_path / "one.arrow")
                runtime.checkpointed(tmp_path / "one.arrow")
            if index == 6:      # restored with its key groups from that file
                kill(ray_session, runtime.shard_actors()[1])
            assert_same_output(runtime.feed(batch), expected[index])
        assert runtime.restarts == 3
        assert_same_streams(runtime, local)
        assert {n: runtime.stats()[n] for n in COUNTERS} == {n: local.stats()[n] for n in COUNTERS}
        kill(ray_session, runtime.shard_actors()[1])   # found dead by a query, too
        assert len(runtime) == len(local)
        assert runtime.restarts == 4   # the same shard restarted twice from the same file: counted once
        assert_same_streams(runtime, local)
        assert {n: runtime.stats()[n] for n in COUNTERS} == {n: local.stats()[n] for n in COUNTERS}
    finally:
        runtime.close()
