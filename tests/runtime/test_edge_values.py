"""Values at the edges of what a batch may hold, and what a failed or half-failed feed leaves behind.

Items 7-12 of issue 11: float64 features that overflow the model's float32, non-finite or uint64 times,
keys no runtime can hold, NaN states; a feed that fails after the late-row check or inside the model
(item 9: these need the prepare/commit split of ``StreamRuntime.feed``), and ``on_evict`` raising.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

import streamlstm as sl
from streamlstm.errors import ShapeError, StreamError
from streamlstm.runtime.eviction import EvictionWarning
from streamlstm.runtime.schema import BatchParser, Columns


def batch(keys, width: int = 2, times=None, time_type=None, x=None) -> pa.RecordBatch:
    values = np.ones((len(keys), width), np.float32) * 0.1 if x is None else np.asarray(x)
    columns = {"id": pa.array(keys, pa.int64()),
               "x": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), width)}
    if times is not None:
        columns["t"] = pa.array(times, time_type or pa.int64())
    return pa.record_batch(columns)


def lstm(units: int = 3, width: int | None = 2) -> sl.LSTM:
    torch.manual_seed(0)
    layer = sl.LSTM(units)
    if width is not None:
        layer.build((None, None, width))
    return layer


def snapshot(rt: sl.StreamRuntime) -> tuple:
    return rt.export_streams().drop_columns(["idle_seconds"]), dict(rt.counters), rt.keys()


def test_float64_features_that_overflow_the_models_float32_are_refused_and_change_nothing():
    rt = sl.StreamRuntime(lstm(), key="id", features="x")
    rt.feed(batch([1, 2], x=np.full((2, 2), 0.5)))
    before = snapshot(rt)
    for _ in range(2):   # the second time through the parser's remembered-schema fast path
        with pytest.raises(StreamError, match=r"'x' has the value 1e\+39 at row 1, feature 0 \(stream 2\), beyond "
                                              r"the largest value of the model's dtype"):
            rt.feed(batch([1, 2], x=np.array([[0.5, 0.5], [1e39, 0.5]])))
        after = snapshot(rt)
        assert after[0].equals(before[0]) and after[1:] == before[1:]
    rt.feed(batch([1, 2], x=np.array([[3e38, 0.5], [-3e38, 0.5]])))   # float32 can hold these
    assert np.isfinite(rt.state(1)[0][0]).all()


def test_the_parsers_remembered_schema_rechecks_the_cast_limit_for_another_model_dtype():
    # The fast path keeps the float64 -> model dtype limit with the schema; the same schema parsed for
    # a float32 model after a float64 one must still refuse what float32 cannot hold.
    parser = BatchParser(Columns.named("id", "x"))
    big = batch([1, 2], x=np.array([[0.5, 0.5], [1e39, 0.5]]))
    for _ in range(2):   # the second time through the remembered schema
        parsed = parser.parse(big, width=2, expected_key_kind=None, time_type=None, allow_nonfinite=False,
                              dtype=torch.float64)
        assert parsed.x[1, 0] == 1e39
    with pytest.raises(StreamError, match=r"'x' has the value 1e\+39 at row 1"):
        parser.parse(big, width=2, expected_key_kind=None, time_type=None, allow_nonfinite=False,
                     dtype=torch.float32)
    small = batch([1, 2], x=np.array([[0.5, 0.5], [3e38, 0.5]]))
    assert parser.parse(small, width=2, expected_key_kind=None, time_type=None, allow_nonfinite=False,
                        dtype=torch.float32).x[1, 0] == 3e38


def test_a_float64_model_accepts_float64_features_beyond_float32():
    rt = sl.StreamRuntime(lstm().to(torch.float64), key="id", features="x")
    rt.feed(batch([1], x=np.array([[1e39, 0.0]])))
    assert rt.stats()["rows"] == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_times_are_refused(value):
    rt = sl.StreamRuntime(lstm(), key="id", features="x", time="t")
    rt.feed(batch([1], times=[1.0], time_type=pa.float64()))
    before = snapshot(rt)
    with pytest.raises(StreamError, match=r"time column 't' has the value .* at row 1; times must be finite"):
        rt.feed(batch([2, 1], times=[2.0, value], time_type=pa.float64()))
    after = snapshot(rt)
    assert after[0].equals(before[0]) and after[1:] == before[1:]


def test_uint64_times_beyond_int64_are_refused_up_front_and_smaller_ones_work(tmp_path):
    rt = sl.StreamRuntime(lstm(), key="id", features="x", time="t")
    with pytest.raises(StreamError, match=r"uint64 value 9223372036854775813 at row 0, above the int64 maximum"):
        rt.feed(batch([1], times=[2**63 + 5], time_type=pa.uint64()))
    assert len(rt) == 0
    rt.feed(batch([1], times=[2**63 - 9], time_type=pa.uint64()))
    rt.feed(batch([1], times=[2**63 - 2], time_type=pa.uint64()))
    sl.save_runtime(rt, tmp_path / "rt.arrow")
    assert sl.load_runtime(tmp_path / "rt.arrow").stats()["rows"] == 2


def test_keys_no_runtime_can_hold_are_simply_unknown():
    rt = sl.StreamRuntime(lstm(), key="id", features="x")
    rt.feed(batch([1]))
    assert 2**70 not in rt and -2**70 not in rt
    rt.reset([2**70, 1])
    with pytest.raises(sl.StateError, match="no stream with key"):
        rt.state(2**70)


def test_set_state_refuses_nan_states():
    rt = sl.StreamRuntime(lstm(), key="id", features="x")
    rt.feed(batch([1]))
    with pytest.raises(ShapeError, match="non-finite"):
        rt.set_state(7, [(np.full(3, np.nan, np.float32), np.zeros(3, np.float32))])
    assert 7 not in rt


def test_rows_dropped_as_late_in_a_batch_that_then_fails_are_not_counted():
    # The model fails inside its head (Linear expects 5 features, the LSTM gives 4).
    model = torch.nn.Sequential(sl.LSTM(4, return_sequences=True), torch.nn.Linear(5, 2))
    rt = sl.StreamRuntime(model, key="id", features="x", time="t", late="drop")
    with pytest.raises(RuntimeError):
        rt.feed(batch([1, 1], width=3, times=[5, 3]))   # row 1 is late
    assert rt.counters["dropped_late"] == 0 and rt.stats()["rows"] == 0


def test_a_first_batch_failing_inside_the_model_does_not_fix_the_input_width():
    model = torch.nn.Sequential(sl.LSTM(4, return_sequences=True), torch.nn.Linear(5, 2))
    rt = sl.StreamRuntime(model, key="id", features="x")
    with pytest.raises(RuntimeError):
        rt.feed(batch([1], width=3))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):   # not "must have width 3"
        rt.feed(batch([1], width=6))
    assert len(rt) == 0


def test_on_evict_raising_still_returns_the_output_and_warns():
    seen = []

    def on_evict(key, state):
        seen.append(key)
        raise OSError("the archive is full")

    rt = sl.StreamRuntime(lstm(), key="id", features="x", idle_ttl=1, on_evict=on_evict)
    rt.feed(batch([1, 2]))
    with pytest.warns(EvictionWarning, match=r"on_evict\(1, state\) raised OSError: the archive is full"):
        out = rt.feed(batch([3, 2]))   # stream 1 is now idle for one batch: evicted
    assert out.num_rows == 2 and out.column("id").to_pylist() == [3, 2]
    assert seen == [1] and sorted(rt.keys()) == [2, 3] and rt.stats()["rows"] == 4
    with pytest.warns(EvictionWarning, match=r"on_evict\(2, state\)"):
        rt.feed(batch([3]))   # stream 2 evicted: the callback runs and warns again
    assert seen == [1, 2]
