"""The trainer's time column: the runtime's rule (strictly increasing per stream across rows and
batches), one time order shared with the runtime serving the same carries, the runtime's clock."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest
import torch
from train_helpers import make_model, optimizer_state, same_optimizer_state, train_batch, weights

import streamlstm as sl
from streamlstm.errors import SchemaError, StreamError

F, U = 3, 4


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def _batch(rng: np.random.Generator, keys: list[int], times: list, time_type: pa.DataType | None = None):
    n = len(keys)
    batch = train_batch(keys, rng.uniform(-1, 1, (n, F)), rng.uniform(-1, 1, (n, 1)))
    return batch.append_column("t", pa.array(times, time_type or pa.int64()))


def _trainer(seed: int = 0, **kwargs) -> sl.StreamTrainer:
    return sl.StreamTrainer(make_model(F, U, seed), _sgd, key="id", features="x", target="y", time="t", **kwargs)


def _snapshot(trainer: sl.StreamTrainer) -> tuple:
    return (weights(trainer.model), optimizer_state(trainer.optimizer),
            trainer.runtime.export_streams().drop_columns(["idle_seconds"]), trainer.stats(), trainer.runtime.stats())


def _assert_same(before: tuple, after: tuple, trainer_stats: bool = True) -> None:
    for name, value in before[0].items():
        assert np.array_equal(value, after[0][name]), name
    assert same_optimizer_state(before[1], after[1])
    assert before[2].equals(after[2])
    assert before[3] == after[3] or not trainer_stats
    assert {k: v for k, v in before[4].items() if k != "busy_seconds"} == \
        {k: v for k, v in after[4].items() if k != "busy_seconds"}


@pytest.mark.parametrize("keys, times, row, stream, earlier", [
    ([1, 2], [3, 9], 0, 1, 3),              # at the stream's last time (from the earlier batch)
    ([2, 1, 1], [9, 5, 5], 2, 1, 5),        # twice in the batch
    ([1, 2, 2], [4, 8, 7], 2, 2, 8),        # going back within the batch
])
def test_a_late_row_rejects_the_batch_and_changes_nothing(keys, times, row, stream, earlier):
    rng = np.random.default_rng(0)
    trainer = _trainer()
    trainer.learn(_batch(rng, [1, 2, 1, 2], [1, 2, 3, 4]))
    before = _snapshot(trainer)
    with pytest.raises(StreamError, match=rf"time column 't' must increase strictly per stream: row {row} \(stream "
                                          rf"{stream}\) has time {times[row]}, not after the stream's earlier time "
                                          rf"{earlier}; pass late='drop'"):
        trainer.learn(_batch(rng, keys, times))
    _assert_same(before, _snapshot(trainer))
    trainer.learn(_batch(rng, [1, 2], [10, 10]))   # still learning
    assert trainer.stats()["updates"] == 2


def test_late_drop_leaves_the_late_rows_out_and_counts_them():
    rng = np.random.default_rng(1)
    dropping, reference = _trainer(late="drop"), _trainer()
    empty = dropping.learn(_batch(rng, [], []))
    assert empty.num_rows == 0 and empty.schema.names == ["id", "t", "output", "loss"]
    first = _batch(rng, [1, 2, 1, 2], [1, 2, 3, 4])
    dropping.learn(first)
    reference.learn(first)
    batch = _batch(rng, [1, 2, 1, 2, 1], [3, 5, 4, 5, 6])   # rows 0 (3 <= 3) and 3 (5 <= 5) are late
    kept = np.array([False, True, True, False, True])
    out = dropping.learn(batch)
    expected = reference.learn(batch.filter(pa.array(kept)))
    assert out.schema.names == ["id", "t", "output", "loss"]
    assert out.column("t").equals(batch.column("t"))
    assert out.column("output").is_valid().to_pylist() == kept.tolist()
    assert out.column("loss").is_valid().to_pylist() == kept.tolist()
    assert out.column("output").filter(pa.array(kept)).equals(expected.column("output"))
    assert out.column("loss").filter(pa.array(kept)).equals(expected.column("loss"))
    for name, value in weights(reference.model).items():
        assert np.array_equal(value, weights(dropping.model)[name]), name
    stats = dropping.stats()
    assert (stats["rows"], stats["dropped_late"], stats["loss_rows"], stats["updates"]) == (9, 2, 7, 2)
    assert dropping.runtime.export_streams().column("last_time").to_pylist() == [6, 5]

    before = _snapshot(dropping)   # a batch of late rows only: nothing learned, only counted
    out = dropping.learn(_batch(rng, [1, 2], [6, 1]))
    assert out.column("output").null_count == 2 and out.column("loss").null_count == 2
    after = _snapshot(dropping)
    _assert_same(before, after, trainer_stats=False)
    assert after[3]["dropped_late"] == 4 and after[3]["batches"] == 3 and after[3]["updates"] == 2


@pytest.mark.parametrize("value, error, message", [
    (float("nan"), StreamError, "time column 't' has the value nan at row 1"),
    ("text", SchemaError, "time column 't' must be double like the earlier batches, got string"),
])
def test_bad_time_values_are_refused(value, error, message):
    rng = np.random.default_rng(2)
    trainer = _trainer()
    trainer.learn(_batch(rng, [1, 2], [1.0, 2.0], pa.float64()))
    before = _snapshot(trainer)
    times = pa.array([3.0, value], pa.float64()) if isinstance(value, float) else pa.array(["a", value])
    bad = _batch(rng, [1, 2], [0, 0]).set_column(3, "t", times)
    with pytest.raises(error, match=message):
        trainer.learn(bad)
    _assert_same(before, _snapshot(trainer))
    with pytest.raises(SchemaError, match="time column 't' must be double like the earlier batches, got int64"):
        trainer.learn(_batch(rng, [1], [5]))


def test_the_trainer_and_its_runtime_keep_one_time_order_per_stream():
    rng = np.random.default_rng(3)
    trainer = _trainer()
    runtime = trainer.runtime
    stamp = pa.timestamp("ms")
    trainer.learn(_batch(rng, [1, 2], [10, 20], stamp))
    assert runtime.time_type == stamp
    assert runtime.stats()["rows"] == 0, "the trainer's rows are counted in trainer.stats(), not the runtime's"
    with pytest.raises(StreamError, match=r"row 0 \(stream 1\) has time datetime.datetime\(1970, 1, 1, 0, 0, 0, "
                                          r"10000\), not after"):
        runtime.feed(_batch(rng, [1], [10], stamp).drop_columns(["y"]))
    served = runtime.feed(_batch(rng, [1, 3], [11, 5], stamp).drop_columns(["y"]))
    assert served.schema.names == ["id", "t", "output"]
    with pytest.raises(StreamError, match=r"row 0 \(stream 1\) has time .*0, 0, 11000\), not after"):
        trainer.learn(_batch(rng, [1], [11], stamp))
    with pytest.raises(StreamError, match=r"row 0 \(stream 3\) has time .*0, 0, 4000\), not after"):
        trainer.learn(_batch(rng, [3], [4], stamp))
    trainer.learn(_batch(rng, [1, 2, 3], [12, 21, 6], stamp))
    last = runtime.export_streams().sort_by("key")
    assert last.column("last_time").cast(pa.int64()).to_pylist() == [12, 21, 6]


def test_float_times_learned_first_are_kept_as_floats():
    rng = np.random.default_rng(4)
    trainer = _trainer()
    trainer.learn(_batch(rng, [1], [0.5], pa.float64()))
    with pytest.raises(StreamError, match="has time 0.25, not after the stream's earlier time 0.5"):
        trainer.runtime.feed(_batch(rng, [1], [0.25], pa.float64()).drop_columns(["y"]))
    trainer.runtime.feed(_batch(rng, [1], [0.75], pa.float64()).drop_columns(["y"]))
    with pytest.raises(StreamError, match="has time 0.7, not after the stream's earlier time 0.75"):
        trainer.learn(_batch(rng, [1], [0.7], pa.float64()))


def test_save_and_load_keep_the_time_column_and_policy(tmp_path):
    rng = np.random.default_rng(5)
    trainer = _trainer(late="drop")
    trainer.learn(_batch(rng, [1, 2], [4, 7]))
    trainer.save(tmp_path / "t.slt")
    loaded = sl.StreamTrainer.load(tmp_path / "t.slt", _sgd)
    config = loaded.runtime.config()
    assert (config["time"], config["late"]) == ("t", "drop")
    batch = _batch(rng, [1, 2], [4, 8])
    out, expected = loaded.learn(batch), trainer.learn(batch)
    assert out.equals(expected) and out.column("output").null_count == 1
    assert loaded.stats() == trainer.stats()


def test_stamps_use_the_runtimes_clock():
    now = [1e12]
    runtime = sl.StreamRuntime(make_model(F, U), key="id", features="x", idle_ttl=datetime.timedelta(seconds=10),
                               clock=lambda: now[0])
    trainer = sl.StreamTrainer.restore(runtime, _sgd, "mse", "y")
    assert runtime.clock() == 1e12
    rng = np.random.default_rng(6)
    trainer.learn(train_batch([1], rng.uniform(size=(1, F)), rng.uniform(size=(1, 1))))
    now[0] += 5
    runtime.feed(train_batch([2], rng.uniform(size=(1, F)), rng.uniform(size=(1, 1))))
    assert 1 in runtime, "learned 5 s ago by the runtime's clock"
    now[0] += 6
    runtime.feed(train_batch([2], rng.uniform(size=(1, F)), rng.uniform(size=(1, 1))))
    assert 1 not in runtime and runtime.stats()["evicted_ttl"] == 1
