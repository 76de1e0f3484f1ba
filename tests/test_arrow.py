"""streamlstm.arrow: record batches, FixedSizeList <-> numpy round trips, tensors of read-only memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from streamlstm.arrow import as_record_batch, as_tensor, fixed_list, fixed_list_to_numpy
from streamlstm.errors import ArgumentTypeError, ShapeError

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """The environment of a subprocess that imports this checkout's streamlstm."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def values(n: int = 5, width: int = 3, dtype: type = np.float32) -> np.ndarray:
    return (np.arange(n * width).reshape(n, width) * 0.5).astype(dtype)


# -- as_record_batch -------------------------------------------------------------------------------------------
def test_as_record_batch():
    batch = pa.record_batch({"id": [1, 2], "v": [0.5, 1.5]})
    assert as_record_batch(batch) is batch
    table = pa.concat_tables([pa.Table.from_batches([batch]), pa.Table.from_batches([batch])])
    assert table.column("id").num_chunks == 2
    combined = as_record_batch(table)
    assert isinstance(combined, pa.RecordBatch) and combined.to_pydict() == table.to_pydict()
    empty = as_record_batch(table.schema.empty_table())
    assert empty.num_rows == 0 and empty.schema == table.schema
    for other in (None, [1, 2], {"id": [1]}, batch.column(0)):
        assert as_record_batch(other) is None


def test_runtime_schema_uses_the_same_function():
    from streamlstm.runtime import schema

    assert schema.as_record_batch is as_record_batch


# -- fixed_list -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, arrow_type", [(np.float16, pa.float16()), (np.float32, pa.float32()),
                                               (np.float64, pa.float64())])
def test_round_trip_keeps_float_types(dtype, arrow_type):
    x = values(dtype=dtype)
    array = fixed_list(x)
    assert array.type == pa.list_(arrow_type, 3)
    assert len(array) == 5 and array.null_count == 0
    back = fixed_list_to_numpy(array)
    assert back.dtype == dtype and back.shape == (5, 3)
    np.testing.assert_array_equal(back, x)
    assert array.to_pylist() == x.tolist()


def test_other_numbers_become_float32():
    for x in (np.arange(6).reshape(3, 2), [[1, 2], [3, 4]], np.ones((2, 2), bool)):
        array = fixed_list(x)
        assert array.type == pa.list_(pa.float32(), 2)
        np.testing.assert_array_equal(fixed_list_to_numpy(array), np.asarray(x, np.float32))


def test_fixed_list_shares_contiguous_memory():
    x = values()
    back = fixed_list_to_numpy(fixed_list(x))
    assert np.shares_memory(back, x)
    assert not back.flags.writeable


def test_non_contiguous_input():
    x = values(4, 6)[:, ::2]
    np.testing.assert_array_equal(fixed_list_to_numpy(fixed_list(x)), x)
    y = values(3, 4).T
    np.testing.assert_array_equal(fixed_list_to_numpy(fixed_list(y)), y)


def test_valid_makes_null_rows():
    x = values()
    valid = np.array([True, False, True, True, False])
    array = fixed_list(x, valid)
    assert array.null_count == 2
    assert array.is_valid().to_pylist() == valid.tolist()
    assert array.to_pylist()[1] is None and array.to_pylist()[2] == x[2].tolist()
    back = fixed_list_to_numpy(array)
    assert np.isnan(back[~valid]).all()
    np.testing.assert_array_equal(back[valid], x[valid])
    assert fixed_list(x, np.ones(5, bool)).null_count == 0


def test_empty():
    array = fixed_list(np.empty((0, 4), np.float32))
    assert len(array) == 0 and array.type.list_size == 4
    assert fixed_list_to_numpy(array).shape == (0, 4)


@pytest.mark.parametrize("x, valid, error, message", [
    (np.ones(3), None, ShapeError, r"`values` must have shape \[n, width\] with width >= 1, got \[3\]"),
    (np.ones((2, 2, 2)), None, ShapeError, r"got \[2, 2, 2\]"),
    (np.ones((2, 0)), None, ShapeError, r"got \[2, 0\]"),
    (np.ones((2, 3)), np.ones(3, bool), ShapeError, r"`valid` must be a bool array of shape \[2\], got bool \[3\]"),
    (np.ones((2, 3)), np.ones(2), ShapeError, r"got float64 \[2\]"),
    (np.array([["a", "b"]]), None, ArgumentTypeError, "`values` must be a numeric array, got dtype <U1"),
])
def test_fixed_list_errors(x, valid, error, message):
    with pytest.raises(error, match=message):
        fixed_list(x, valid)


# -- fixed_list_to_numpy -------------------------------------------------------------------------------------------
def test_slices_are_respected_without_copies():
    x = values(10, 3)
    array = fixed_list(x)
    for lo, length in [(0, 10), (3, 4), (9, 1), (10, 0), (2, 8)]:
        part = fixed_list_to_numpy(array.slice(lo, length))
        np.testing.assert_array_equal(part, x[lo:lo + length])
        if length:
            assert np.shares_memory(part, x)
    np.testing.assert_array_equal(fixed_list_to_numpy(array.slice(2).slice(3, 2)), x[5:7])


