"""Runtime files: format_version 3 (checksummed) round trips; files of streamlstm 0.1 (format_version 1) still load
and continue where they stopped (fixture written by tests/fixtures/generate_runtime_v1.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import streamlstm as sl
from streamlstm.errors import FileError
from streamlstm.io.checksum import TRAILER_SIZE, seal

V1 = Path(__file__).parent.parent / "fixtures" / "runtime_v1"


def read(path: Path) -> pa.RecordBatch:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).get_batch(0)


def outputs(batch: pa.RecordBatch) -> np.ndarray:
    column = batch.column("output")
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def test_a_version_1_file_loads_and_continues_like_the_runtime_that_wrote_it():
    metadata = pa.ipc.open_file(str(V1 / "runtime.arrow")).schema.metadata
    assert metadata[b"streamlstm.format_version"] == b"1"
    runtime = sl.load_runtime(V1 / "runtime.arrow")
    assert sorted(runtime.keys()) == ["a", "b", "c", "d"]
    assert runtime.stats()["rows"] == 7 and runtime.stats()["batches"] == 2
    expected = read(V1 / "next_outputs.arrow")
    got = runtime.feed(read(V1 / "next_batch.arrow"))
    assert got.schema.names == expected.schema.names
    np.testing.assert_allclose(outputs(got), outputs(expected), rtol=1e-5, atol=1e-6)
    streams = runtime.export_streams()
    np.testing.assert_array_equal(streams.column("key_group").to_numpy(),
                                  sl.key_group(streams.column("key"), runtime.key_groups))


def test_a_version_1_file_keeps_its_streams_times():
    runtime = sl.load_runtime(V1 / "runtime.arrow")
    late = read(V1 / "next_batch.arrow").slice(1, 1)   # stream "d" at time 9 ...
    runtime.feed(late)
    with pytest.raises(sl.errors.StreamError, match=r"time column 't' must increase strictly per stream"):
        runtime.feed(late)   # ... is not after 9


def test_version_3_round_trip_is_exact(tmp_path):
    runtime = sl.load_runtime(V1 / "runtime.arrow")
    path = tmp_path / "v3.arrow"
    sl.save_runtime(runtime, path)
    # An Arrow IPC file followed by the checksum trailer: pyarrow reads it given where the Arrow data ends.
    reader = pa.ipc.open_file(str(path), footer_offset=path.stat().st_size - TRAILER_SIZE)
    assert reader.schema.metadata[b"streamlstm.format_version"] == b"3"
    again = sl.load_runtime(path)
    following = read(V1 / "next_batch.arrow")
    np.testing.assert_array_equal(outputs(again.feed(following)), outputs(runtime.feed(following)))
    assert again.stats()["rows"] == runtime.stats()["rows"]


def test_an_unknown_format_version_is_refused(tmp_path):
    table = pa.ipc.open_file(str(V1 / "runtime.arrow")).read_all()
    metadata = {**table.schema.metadata, b"streamlstm.format_version": b"99"}
    with pa.ipc.new_file(str(tmp_path / "future.arrow"), table.schema.with_metadata(metadata)) as writer:
        writer.write_table(table)
    with pytest.raises(FileError, match=r"future.arrow' has stream_runtime format_version '99'; this streamlstm "
                                        r"reads 1, 2, 3"):
        sl.load_runtime(tmp_path / "future.arrow")


def _hand_made(tmp_path: Path, edit) -> Path:
    """A runtime file with a valid checksum whose streams table was changed by ``edit(table)``."""
    runtime = sl.load_runtime(V1 / "runtime.arrow")
    sl.save_runtime(runtime, tmp_path / "good.arrow")
    size = (tmp_path / "good.arrow").stat().st_size
    table = pa.ipc.open_file(str(tmp_path / "good.arrow"), footer_offset=size - TRAILER_SIZE).read_all()
    table = edit(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    path = tmp_path / "hand_made.arrow"
    path.write_bytes(seal(sink.getvalue().to_pybytes()))
    return path


@pytest.mark.parametrize("case, message", [
    ("duplicate key", r"StateError: streams table has key 'a' more than once"),
    ("null key", r"streams column 'key' has nulls"),
])
def test_a_hand_made_file_with_bad_keys_is_refused(tmp_path, case, message):
    def edit(table):
        if case == "duplicate key":
            return pa.concat_tables([table, table.slice(0, 1)])
        keys = pa.array([None, *table.column("key").to_pylist()[1:]], table.schema.field("key").type)
        return table.set_column(0, table.schema.field("key"), keys)

    with pytest.raises(FileError, match=f"hand_made.arrow' holds a runtime that cannot be loaded: .*{message}"):
        sl.load_runtime(_hand_made(tmp_path, edit))
