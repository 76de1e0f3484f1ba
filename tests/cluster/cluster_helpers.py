"""Helpers of the cluster tests: compare a sharded runtime with one local StreamRuntime."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

TOL = {"rtol": 1e-5, "atol": 1e-6}
ACTOR_CPUS = 0.1   # CPUs each test shard actor asks Ray for: several sharded runtimes fit in num_cpus=2


def assert_same_output(got: pa.RecordBatch, expected: pa.RecordBatch) -> None:
    """Same schema, same key/time columns, row for row; outputs equal to float rounding (a shard runs
    fewer rows per kernel call than one runtime, which can change the last bit)."""
    assert got.schema.equals(expected.schema), (got.schema, expected.schema)
    for name in expected.schema.names:
        a, b = got.column(name), expected.column(name)
        if pa.types.is_fixed_size_list(b.type):
            assert a.is_valid().equals(b.is_valid()), name
            np.testing.assert_allclose(_values(a), _values(b), **TOL, err_msg=name)
        else:
            assert a.equals(b), name


def _values(array: pa.Array) -> np.ndarray:
    width = array.type.list_size
    filled = array.fill_null([0.0] * width) if array.null_count else array
    return filled.flatten().to_numpy(zero_copy_only=False).reshape(len(array), width)


def assert_same_streams(sharded: Any, local: Any, keys: Any = None) -> None:
    """The same keys held (or: ``keys`` are held by both), each with the same (h, c) per cell."""
    if keys is None:
        assert sorted(sharded.keys()) == sorted(local.keys())
    for key in local.keys() if keys is None else keys:
        for (h1, c1), (h2, c2) in zip(sharded.state(key), local.state(key)):
            np.testing.assert_allclose(h1, h2, **TOL)
            np.testing.assert_allclose(c1, c2, **TOL)


def exported(sharded: Any) -> dict[Any, list]:
    """Every stream's exported row (key -> values), for byte-identical comparisons."""
    table = sharded.export_streams()
    rows = table.drop_columns([c for c in ("idle_seconds",) if c in table.column_names]).to_pylist()
    return {row["key"]: row for row in rows}


def model(seed: int = 0) -> Any:
    """A built two-layer model: LSTM(4) over 3 features, then Linear(4, 2)."""
    import torch

    import streamlstm as sl

    torch.manual_seed(seed)
    layer = sl.LSTM(4, return_sequences=True, input_shape=(None, 3))
    with torch.no_grad():
        layer.cell.bias.uniform_(-0.5, 0.5)
    return torch.nn.Sequential(layer, torch.nn.Linear(4, 2))


COLUMNS = {"key": "id", "features": "x", "mask": "m", "reset": "r", "end": "e", "time": "t"}


def make_batch(keys: list, x: np.ndarray, mask: Any = None, reset: Any = None, end: Any = None,
               time: Any = None, key_type: str = "int") -> pa.RecordBatch:
    """Columns id (int64, string or dictionary), x (FixedSizeList[3]), m, r, e (bool) and t (int64)."""
    n = len(keys)
    if key_type == "int":
        key_array = pa.array(keys, pa.int64())
    else:
        key_array = pa.array([str(k) for k in keys], pa.string())
        key_array = key_array.dictionary_encode() if key_type == "dict" else key_array
    flat = pa.array(np.ascontiguousarray(x, np.float32).reshape(-1))
    columns = {"id": key_array, "x": pa.FixedSizeListArray.from_arrays(flat, 3)}
    for name, value, default in (("m", mask, True), ("r", reset, False), ("e", end, False)):
        columns[name] = pa.array(np.full(n, default) if value is None else np.asarray(value, bool))
    columns["t"] = pa.array(np.arange(n) if time is None else np.asarray(time), pa.int64())
    return pa.record_batch(columns)


def kill(ray, actor, timeout: float = 60.0) -> None:
    """``ray.kill`` the actor and wait until it is gone (the kill is asynchronous: a call sent at once
    could still be answered)."""
    ray.kill(actor)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ping.remote(), timeout=timeout)
        except ray.exceptions.RayActorError:
            return
    raise AssertionError(f"actor {actor} still answers {timeout} s after ray.kill")


SHARED_MODEL = model()   # the model of the session's shared sharded runtimes (conftest.shared_sharded)
