"""Every bad batch raises a named StreamError and leaves every stream's state identical."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from runtime_helpers import F, fixed_list, lstm, make_batch

import streamlstm as sl
from streamlstm.errors import SchemaError, StreamError


def frozen_clock() -> float:
    return 100.0   # so that exported idle seconds compare equal


def fresh_runtime() -> sl.StreamRuntime:
    model = torch.nn.Sequential(lstm(4), torch.nn.Linear(4, 2))
    rt = sl.StreamRuntime(model, key="id", features="x", mask="m", reset="r", end="e", time="t", clock=frozen_clock)
    rng = np.random.default_rng(0)
    rt.feed(make_batch([1, 2, 3, 1], rng.normal(size=(4, F)), time=[1, 1, 1, 2]))
    return rt


def snapshot(rt: sl.StreamRuntime) -> tuple:
    """Every stream's carries and bookkeeping (the public export), keys, counters and capacity."""
    return rt.export_streams(), rt.keys(), dict(rt.counters), rt.stats()["capacity"]


def good_columns(n: int = 3) -> dict:
    return {"id": pa.array([1, 2, 9][:n], pa.int64()), "x": fixed_list(np.ones((n, F), np.float32)),
            "m": pa.array([True] * n), "r": pa.array([False] * n), "e": pa.array([False] * n),
            "t": pa.array([5, 6, 7][:n], pa.int64())}


def with_column(name, value):
    columns = good_columns()
    if value is None:
        del columns[name]
    else:
        columns[name] = value
    return pa.record_batch(columns)


nan_x = np.ones((3, F), np.float32)
nan_x[1, 2] = np.nan
wide = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(3 * (F + 1), np.float32)), F + 1)
null_feature = pa.FixedSizeListArray.from_arrays(pa.array([1.0] * 5 + [None] + [1.0] * 3, pa.float32()), F)

