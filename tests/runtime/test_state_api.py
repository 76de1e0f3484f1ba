"""state / set_state / reset / keys / len / return_state columns / repr of the runtime."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from runtime_helpers import F, fixed_list, lstm, make_batch, outputs, reference, two_lstm_model

import streamlstm as sl
from streamlstm.errors import ArgumentTypeError, ShapeError, StateError, StreamError


def test_state_set_state_and_reset():
    model = two_lstm_model()
    rt = sl.StreamRuntime(model, key="id", features="x")
    x = np.random.default_rng(0).normal(size=(4, F))
    rt.feed(make_batch([1, 2, 1, 2], x))
    state = rt.state(1)
    assert [tuple(a.shape) for pair in state for a in pair] == [(5,), (5,), (4,), (4,)]
    assert len(rt) == 2 and 1 in rt and 3 not in rt and sorted(rt.keys()) == [1, 2]
    rt.set_state(3, state)                       # a new stream with stream 1's carries
    for a, b in zip(rt.state(3), state):
        np.testing.assert_array_equal(a[0], b[0])
    out1 = outputs(rt.feed(make_batch([1, 3], np.ones((2, F)))))
    np.testing.assert_allclose(out1[0], out1[1], rtol=1e-6)
    assert rt.reset([1, 99, 1]) == 1             # unknown keys are ignored; a key counts once
    assert not any(a.any() for pair in rt.state(1) for a in pair)
    assert any(a.any() for pair in rt.state(2) for a in pair)
    assert rt.reset() == 3
    assert not any(a.any() for key in rt.keys() for pair in rt.state(key) for a in pair)
    assert len(rt) == 3
    with pytest.raises(StateError, match="no stream with key 42"):
        rt.state(42)
    with pytest.raises(ShapeError, match=r"states\[1\]` h must have shape \(4,\)"):
        rt.set_state(1, [state[0], (np.zeros(5), np.zeros(4))])


def test_forget_releases_streams_with_their_last_time():
    rt = sl.StreamRuntime(two_lstm_model(), key="id", features="x", time="t")
    x = np.random.default_rng(1).normal(size=(3, F))
    fresh = outputs(rt.feed(make_batch([1, 2, 3], x, time=[5, 5, 5])))
    assert rt.forget([2, 99]) == 1 and sorted(rt.keys()) == [1, 3]
    with pytest.raises(StreamError, match=r"row 0 \(stream 1\) has time 4, not after"):
        rt.feed(make_batch([1, 2], x[:2], time=[4, 4]))
    again = outputs(rt.feed(make_batch([2], x[1:2], time=[4])))   # a new stream: from zeros, any time
    np.testing.assert_array_equal(again[0], fresh[1])
    with pytest.raises(ArgumentTypeError, match="`keys` must be an iterable of keys or None, got str"):
        rt.forget("1")
    assert rt.forget() == 3 and len(rt) == 0
    np.testing.assert_array_equal(outputs(rt.feed(make_batch([1, 2, 3], x, time=[0, 0, 0]))), fresh)


def test_set_state_then_masked_rows_output_zeros_like_keras():
    layer = lstm(3)
    rt = sl.StreamRuntime(layer, key="id", features="x", mask="m")
    rt.set_state(1, [(np.ones(3), np.ones(3))])
    out = outputs(rt.feed(make_batch([1, 1], np.ones((2, F)), mask=[False, True])))
    assert not out[0].any() and out[1].any()


def test_return_state_columns():
    model = two_lstm_model()
    rt = sl.StreamRuntime(model, key="id", features="x", mask="m", return_state=True)
    rng = np.random.default_rng(2)
    keys, x, mask = np.array([1, 2, 1, 1]), rng.normal(size=(4, F)), np.array([True, True, False, True])
    out = rt.feed(make_batch(keys, x, mask=mask))
    assert out.schema.names == ["id", "output", "h_0", "c_0", "h_1", "c_1"]
    np.testing.assert_array_equal(outputs(out, "h_0")[3], rt.state(1)[0][0])
    np.testing.assert_array_equal(outputs(out, "c_1")[3], rt.state(1)[1][1])
    np.testing.assert_array_equal(outputs(out, "h_1")[2], outputs(out, "h_1")[0])   # masked: unchanged
    np.testing.assert_allclose(outputs(out), reference(model, keys, x, mask, None, None), rtol=1e-5, atol=1e-6)


def test_output_schema_keeps_key_and_time_types():
    rt = sl.StreamRuntime(lstm(3), key="id", features="x", time="t")
    keys = pa.array(["a", "b", "a"]).dictionary_encode()
    times = pa.array([1.5, 2.0, 2.5])
    out = rt.feed(pa.record_batch({"id": keys, "x": fixed_list(np.ones((3, F), np.float32)), "t": times}))
    assert out.schema.field("id").type == keys.type and out.column("t").equals(times)
    assert out.schema.field("output").type == pa.list_(pa.float32(), 3)
    empty = rt.feed(pa.record_batch({"id": keys[:0], "x": fixed_list(np.ones((0, F), np.float32)), "t": times[:0]}))
    assert empty.num_rows == 0 and empty.schema.field("output").type == pa.list_(pa.float32(), 3)


def test_sliced_batches_and_tables_are_read_at_their_offsets():
    layer = lstm(3)
    x = np.random.default_rng(5).normal(size=(10, F)).astype(np.float32)
    batch = make_batch(np.arange(10) % 3, x)
    whole = outputs(sl.StreamRuntime(layer, key="id", features="x").feed(batch))
    rt = sl.StreamRuntime(layer, key="id", features="x")
    parts = [outputs(rt.feed(batch.slice(0, 4))), outputs(rt.feed(pa.Table.from_batches([batch.slice(4, 3),
                                                                                         batch.slice(7)])))]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)


def test_repr_and_html():
    rt = sl.StreamRuntime(two_lstm_model(), key="id", features="x")
    rt.feed(make_batch([1, 2], np.ones((2, F))))
    text = repr(rt)
    assert "streams: 2" in text and "LSTM(5) -> Linear -> Tanh -> LSTM(4) -> Linear" in text
    assert "<table>" in rt._repr_html_() and "2 in 1 batches" in rt._repr_html_()
    stats = rt.stats()
    assert stats["rows"] == 2 and stats["batches"] == 1 and stats["rows_per_second"] > 0


def test_models_the_runtime_refuses():
    with pytest.raises(sl.errors.ConfigError, match="torch recurrent modules"):
        sl.StreamRuntime(torch.nn.Sequential(torch.nn.LSTM(3, 4)), key="id", features="x")
    with pytest.raises(sl.errors.ConfigError, match="at least one streamlstm recurrent layer"):
        sl.StreamRuntime(torch.nn.Sequential(torch.nn.Linear(3, 4)), key="id", features="x")
    with pytest.raises(sl.errors.ArgumentTypeError, match="must be a streamlstm LSTM"):
        sl.StreamRuntime("lstm", key="id", features="x")
    with pytest.raises(sl.errors.ConfigError, match="distinct and not 'output'"):
        sl.StreamRuntime(lstm(3), key="output", features="x")
