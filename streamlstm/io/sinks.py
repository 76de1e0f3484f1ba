"""Replay outputs: Arrow IPC files and Parquet files, written incrementally, finished by a rename.

Nothing is ever written under the final name until the file is complete: a run writes
``OUTPUT.partial`` beside it, syncs it to disk and renames it over ``OUTPUT`` at the very end, so a
failed or killed run never leaves a truncated file that looks finished.

Three writers:

- :class:`FileSink` writes the output file directly (a run without checkpoints).
- :class:`ResumableArrowSink` (Arrow output with checkpoints) writes ``OUTPUT.partial`` in place and
  :meth:`~ResumableArrowSink.sync` flushes it to disk at each checkpoint. An IPC file is an IPC stream
  after its 8 magic bytes, so a resumed run reads the first ``output_rows`` rows back from the partial
  file into a fresh one (dropping rows written after the checkpoint) and goes on appending. The
  checkpoint records the length and CRC-32 of the durable prefix; resuming checks them first.
- :class:`PartSink` (Parquet output with checkpoints: a Parquet file without its footer cannot be
  read back) writes the output of each checkpoint interval to its own Arrow IPC stream part
  under the checkpoint directory; :meth:`PartSink.seal` makes the current part durable (checksum
  trailer + sync + rename) so that a checkpoint can count its rows. Rows written after the last
  checkpoint live only in an unsealed part, which a resumed run deletes and recomputes: no row is lost
  or repeated. At the end :meth:`PartSink.finish` streams the parts, in order, into the output file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streamlstm.errors import FileError, SourceError
from streamlstm.io.checksum import append_trailer, check_file, crc32_file
from streamlstm.io.paths import require_directory

__all__ = ["FileSink", "PartSink", "ResumableArrowSink", "fsync_dir", "output_format", "partial_path"]

_FORMATS = {".arrow": "arrow", ".ipc": "arrow", ".feather": "arrow", ".parquet": "parquet", ".pq": "parquet"}
_PART = re.compile(r"part-(\d{6})\.arrows(\.tmp)?$")


def output_format(path: str | os.PathLike, format: str | None = None) -> str:
    """``"arrow"`` or ``"parquet"``: ``format`` if given, else told by the extension of ``path``."""
    if format is not None:
        if format not in ("arrow", "parquet"):
            raise SourceError(f"`format` must be 'arrow' or 'parquet', got {format!r}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise SourceError(f"cannot tell the output format from the name {os.fspath(path)!r}; use the extension "
                          f".arrow or .parquet, or pass format 'arrow' or 'parquet' (--format)")
    return _FORMATS[suffix]


def partial_path(path: str | os.PathLike) -> Path:
    """Where the output is written until it is complete."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or deletion in directory ``path`` durable."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


class _Writer:
    """An Arrow IPC file or Parquet writer opened on first use, when the schema is known."""

    def __init__(self, path: Path, format: str) -> None:
        self.path, self.format = path, format
        self._writer: pa.ipc.RecordBatchFileWriter | pq.ParquetWriter | None = None
        self.rows = 0

    @property
    def started(self) -> bool:
        """Whether a batch was written (the file exists, with its schema)."""
        return self._writer is not None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            try:
                require_directory(self.path, "output")
                if self.format == "arrow":
                    self._writer = pa.ipc.new_file(str(self.path), batch.schema)
                else:
                    self._writer = pq.ParquetWriter(str(self.path), batch.schema)
            except OSError as exc:
                raise SourceError(f"cannot write output {self.path}: {exc.strerror or exc}") from exc
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
        self.path.unlink(missing_ok=True)


