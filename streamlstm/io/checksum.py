"""Checksummed files: every file streamlstm writes ends with a trailer that a reader checks first.

The trailer is 44 ASCII bytes appended to the content::

    \\nstreamlstm-crc32 <crc: 8 hex digits> <content length: 16 hex digits>\\n

``crc`` is the CRC-32 of the content (every byte before the trailer). A reader checks the trailer,
the length and the CRC **before** it parses anything, so a damaged file raises
:class:`streamlstm.errors.FileError` instead of being parsed: no crash in a parser fed random bytes,
and no silent load of other content. The content itself is unchanged (an Arrow IPC file, a JSON
record, an IPC stream): ``pyarrow.ipc.open_file(path, footer_offset=size - 44)`` reads an Arrow file
directly, and an IPC stream reader stops at the end-of-stream marker before the trailer.

Which checksum. CRC-32 (``zlib.crc32``, the standard library) detects every error burst up to 32 bits
and every odd number of flipped bits, like the CRC-32C that Kafka and RocksDB use; the two differ
only in speed. ``zlib.crc32`` ran at about 0.8 GB/s on a loaded shared machine (SHA-256 0.3 GB/s,
BLAKE2b 0.1 GB/s), far faster than the Arrow and torch work of a save or load, so a third-party
CRC-32C package (several GB/s with SSE4.2) would add a dependency for no visible gain. The checksum
guards against damage (bit rot, truncation, a torn copy), not against a deliberate forgery: anyone who
can write the file can write a matching trailer.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from streamlstm.errors import FileError

__all__ = ["TRAILER_SIZE", "append_trailer", "check_file", "crc32_file", "decoding", "fingerprint", "has_trailer",
           "load_ipc", "seal", "sealed", "unseal"]

TRAILER_SIZE = 44
_MAGIC = b"\nstreamlstm-crc32 "
_TRAILER = re.compile(rb"\nstreamlstm-crc32 ([0-9a-f]{8}) ([0-9a-f]{16})\n")
_CHUNK = 1 << 20


def _trailer(crc: int, length: int) -> bytes:
    return _MAGIC + f"{crc:08x} {length:016x}\n".encode()


def seal(content: bytes) -> bytes:
    """``content`` followed by its trailer."""
    return bytes(content) + _trailer(zlib.crc32(content), len(content))


def has_trailer(data: bytes | memoryview) -> bool:
    """Whether ``data`` ends with something that starts like a trailer (then it must be a valid one)."""
    return len(data) >= TRAILER_SIZE and bytes(data[-TRAILER_SIZE:-TRAILER_SIZE + len(_MAGIC)]) == _MAGIC


def _parse(path: Any, tail: bytes, size: int) -> tuple[int, int]:
    """The stored (crc, content length) of a file of ``size`` bytes ending with ``tail``."""
    match = _TRAILER.fullmatch(tail)
    if match is None:
        raise FileError(f"{os.fspath(path)} is damaged: its checksum trailer is unreadable")
    crc, length = int(match.group(1), 16), int(match.group(2), 16)
    if length != size - TRAILER_SIZE:
        raise FileError(f"{os.fspath(path)} is damaged: its trailer counts {length:,} bytes of content, the file "
                        f"holds {size - TRAILER_SIZE:,} (truncated or extended)")
    return crc, length


def _mismatch(path: Any, stored: int, computed: int) -> FileError:
    return FileError(f"{os.fspath(path)} is damaged: its checksum does not match its content (stored crc32 "
                     f"{stored:08x}, computed {computed:08x})")


def unseal(data: bytes | memoryview, path: Any) -> memoryview | None:
    """The content of ``data`` (a whole file's bytes) once its trailer checks out; None when it has no
    trailer (a file written before checksums: the caller decides whether its format allows that).

    Raises:
        FileError: a trailer is there but unreadable, or the length or the CRC do not match.
    """
    if not has_trailer(data):
        return None
    view = memoryview(data)
    crc, length = _parse(path, bytes(view[-TRAILER_SIZE:]), len(view))
    content = view[:length]
    computed = zlib.crc32(content)
    if computed != crc:
        raise _mismatch(path, crc, computed)
    return content


def crc32_file(path: str | os.PathLike, start: int = 0, end: int | None = None, crc: int = 0) -> int:
    """The CRC-32 of bytes ``start:end`` of ``path`` (continuing ``crc``), read in 1 MiB pieces."""
    with open(path, "rb") as handle:
        handle.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            piece = handle.read(_CHUNK if left is None else min(_CHUNK, left))
            if not piece:
                break
            crc = zlib.crc32(piece, crc)
            if left is not None:
                left -= len(piece)
        if left:
            raise FileError(f"{os.fspath(path)} is damaged: it ends {left:,} bytes early")
    return crc


def check_file(path: str | os.PathLike) -> int:
    """Check the trailer of the file ``path`` without reading it whole; returns its content length.

    Raises:
        FileError: no trailer, or the length or the CRC do not match.
        OSError: the file cannot be read.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        handle.seek(max(size - TRAILER_SIZE, 0))
        tail = handle.read()
    if not has_trailer(tail):
        raise FileError(f"{os.fspath(path)} is damaged or truncated: it does not end with a checksum trailer")
    crc, length = _parse(path, tail, size)
    computed = crc32_file(path, 0, length)
    if computed != crc:
        raise _mismatch(path, crc, computed)
    return length


class _Counting:
    """A binary sink that passes writes on and keeps the CRC and length of what went through."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink, self.crc, self.length = sink, 0, 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.crc = zlib.crc32(view, self.crc)
        self.length += view.nbytes
        return self._sink.write(view)

    def flush(self) -> None:
        self._sink.flush()


def sealed(write: Callable[[Any], None]) -> Callable[[BinaryIO], None]:
    """A writer for :func:`streamlstm.io.model_file.write_atomic`: ``write(sink)``, then the trailer."""

    def write_sealed(sink: BinaryIO) -> None:
        counting = _Counting(sink)
        write(counting)
        sink.write(_trailer(counting.crc, counting.length))

    return write_sealed


def append_trailer(path: str | os.PathLike) -> None:
    """Append the trailer of the file ``path``'s current content (reading it back once)."""
    length = Path(path).stat().st_size
    crc = crc32_file(path, 0, length)
    with open(path, "ab") as handle:
        handle.write(_trailer(crc, length))
        handle.flush()
        os.fsync(handle.fileno())


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_ipc(data: bytes | memoryview, name: str, kind: bytes, reads: tuple[int, ...],
             sealed_since: int) -> tuple[int, dict[bytes, bytes], pa.Table]:
    """Check and read the Arrow IPC file ``data`` of format ``kind``: the trailer first, then the IPC
    structure, Arrow's full validation of every array, the format and the ``format_version`` (one of
    ``reads``; versions from ``sealed_since`` on must carry a trailer). Returns (version, schema
    metadata, table); only then may the caller interpret the content.

    Raises:
        FileError: naming ``name`` and what is wrong.
    """
    content = unseal(data, name)
    try:
        reader = pa.ipc.open_file(pa.py_buffer(data if content is None else content))
        metadata = reader.schema.metadata or {}
        table = reader.read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FileError(f"{name} is not a readable Arrow IPC file (damaged, truncated or another kind of "
                        f"file): {_reason(exc)}") from exc
    found = metadata.get(b"streamlstm.format")
    if found != kind:
        raise FileError(f"{name} is not a streamlstm {kind.decode()} file (streamlstm.format is {found!r})")
    raw = metadata.get(b"streamlstm.format_version", b"")
    version = int(raw) if raw.isdigit() and len(raw) < 6 else None
    if version not in reads:
        raise FileError(f"{name} has {kind.decode()} format_version {raw.decode(errors='replace')!r}; this "
                        f"streamlstm reads {', '.join(map(str, reads))}")
    if content is None and version >= sealed_since:
        raise FileError(f"{name} is damaged or truncated: format_version {version} files end with a checksum "
                        f"trailer and this one does not")
    return version, metadata, table


@contextlib.contextmanager
def decoding(name: str, what: str, hint: str = "") -> Iterator[None]:
    """Turn any error while interpreting checked content into one :class:`FileError` naming ``name``
    (``hint``, if any, ends the message)."""
    try:
        yield
    except FileError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the content makes a parser raise is one file error
        raise FileError(f"{name} holds {what} that cannot be loaded: {_reason(exc)}{hint}") from exc


def fingerprint(path: str | os.PathLike, block: int = _CHUNK) -> list[Any]:
    """What identifies an input file cheaply, however large: ``[size, mtime_ns, crc]`` where ``crc``
    is the CRC-32 of its first and last ``block`` bytes. A file rewritten in place is caught by its
    new mtime even when its size, head and tail are unchanged."""
    status = os.stat(path)
    size = status.st_size
    crc = crc32_file(path, 0, min(size, block))
    if size > block:
        crc = crc32_file(path, max(block, size - block), size, crc)
    return [size, status.st_mtime_ns, crc]