CASES = {
    "missing key": (with_column("id", None), SchemaError, r"key column 'id' is missing"),
    "missing features": (with_column("x", None), SchemaError, r"features column 'x' is missing"),
    "missing mask": (with_column("m", None), SchemaError, r"mask column 'm' is missing"),
    "float key": (with_column("id", pa.array([1.0, 2.0, 3.0])), SchemaError, r"integer or string type.*double"),
    "string key after int keys": (with_column("id", pa.array(["a", "b", "c"])), SchemaError,
                                  r"must be integer like the keys"),
    "null key": (with_column("id", pa.array([1, None, 3], pa.int64())), StreamError, r"'id' has a null at row 1"),
    "features not a list": (with_column("x", pa.array([1.0, 2.0, 3.0])), SchemaError, r"FixedSizeList"),
    "feature width": (with_column("x", wide), SchemaError, r"width 3 .* got 4"),
    "null feature row": (with_column("x", pa.array([[1.0] * F, None, [1.0] * F], pa.list_(pa.float32(), F))),
                         StreamError, r"'x' has a null at row 1 \(stream 2\)"),
    "null feature value": (with_column("x", null_feature), StreamError, r"null feature value at row 1 \(stream 2\)"),
    "list feature row too short": (with_column("x", pa.array([[1.0] * F, [1.0] * F, [1.0] * (F - 1)],
                                                              pa.list_(pa.float32()))),
                                   StreamError, r"features column 'x' row 2 \(stream 9\) holds 2 values, expected 3 "
                                                r"\(the model's input dim\)"),
    "large list feature row": (with_column("x", pa.array([[1.0] * F, [1.0] * (F + 2), [1.0] * F],
                                                         pa.large_list(pa.float64()))),
                               StreamError, r"row 1 \(stream 2\) holds 5 values, expected 3"),
    "list of ints": (with_column("x", pa.array([[1] * F] * 3, pa.list_(pa.int64()))), SchemaError,
                     r"List/LargeList of floats whose rows all hold F values\), got list<item: int64>"),
    "null in list feature": (with_column("x", pa.array([[1.0] * F, [1.0, None, 1.0], [1.0] * F],
                                                       pa.list_(pa.float32()))),
                             StreamError, r"null feature value at row 1 \(stream 2\)"),
    "nan feature": (with_column("x", fixed_list(nan_x)), StreamError, r"non-finite value \(nan\) at row 1, feature 2 "
                                                                     r"\(stream 2\)"),
    "mask not bool": (with_column("m", pa.array([1, 0, 1])), SchemaError, r"mask column 'm' must be bool, got int64"),
    "null reset": (with_column("r", pa.array([False, None, False])), StreamError, r"'r' has a null at row 1"),
    "time type": (with_column("t", pa.array(["a", "b", "c"])), SchemaError, r"time column 't' must be int64"),
    "time not after stored": (with_column("t", pa.array([5, 1, 7], pa.int64())), StreamError,
                              r"row 1 \(stream 2\) has time 1, not after the stream's earlier time 1"),
    "time repeats in batch": (pa.record_batch({**good_columns(), "id": pa.array([9, 9, 9], pa.int64()),
                                               "t": pa.array([5, 6, 6], pa.int64())}),
                              StreamError, r"row 2 \(stream 9\) has time 6, not after the stream's earlier time 6"),
    "not a batch": ({"id": [1]}, SchemaError, r"pyarrow.RecordBatch or pyarrow.Table, got dict"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_batch_raises_and_changes_nothing(name):
    batch, error, message = CASES[name]
    rt = fresh_runtime()
    before = snapshot(rt)
    with pytest.raises(error, match=message):
        rt.feed(batch)
    assert snapshot(rt) == before
    rt.feed(pa.record_batch(good_columns()))   # still usable afterwards
    assert snapshot(rt) != before


@pytest.mark.parametrize("list_type", [pa.list_, pa.large_list])
@pytest.mark.parametrize("dtype", [pa.float32(), pa.float64()])
def test_list_features_give_the_fixed_size_list_numbers(list_type, dtype):
    """A List/LargeList features column whose rows all hold F values feeds like FixedSizeList, sliced too."""
    rng = np.random.default_rng(3)
    keys, x = [1, 2, 1, 3, 2, 1], rng.normal(size=(6, F))
    reference = sl.StreamRuntime(lstm(4), key="id", features="x")
    expected = reference.feed(make_batch(keys, x.astype(np.float32 if dtype == pa.float32() else np.float64)))
    rt = sl.StreamRuntime(lstm(4), key="id", features="x")
    batch = pa.record_batch({"id": pa.array(keys, pa.int64()), "x": pa.array(x.tolist(), list_type(dtype))})
    first = rt.feed(batch.slice(0, 2))
    rest = rt.feed(batch.slice(2))
    got = np.concatenate([first.column("output").flatten().to_numpy(), rest.column("output").flatten().to_numpy()])
    np.testing.assert_allclose(got, expected.column("output").flatten().to_numpy(), rtol=1e-6, atol=1e-6)


def test_stream_error_is_a_value_error():
    assert issubclass(StreamError, ValueError) and issubclass(SchemaError, StreamError)


def test_nonfinite_features_can_be_allowed():
    rt = sl.StreamRuntime(lstm(4), key="id", features="x", allow_nonfinite=True)
    out = rt.feed(make_batch([1, 2, 3], nan_x))
    assert out.num_rows == 3


def test_late_rows_can_be_dropped_and_counted():
    rt2 = sl.StreamRuntime(lstm(4), key="id", features="x", mask="m", reset="r", end="e", time="t", late="drop")
    rt2.feed(make_batch([2], np.ones((1, F)), time=[4]))
    before = rt2.state(2)
    out = rt2.feed(pa.record_batch({**good_columns(), "t": pa.array([5, 3, 7], pa.int64())}))
    assert out.column("output").is_valid().to_pylist() == [True, False, True]
    assert rt2.stats()["dropped_late"] == 1
    np.testing.assert_array_equal(rt2.state(2)[0][0], before[0][0])


class Boom(torch.nn.Module):
    """A per-step module that fails on demand, to interrupt a batch mid-compute."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x):
        if self.armed:
            raise KeyboardInterrupt("injected")
        return x


@pytest.mark.parametrize("mode", ["step", "chunk"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_mid_compute_leaves_carries_unchanged(mode, error):
    boom = Boom()
    model = torch.nn.Sequential(lstm(4), boom, lstm(3, 4, seed=2))
    rt = sl.StreamRuntime(model, key="id", features="x", mode=mode, clock=frozen_clock)
    rng = np.random.default_rng(1)
    rt.feed(make_batch([1, 2, 1, 3], rng.normal(size=(4, F))))
    before = snapshot(rt)
    boom.armed = True
    boom.forward = lambda x: (_ for _ in ()).throw(error("injected"))  # raise from inside the model
    with pytest.raises(error, match="injected"):
        rt.feed(make_batch([1, 2, 7, 1], rng.normal(size=(4, F))))
    assert snapshot(rt) == before
    assert 7 not in rt