class FileSink:
    """Writes the output file ``path`` in ``format`` through ``path.partial``; renamed by :meth:`finish`."""

    def __init__(self, path: str | os.PathLike, format: str) -> None:
        self.path = Path(path)
        self._writer = _Writer(partial_path(self.path), format)

    @property
    def rows(self) -> int:
        return self._writer.rows

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write(batch)

    def finish(self, empty: pa.Schema | None = None) -> Path:
        """Close, sync and rename into place; ``empty`` is the schema written when no row came."""
        if not self._writer.started and empty is not None:
            self._writer.write(pa.RecordBatch.from_pylist([], schema=empty))
        self._writer.close()
        _fsync_file(self._writer.path)
        os.replace(self._writer.path, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        self._writer.abort()


class PartSink:
    """Output parts under ``directory``: part ``k`` is ``part-{k:06d}.arrows`` once sealed."""

    def __init__(self, directory: str | os.PathLike, first_part: int = 0) -> None:
        self.directory = Path(directory)
        self.next_part = first_part
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._tmp: Path | None = None
        self._checked = True   # parts of a format_version 1 checkpoint have no trailer

    def _name(self, index: int) -> Path:
        return self.directory / f"part-{index:06d}.arrows"

    def resume(self, record: Any) -> None:
        """Keep the first ``record.parts`` sealed parts, which must hold ``record.output_rows`` rows (and
        carry valid checksums, for records of format_version 2); delete the rest."""
        self._checked = record.format_version >= 2
        self.discard_after(record.parts)
        self.next_part = record.parts
        written = self.part_rows()
        if written != record.output_rows:
            raise FileError(f"checkpoint in {self.directory.parent} is damaged: it counts {record.output_rows:,} "
                            f"output rows but its parts hold {written:,}; delete {self.directory.parent} to start "
                            f"over")

    def sync(self, record: Any) -> None:
        """Seal the current part and count the sealed parts in ``record``."""
        record.parts = self.seal()

    def discard_after(self, parts: int) -> None:
        """Delete unsealed parts and parts numbered ``parts`` or higher (written after the checkpoint)."""
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            match = _PART.match(path.name)
            if match and (match.group(2) or int(match.group(1)) >= parts):
                path.unlink()
        fsync_dir(self.directory)

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._tmp = self._name(self.next_part).with_suffix(".arrows.tmp")
            self._writer = pa.ipc.new_stream(str(self._tmp), batch.schema)
        self._writer.write_batch(batch)

    def seal(self) -> int:
        """Make the current part durable; returns the number of sealed parts."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            append_trailer(self._tmp)   # fsyncs
            os.replace(self._tmp, self._name(self.next_part))
            fsync_dir(self.directory)
            self.next_part += 1
        return self.next_part

    def _batches(self, index: int) -> Iterator[pa.RecordBatch]:
        """The batches of sealed part ``index``, its checksum checked first, each batch fully validated."""
        path = self._name(index)
        try:
            if self._checked:
                check_file(path)
            with pa.OSFile(str(path)) as handle:  # not mapped: resident memory stays flat
                for batch in pa.ipc.open_stream(handle):
                    batch.validate(full=True)
                    yield batch
        except (OSError, pa.ArrowException, ValueError) as exc:
            if isinstance(exc, FileError):
                raise
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip()
            raise FileError(f"output part {path} is damaged or missing: {reason}; delete "
                            f"{self.directory.parent} to start over") from exc

    def part_rows(self) -> int:
        """Rows in the sealed parts (each part's checksum checked)."""
        return sum(batch.num_rows for index in range(self.next_part) for batch in self._batches(index))

    def finish(self, path: str | os.PathLike, format: str, empty: pa.Schema | None = None) -> Path:
        """Stream every sealed part, in order, into the output file ``path``."""
        sink = FileSink(path, format)
        try:
            for index in range(self.next_part):
                for batch in self._batches(index):
                    sink.write(batch)
            return sink.finish(empty)
        except BaseException:
            sink.abort()
            raise

    def abort(self, keep: bool = False) -> None:
        """Drop the unsealed part (sealed parts stay for the checkpoint; ``keep`` is for the protocol)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the part is being thrown away
                pass
            self._writer = None
            self._tmp.unlink(missing_ok=True)

    def remove_all(self) -> None:
        self.abort()
        self.discard_after(0)


class ResumableArrowSink:
    """The Arrow IPC output of a checkpointed run, written in place as ``path.partial`` (see above)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self._file = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._schema: pa.Schema | None = None
        self.rows = 0
        self._durable = (0, 0)   # (bytes, CRC-32) of the prefix made durable by the last sync

    def resume(self, record: Any) -> None:
        """Keep the first ``record.output_rows`` rows of an earlier run's partial file (none: start
        afresh), after checking that its first ``record.output_bytes`` bytes match ``record.output_crc``."""
        rows = record.output_rows
        if self.partial.is_dir():
            raise SourceError(f"{self.partial} (where the output is written until complete) is a directory")
        if rows == 0:
            self.partial.unlink(missing_ok=True)
            return
        if not self.partial.is_file():
            raise FileError(f"the checkpoint counts {rows:,} output rows in {self.partial}, which is missing; "
                            f"delete the checkpoint directory to start over")
        if record.format_version >= 2:
            self._check_prefix(record.output_bytes, record.output_crc)
        fresh = self.partial.with_name(self.partial.name + ".resume")
        try:
            with open(self.partial, "rb") as old:
                old.seek(8)  # "ARROW1" and padding: what follows is an IPC stream
                reader = pa.ipc.open_stream(old)
                self._open(fresh, reader.schema)
                while self.rows < rows:
                    batch = reader.read_next_batch()
                    batch.validate(full=True)
                    self.write(batch.slice(0, rows - self.rows))
        except (StopIteration, pa.ArrowException, ValueError, OSError, MemoryError) as exc:  # a version 1 file
            self.abort()
            fresh.unlink(missing_ok=True)
            raise FileError(f"{self.partial} is damaged or holds fewer than the {rows:,} output rows the checkpoint "
                            f"counts ({type(exc).__name__}); delete the checkpoint directory to start over") from exc
        self._flush()
        self._durable = (self._file.tell(), crc32_file(fresh, 0, self._file.tell()))
        os.replace(fresh, self.partial)  # the open file follows the rename
        fsync_dir(self.partial.parent)

    def _check_prefix(self, length: int, crc: int) -> None:
        size = self.partial.stat().st_size
        computed = crc32_file(self.partial, 0, length) if size >= length else None
        if computed != crc:
            found = f"{size:,} bytes" if computed is None else f"crc32 {computed:08x}"
            raise FileError(f"{self.partial} is damaged: the checkpoint counts its first {length:,} bytes with "
                            f"crc32 {crc:08x}, found {found}; delete the checkpoint directory to start over")

    def _open(self, path: Path, schema: pa.Schema) -> None:
        try:
            require_directory(self.path, "output")
            self._file = open(path, "wb")
        except OSError as exc:
            raise SourceError(f"cannot write output {path}: {exc.strerror or exc}") from exc
        self._writer = pa.ipc.new_file(self._file, schema)
        self._schema = schema

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._open(self.partial, batch.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def sync(self, record: Any) -> None:
        """Make every row written so far durable; count its bytes and their CRC-32 in ``record``."""
        if self._file is not None:
            self._flush()
            length, crc = self._durable
            end = self._file.tell()
            self._durable = (end, crc32_file(self.partial, length, end, crc))
        record.parts = 0
        record.output_bytes, record.output_crc = self._durable

    def finish(self, path: str | os.PathLike, format: str, empty: pa.Schema | None = None) -> Path:
        if self._writer is None:
            self._open(self.partial, empty)
        self._writer.close()
        self._writer = None
        self._flush()
        self._file.close()
        self._file = None
        os.replace(self.partial, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abort(self, keep: bool = False) -> None:
        """Close; delete the partial file unless ``keep`` (a checkpoint counts rows in it)."""
        if self._file is not None:
            self._file.close()  # no footer: the partial file stays an IPC stream after its magic bytes
            self._file = self._writer = None
        if not keep:
            self.partial.unlink(missing_ok=True)
