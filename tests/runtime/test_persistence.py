"""save/load mid-stream: continuing after load gives the same outputs as never stopping."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest
import torch
from runtime_helpers import F, lstm, make_batch, outputs, two_lstm_model

import streamlstm as sl
from streamlstm.errors import FileError


def batches(rng, count, key_type="int"):
    result = []
    for b in range(count):
        keys = rng.integers(0, 8, 10)
        result.append(make_batch(keys, rng.normal(size=(10, F)), mask=rng.random(10) > 0.2,
                                 reset=rng.random(10) < 0.05, end=rng.random(10) < 0.05,
                                 time=np.arange(10) + 100 * b, key_type=key_type))
    return result


@pytest.mark.parametrize("key_type", ["int", "str"])
def test_round_trip_mid_stream(tmp_path, key_type):
    rng = np.random.default_rng(3)
    feed = batches(rng, 6, key_type)
    make = lambda model: sl.StreamRuntime(model, key="id", features="x", mask="m", reset="r", end="e",  # noqa: E731
                                          time="t", idle_ttl=50, max_streams=100)
    never_stopped = make(two_lstm_model(backwards=True))
    expected = [outputs(never_stopped.feed(b)) for b in feed]

    first = make(two_lstm_model(backwards=True))
    for b in feed[:3]:
        first.feed(b)
    path = tmp_path / "runtime.arrow"
    sl.save_runtime(first, path)
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file was renamed away"
    loaded = sl.load_runtime(path)
    got = [outputs(loaded.feed(b)) for b in feed[3:]]
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(expected[3:]), rtol=1e-6, atol=1e-7)
    assert loaded.stats()["rows"] == never_stopped.stats()["rows"]
    assert sorted(loaded.keys()) == sorted(never_stopped.keys())
    with pytest.raises(sl.errors.StreamError, match="not after"):   # last times survived
        loaded.feed(feed[0])


def test_settings_and_time_types_survive(tmp_path):
    rt = sl.StreamRuntime(lstm(3), key="id", features="x", time="t", mode="step", late="drop",
                          idle_ttl=datetime.timedelta(seconds=30), return_state=True)
    stamps = pa.array([1, 2], pa.timestamp("ms"))
    rt.feed(pa.record_batch({"id": [1, 2], "x": make_batch([1, 2], np.ones((2, F))).column("x"), "t": stamps}))
    sl.save_runtime(rt, tmp_path / "r.arrow")
    loaded = sl.load_runtime(tmp_path / "r.arrow")
    assert (loaded.mode, loaded.late, loaded.return_state) == ("step", "drop", True)
    assert loaded.idle_ttl == datetime.timedelta(seconds=30)
    streams = loaded.export_streams()
    assert streams.schema.field("last_time").type == pa.timestamp("ms")
    assert streams.column("last_time").cast(pa.int64()).to_pylist() == [1, 2]


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"not arrow")
    with pytest.raises(FileError, match="junk' is not a readable Arrow IPC file"):
        sl.load_runtime(tmp_path / "junk")
    sl.save_model(lstm(2), tmp_path / "model")
    with pytest.raises(FileError, match="is not a streamlstm stream_runtime file"):
        sl.load_runtime(tmp_path / "model")


def test_failed_save_leaves_previous_file(tmp_path, monkeypatch):
    rt = sl.StreamRuntime(lstm(3), key="id", features="x")
    rt.feed(make_batch([1], np.ones((1, F))))
    path = tmp_path / "r.arrow"
    sl.save_runtime(rt, path)
    before = path.read_bytes()
    rt.feed(make_batch([2], np.ones((1, F))))
    monkeypatch.setattr("streamlstm.io.runtime_file.model_to_bytes",
                        lambda model: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):
        sl.save_runtime(rt, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.arrow"]


def test_float64_carries_round_trip(tmp_path):
    torch.manual_seed(0)
    layer = sl.LSTM(3, return_sequences=True, dtype="float64")
    layer.build((None, None, F))
    rt = sl.StreamRuntime(layer, key="id", features="x")
    rt.feed(make_batch([5, 6], np.random.default_rng(0).normal(size=(2, F))))
    sl.save_runtime(rt, tmp_path / "r")
    loaded = sl.load_runtime(tmp_path / "r")
    assert loaded.state(5)[0][0].dtype == np.float64
    np.testing.assert_array_equal(loaded.state(5)[0][1], rt.state(5)[0][1])