def test_values_with_their_own_offset():
    flat = pa.array(np.arange(20, dtype=np.float32))
    array = pa.FixedSizeListArray.from_arrays(flat.slice(2, 12), 4).slice(1)
    np.testing.assert_array_equal(fixed_list_to_numpy(array), np.arange(6, 14, dtype=np.float32).reshape(2, 4))


def test_null_values_and_null_rows_read_as_nan():
    array = pa.FixedSizeListArray.from_arrays(pa.array([1.0, None, 3.0, 4.0, 5.0, 6.0], pa.float32()), 2,
                                              mask=pa.array([False, False, True]))
    back = fixed_list_to_numpy(array)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, np.array([[1, np.nan], [3, 4], [np.nan, np.nan]], np.float32))
    np.testing.assert_array_equal(fixed_list_to_numpy(array.slice(1)), back[1:])
    ints = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4], pa.int32()), 2, mask=pa.array([True, False]))
    back = fixed_list_to_numpy(ints)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, [[np.nan, np.nan], [3, 4]])


def test_integer_values():
    array = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4], pa.int64()), 2)
    back = fixed_list_to_numpy(array)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, [[1, 2], [3, 4]])


def test_chunked_arrays():
    x = values(9, 2)
    array = fixed_list(x)
    one = fixed_list_to_numpy(pa.chunked_array([array.slice(2, 5)]))
    np.testing.assert_array_equal(one, x[2:7])
    assert np.shares_memory(one, x)   # one chunk: no copy
    several = pa.chunked_array([array.slice(0, 2), array.slice(2, 0), array.slice(2, 4), array.slice(6)])
    np.testing.assert_array_equal(fixed_list_to_numpy(several), x)
    none = fixed_list_to_numpy(pa.chunked_array([], array.type))
    assert none.shape == (0, 2) and none.dtype == np.float32
    table = pa.concat_tables([pa.table({"x": array.slice(0, 4)}), pa.table({"x": array.slice(4)})])
    np.testing.assert_array_equal(fixed_list_to_numpy(table.column("x")), x)


@pytest.mark.parametrize("bad, got", [
    (pa.array([[1.0, 2.0]]), "list<item: double>"),
    (pa.array([1.0, 2.0]), "double"),
    (pa.FixedSizeListArray.from_arrays(pa.array(["a", "b"]), 2), "fixed_size_list<item: string>"),
    (np.ones((2, 2)), "ndarray"),
    ([[1.0]], "list"),
])
def test_fixed_list_to_numpy_errors(bad, got):
    with pytest.raises(ArgumentTypeError, match=rf"`array` must be a pyarrow FixedSizeList array of numbers, got "
                                                rf"{got}"):
        fixed_list_to_numpy(bad)


# -- as_tensor ------------------------------------------------------------------------------------------------------
def test_as_tensor_shares_memory():
    read_only = fixed_list_to_numpy(fixed_list(values()))
    assert not read_only.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = as_tensor(read_only)
        again = as_tensor(read_only)
    assert tensor.data_ptr() == again.data_ptr() == read_only.ctypes.data
    torch.testing.assert_close(tensor, torch.tensor(values()))
    writable = values()
    tensor = as_tensor(writable)
    tensor[0, 0] = 42.0
    assert writable[0, 0] == 42.0


def test_read_only_arrays_give_no_warning_in_a_fresh_process():
    # torch warns once per process: only a fresh process shows whether the first call warns.
    code = ("import numpy as np, pyarrow as pa\n"
            "from streamlstm.arrow import as_tensor, fixed_list, fixed_list_to_numpy\n"
            "x = fixed_list_to_numpy(fixed_list(np.ones((2, 3), np.float32)))\n"
            "assert not x.flags.writeable\n"
            "print(float(as_tensor(x).sum()), float(as_tensor(x[1:]).sum()))\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6.0", "3.0"]
    assert "Warning" not in done.stderr


# -- the Flight client and the dashboard do not need the runtime ----------------------------------------------------
def test_client_and_dashboard_modules_do_not_import_the_runtime():
    # ``import streamlstm.serve.client`` runs ``streamlstm/__init__.py`` first, which imports the runtime
    # for ``streamlstm.StreamRuntime``. To see what the client itself needs, the package is replaced by an
    # empty namespace of the same directory, so that only the client's own imports run.
    modules = ["streamlstm.serve.client", "streamlstm.notebook.sources", "streamlstm.notebook.views"]
    try:
        import ipywidgets  # noqa: F401

        modules.append("streamlstm.notebook")
    except ImportError:
        pass
    code = ("import importlib, importlib.util, json, sys, types\n"
            "spec = importlib.util.find_spec('streamlstm')\n"
            "package = types.ModuleType('streamlstm')\n"
            "package.__path__ = list(spec.submodule_search_locations)\n"
            "sys.modules['streamlstm'] = package\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=_env())
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "streamlstm.serve.client" in loaded and "streamlstm.arrow" in loaded
    assert [name for name in loaded if name.startswith("streamlstm.runtime")] == []
