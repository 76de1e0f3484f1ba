"""Replay test data: interleaved multi-stream tables, a small saved model, and each file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import streamlstm as sl


def make_table(streams: int = 30, steps: int = 40, width: int = 3, seed: int = 0) -> pa.Table:
    """Rows of ``streams`` streams, ``steps`` each, interleaved in a random order; per stream in time order."""
    rng = np.random.default_rng(seed)
    keys = np.repeat(np.arange(streams), steps)
    order = np.argsort(rng.random(len(keys)), kind="stable")
    keys = keys[order]
    # Within a stream rows keep increasing times whatever the interleaving.
    times = np.zeros(len(keys), np.int64)
    for key in range(streams):
        where = np.flatnonzero(keys == key)
        times[where] = np.arange(len(where)) * 10 + key
    x = rng.standard_normal((len(keys), width)).astype(np.float32)
    return pa.table({"stream_id": pa.array(keys, pa.int64()), "time": times,
                     "x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), width),
                     "reset": pa.array(rng.random(len(keys)) < 0.02)})


def make_model(width: int = 3, units: int = 8, seed: int = 0, head: bool = True) -> torch.nn.Module:
    """``LSTM(units)`` then ``Linear(units, 2)`` (without ``head``: the LSTM alone)."""
    torch.manual_seed(seed)
    layers = [sl.LSTM(units, return_sequences=True, seed=seed)] + ([torch.nn.Linear(units, 2)] if head else [])
    model = torch.nn.Sequential(*layers)
    model[0].build((None, None, width))
    return model.eval()


def save_model(path: Path, width: int = 3, units: int = 8, head: bool = True) -> Path:
    sl.save_model(make_model(width, units, head=head), path)
    return path


def write_ipc_file(table: pa.Table, path: Path, chunk: int = 97) -> Path:
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=chunk)
    return path


def write_ipc_stream(table: pa.Table, path: Path, chunk: int = 89) -> Path:
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=chunk)
    return path


def write_parquet(table: pa.Table, path: Path, row_group_size: int = 150) -> Path:
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return path


def read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def assert_same_output(got: pa.Table, expected: pa.Table) -> None:
    """``got.equals(expected)``; where not, say where and by how much the outputs differ (last bits or
    a real difference), so that a failure in CI can be read."""
    if got.equals(expected):
        return
    assert got.schema == expected.schema and got.num_rows == expected.num_rows, (got.schema, expected.schema)
    out, ref = (_values(t.column("output").combine_chunks()).reshape(t.num_rows, -1) for t in (got, expected))
    rows = np.flatnonzero((out != ref).any(axis=1))
    first = int(rows[0]) if len(rows) else None
    where = "" if first is None else f", first at row {first} ({got.slice(first, 1).drop(['output']).to_pylist()[0]})"
    raise AssertionError(f"the outputs differ in {len(rows)} of {got.num_rows} rows{where}, by up to "
                         f"{float(np.abs(out - ref).max()):.3g}; other columns equal: "
                         f"{got.drop(['output']).equals(expected.drop(['output']))}")


def _values(column: pa.Array) -> np.ndarray:
    while pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
        column = column.flatten()
    return np.asarray(column)


def feed_directly(table: pa.Table, model: torch.nn.Module, batch_rows: int, **options) -> pa.Table:
    """What replay should produce: the runtime fed the table cut into ``batch_rows``-row batches."""
    runtime = sl.StreamRuntime(model, **options)
    batches = [runtime.feed(table.slice(start, batch_rows)) for start in range(0, table.num_rows, batch_rows)]
    return pa.Table.from_batches(batches)


def outputs(table: pa.Table) -> np.ndarray:
    column = table["output"].combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1)
