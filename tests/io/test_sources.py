"""Replay inputs: every format, re-chunking to fixed row positions, starting rows, and errors."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replay_data import make_table, write_ipc_file, write_ipc_stream, write_parquet

from streamlstm.errors import SchemaError, SourceError
from streamlstm.io.sources import open_source, rechunk


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_table(streams=7, steps=50)


@pytest.fixture(params=["arrow", "stream", "parquet", "directory", "glob", "memory"])
def source_spec(request, table, tmp_path):
    kind = request.param
    if kind == "arrow":
        return write_ipc_file(table, tmp_path / "in.arrow"), table.num_rows
    if kind == "stream":
        return write_ipc_stream(table, tmp_path / "in.arrows"), None
    if kind == "parquet":
        return write_parquet(table, tmp_path / "in.parquet"), table.num_rows
    parts = tmp_path / "parts"
    parts.mkdir()
    # Sorted path order decides the order, not creation order.
    write_ipc_file(table.slice(200), parts / "part-2.arrow")
    write_ipc_file(table.slice(0, 120), parts / "part-0.arrow")
    write_ipc_file(table.slice(120, 80), parts / "part-1.arrow")
    (parts / "_SUCCESS").write_text("")
    if kind == "directory":
        return parts, table.num_rows
    if kind == "glob":
        return str(parts / "part-*.arrow"), table.num_rows
    return table, table.num_rows


@pytest.mark.parametrize("start_row", [0, 130, 349, 350])
def test_every_input_kind_reads_the_rows_in_order_in_fixed_batches(source_spec, table, start_row):
    spec, total = source_spec
    source = open_source(spec)
    assert source.total_rows == total
    batches = list(source.batches(60, start_row=start_row, columns=["stream_id", "x"]))
    assert [b.num_rows for b in batches[:-1]] == [60] * (len(batches) - 1)
    got = pa.Table.from_batches(batches, schema=table.select(["stream_id", "x"]).schema)
    assert got.equals(table.slice(start_row).select(["stream_id", "x"]))


def test_batches_start_at_the_same_row_positions_when_resumed(table, tmp_path):
    source = open_source(write_parquet(table, tmp_path / "in.parquet", row_group_size=33))
    whole = list(source.batches(50))
    assert list(source.batches(50, start_row=150)) == whole[3:]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=12), batch_rows=st.integers(1, 25))
def test_rechunk_cuts_at_multiples_of_batch_rows(sizes, batch_rows):
    pieces, start = [], 0
    for size in sizes:
        pieces.append(pa.record_batch({"v": pa.array(range(start, start + size), pa.int64())}))
        start += size
    out = list(rechunk(pieces, batch_rows))
    assert all(b.num_rows == batch_rows for b in out[:-1])
    assert sum((b.column(0).to_pylist() for b in out), []) == list(range(sum(sizes)))


def test_missing_column_is_named(table, tmp_path):
    source = open_source(write_ipc_file(table, tmp_path / "in.arrow"))
    with pytest.raises(SchemaError, match="no column 'sensor'.*its columns are"):
        source.require_columns(["stream_id", "sensor"])


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("text", "not an Arrow IPC file or stream nor a Parquet file"),
    ("empty", "an empty file"),
    ("empty_dir", "empty directory"),
    ("no_match", "matches no files"),
    ("mixed", "only Arrow IPC files or only Parquet files"),
    ("truncated", "cannot be read|cannot read"),
])
def test_unreadable_inputs_raise_source_error(case, message, table, tmp_path):
    path = tmp_path / "in.arrow"
    if case == "text":
        path.write_text("stream_id,x\n1,2\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "empty_dir":
        path = tmp_path / "nothing"
        path.mkdir()
    elif case == "no_match":
        path = tmp_path / "*.parquet"
    elif case == "mixed":
        path = tmp_path / "mixed"
        path.mkdir()
        write_ipc_file(table, path / "a.arrow")
        write_parquet(table, path / "b.parquet")
    elif case == "truncated":
        data = write_ipc_file(table, tmp_path / "whole.arrow").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=message):
        list(open_source(path).batches(100))
