"""Replay inputs: Arrow IPC files, Arrow IPC streams, Parquet files and directories of them.

:func:`open_source` recognizes what it is given and returns a :class:`Source`, whose
:meth:`Source.batches` streams record batches of exactly ``batch_rows`` rows (the last one may be
shorter), starting at any row. Batch boundaries depend only on the absolute row position, so a replay
resumed at a batch boundary sees the very batches an uninterrupted run saw.

=========================== ===================================================================
input                       how it is read
=========================== ===================================================================
Arrow IPC file              memory-mapped, zero-copy; the map is reopened every 16 MiB so that
                            resident memory stays flat however large the file
Arrow IPC stream            read batch by batch (a file, or ``"-"`` for standard input)
Parquet file                row group by row group, only the needed columns
directory or glob pattern   a ``pyarrow.dataset`` of Arrow IPC files or Parquet files, one file
                            after the other in sorted path order (hidden and ``_`` files skipped)
Table / RecordBatch /       (Python API) used as they are
RecordBatchReader / list
=========================== ===================================================================

The format of a file is told by its first bytes (``ARROW1``, ``PAR1`` or an IPC stream message), not
its name. Total row counts are known for files and datasets (for the progress bar's ETA), not streams.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from streamlstm.errors import SchemaError, SourceError

__all__ = ["Source", "open_source", "rechunk"]

_MAP_WINDOW_BYTES = 16 << 20
_GLOB_CHARS = frozenset("*?[")

Reader = Callable[[int, "Sequence[str] | None"], Iterator[pa.RecordBatch]]


@dataclass
class Source:
    """An input to replay: its schema, its row count where cheap to know, and a way to read it.

    Attributes:
        description: what was opened, for messages and checkpoints (a path, a pattern or ``"-"``).
        schema: the schema of every batch.
        total_rows: the number of rows, or None where unknown without reading (streams).
        files: the files read, in order (empty for standard input and in-memory data).
        file_rows: the rows of each of ``files`` where known (files and datasets), else empty.
    """

    description: str
    schema: pa.Schema
    total_rows: int | None
    files: tuple[str, ...]
    _read: Reader
    file_rows: tuple[int, ...] = ()

    def where(self, row: int) -> str:
        """Input row ``row`` (counted from 0 over the whole input) as a message names it."""
        if len(self.file_rows) == len(self.files) > 1:
            index, within = _locate(self.file_rows, row)
            if index < len(self.files):
                return f"input row {row:,} (row {within:,} of {self.files[index]})"
        return f"input row {row:,} of {self.description}"

    def read(self, start_row: int, columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        """The input's batches as stored, from row ``start_row`` on (no checks, no re-chunking)."""
        return self._read(start_row, columns)

    def require_columns(self, names: Iterable[str | None]) -> None:
        """Raise :class:`SchemaError` naming the first of ``names`` the input lacks."""
        for name in names:
            if name is not None and self.schema.get_field_index(name) < 0:
                raise SchemaError(f"input {self.description} has no column {name!r}; its columns are "
                                  f"{self.schema.names}")

    def batches(self, batch_rows: int, *, start_row: int = 0,
                columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Batches of ``batch_rows`` rows (of ``columns`` only, if given) from row ``start_row`` on."""
        if batch_rows < 1:
            raise SourceError(f"`batch_rows` must be a positive integer, got {batch_rows}")
        return rechunk(self._checked(start_row, list(columns) if columns is not None else None), batch_rows)

    def _checked(self, start_row: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._read(start_row, columns)
        except (pa.ArrowException, OSError) as exc:  # a file damaged after its header, or gone
            raise SourceError(f"cannot read input {self.description}: {_reason(exc)}") from exc


def rechunk(batches: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Cut and join ``batches`` into batches of exactly ``batch_rows`` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, batch_rows - pending_rows)
            pending.append(batch.slice(0, take))
            pending_rows += take
            batch = batch.slice(take)
            if pending_rows == batch_rows:
                yield _join(pending)
                pending, pending_rows = [], 0
    if pending:
        yield _join(pending)


def _join(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def _skip(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """``batches`` without their first ``rows`` rows."""
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows) if rows else batch
        rows = 0


def _select(batch: pa.RecordBatch, columns: Sequence[str] | None) -> pa.RecordBatch:
    return batch if columns is None else batch.select(columns)


# -- Arrow IPC files ---------------------------------------------------------------------------------

def _locate(counts: Sequence[int], row: int) -> tuple[int, int]:
    """The chunk holding ``row`` (chunks of ``counts`` rows) and how many of its rows to skip."""
    index = 0
    while index < len(counts) and row >= counts[index]:
        row -= counts[index]
        index += 1
    return index, row


def _ipc_file(path: str) -> Source:
    with pa.memory_map(path) as handle:
        reader = pa.ipc.open_file(handle)
        counts = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        schema = reader.schema

    def read(start_row: int, columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        index, skip = _locate(counts, start_row)
        while index < len(counts):
            # A fresh map per window: pages of a map stay resident until it is unmapped, so one map of
            # the whole file would make resident memory grow with the file.
            handle = pa.memory_map(path)
            reader = pa.ipc.open_file(handle)
            mapped = 0
            while index < len(counts) and mapped < _MAP_WINDOW_BYTES:
                batch = reader.get_batch(index)
                mapped += batch.nbytes
                index += 1
                batch = batch.slice(skip) if skip else batch
                skip = 0
                yield _select(batch, columns)
            del reader, batch
            handle.close()

    return Source(path, schema, sum(counts), (path,), read, (sum(counts),))


# -- Arrow IPC streams -------------------------------------------------------------------------------

def _ipc_stream(path: str) -> Source:
    stdin = path == "-"
    handle = sys.stdin.buffer if stdin else pa.OSFile(path)
    try:
        reader = pa.ipc.open_stream(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        name = "standard input" if stdin else path
        raise SourceError(f"input {name} is not an Arrow IPC stream: {_reason(exc)}") from exc
    used = False

    def read(start_row: int, columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        nonlocal used
        if used:  # a stream can be read once
            raise SourceError(f"input {'standard input' if stdin else path} is a stream and was already read")
        used = True
        try:
            for batch in _skip(reader, start_row):
                yield _select(batch, columns)
        except pa.ArrowInvalid as exc:
            raise SourceError(f"input {'standard input' if stdin else path} is not a valid Arrow IPC stream: "
                              f"{_reason(exc)}") from exc

    return Source("-" if stdin else path, reader.schema, None, () if stdin else (path,), read)


# -- Parquet ---------------------------------------------------------------------------------------

def _parquet(path: str) -> Source:
    try:
        file = pq.ParquetFile(path)  # not memory-mapped: decoding copies anyway, and a map would stay resident
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"input {path} is not a readable Parquet file: {_reason(exc)}") from exc
    metadata = file.metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    schema = file.schema_arrow

    def read(start_row: int, columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        first, skip = _locate(groups, start_row)
        if first == len(groups):
            return
        reader = pq.ParquetFile(path)
        batches = reader.iter_batches(batch_size=65536, row_groups=range(first, len(groups)), columns=columns)
        yield from _skip(batches, skip)

    return Source(path, schema, metadata.num_rows, (path,), read, (metadata.num_rows,))


# -- directories and glob patterns -------------------------------------------------------------------

def _dataset_files(spec: str) -> list[str]:
    if os.path.isdir(spec):
        found = [os.path.join(root, name) for root, _, names in os.walk(spec) for name in names]
        found = [f for f in found if not any(part.startswith((".", "_")) for part in Path(f).relative_to(spec).parts)]
    else:
        found = [f for f in glob.glob(spec, recursive=True) if os.path.isfile(f)]
    if not found:
        raise SourceError(f"input {spec} {'is an empty directory' if os.path.isdir(spec) else 'matches no files'}")
    return sorted(found)


def _dataset(spec: str) -> Source:
    files = _dataset_files(spec)
    kinds = {path: _sniff(path) for path in files}
    if len(set(kinds.values())) > 1 or "stream" in kinds.values():
        found = ", ".join(f"{Path(p).name}: {k}" for p, k in list(kinds.items())[:4])
        raise SourceError(f"input {spec} must hold only Arrow IPC files or only Parquet files, found {found}")
    kind = kinds[files[0]]
    try:
        dataset = ds.dataset(files, format="ipc" if kind == "arrow" else "parquet")
        counts = [fragment.count_rows() for fragment in dataset.get_fragments()]
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"input {spec} cannot be read as one dataset: {_reason(exc)}") from exc
    opener = _ipc_file if kind == "arrow" else _parquet
    schema = dataset.schema

    def read(start_row: int, columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        skip = start_row
        for path, count in zip(files, counts):
            if skip >= count:
                skip -= count
                continue
            part = opener(path)
            part.require_columns(columns or ())
            _same_fields(part, schema, columns)
            yield from part.read(skip, columns)
            skip = 0

    return Source(spec, schema, sum(counts), tuple(files), read, tuple(counts))


def _same_fields(part: Source, schema: pa.Schema, columns: Sequence[str] | None) -> None:
    """Every file of a dataset must have the first file's column types (the output has one schema)."""
    for name in columns if columns is not None else schema.names:
        found, expected = part.schema.field(name).type, schema.field(name).type
        if found != expected:
            raise SourceError(f"input file {part.description} has column {name!r} of type {found}, but the "
                              f"dataset's first file has {expected}; every file must have the same types")


# -- recognizing an input ----------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _sniff(path: str) -> str:
    """``"arrow"``, ``"stream"`` or ``"parquet"`` from the first bytes of ``path``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise SourceError(f"cannot read input {path}: {exc.strerror or exc}") from exc
    if head.startswith(b"ARROW1"):
        return "arrow"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\xff\xff\xff\xff"):
        return "stream"
    shown = "an empty file" if not head else f"bytes {head!r}"
    raise SourceError(f"input {path} is not an Arrow IPC file or stream nor a Parquet file (starts with {shown})")


def _in_memory(data: Any) -> Source:
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        table = data

        def read_table(start_row: int, columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
            part = table.slice(start_row) if columns is None else table.slice(start_row).select(columns)
            yield from part.to_batches()

        return Source("<table>", table.schema, table.num_rows, (), read_table)
    if isinstance(data, pa.RecordBatchReader):
        reader = data
    else:
        batches = list(data)
        if not batches or not all(isinstance(b, pa.RecordBatch) for b in batches):
            raise SourceError("`source` must be a path, '-', a pyarrow Table, RecordBatch, RecordBatchReader or a "
                              f"non-empty list of RecordBatches, got {type(data).__name__}")
        return _in_memory(pa.Table.from_batches(batches))

    def read_reader(start_row: int, columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
        for batch in _skip(reader, start_row):
            yield _select(batch, columns)

    return Source("<reader>", reader.schema, None, (), read_reader)


def open_source(source: Any) -> Source:
    """Recognize ``source`` (see the module docstring) and open it for reading.

    Args:
        source: a path (``str`` or ``Path``) to a file or directory, a glob pattern, ``"-"`` for an Arrow
            IPC stream on standard input, or in-memory Arrow data.

    Returns:
        A :class:`Source`; nothing but the schema and row counts has been read.

    Raises:
        SourceError: the input is missing, unreadable, or neither Arrow nor Parquet.
    """
    if not isinstance(source, (str, os.PathLike)):
        return _in_memory(source)
    spec = os.fspath(source)
    if spec == "-":
        return _ipc_stream(spec)
    if os.path.isdir(spec) or (not os.path.exists(spec) and _GLOB_CHARS & set(spec)):
        return _dataset(spec)
    if not os.path.exists(spec):
        raise SourceError(f"input {spec} does not exist")
    kind = _sniff(spec)
    opener = {"arrow": _ipc_file, "stream": _ipc_stream, "parquet": _parquet}[kind]
    try:
        return opener(spec)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"input {spec} looks like {kind} but cannot be read: {_reason(exc)}") from exc
