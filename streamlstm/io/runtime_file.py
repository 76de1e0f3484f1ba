"""Runtime files: :func:`save_runtime` / :func:`load_runtime`, one Arrow IPC file, written atomically,
no pickle.

The file is :meth:`StreamRuntime.state_dict() <streamlstm.StreamRuntime.state_dict>` on disk. Schema
metadata:

- ``streamlstm.format`` = ``"stream_runtime"``, ``streamlstm.format_version`` = ``"3"``;
- ``streamlstm.runtime`` = JSON: :meth:`StreamRuntime.config() <streamlstm.StreamRuntime.config>`, the
  key kind (``"int"``/``"str"``/null), the counters and busy seconds;
- ``streamlstm.model`` = the model file bytes of :func:`streamlstm.save_model`.

The rows are the table of :meth:`StreamRuntime.export_streams() <streamlstm.StreamRuntime.export_streams>`
(one row per stream, columns documented in :mod:`streamlstm.runtime.transfer`), in record batches of at
most 65,536 rows. The Arrow file is followed by the checksum trailer of :mod:`streamlstm.io.checksum`.

Loading checks, in order: the trailer (before any parsing), Arrow's full validation of every array,
the format and version, then the content: the settings JSON, the embedded model file (checked the
same way), and the streams (unique non-null keys, carries of the model's sizes, finite values,
bookkeeping columns) through :meth:`StreamRuntime.load_state_dict`. Any failure is one
:class:`~streamlstm.errors.FileError` naming the file and what is wrong; nothing is half-loaded.

Files without a trailer still load: version 2 files, and version 1 files (streamlstm 0.1), which have
no ``key_group`` column and store ``last_used`` and ``last_batch`` as absolute stamps instead of
``idle_rows`` and ``idle_batches``. They get every check but the checksum.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from streamlstm.errors import ConfigError, FileError
from streamlstm.io.checksum import decoding, load_ipc, sealed
from streamlstm.io.model_file import model_from_bytes, model_to_bytes, write_atomic
from streamlstm.runtime import StreamRuntime

__all__ = ["load_runtime", "read_metadata", "save_runtime"]

FORMAT_VERSION = 3
_READS = (1, 2, 3)
_SEALED_SINCE = 3   # the first version with a checksum trailer
_CHUNK = 65536


def save_runtime(runtime: StreamRuntime, path: Any, *, extra: dict[bytes, bytes] | None = None) -> None:
    """Write the runtime's model, streams and counters to ``path`` atomically (format above);
    ``extra`` metadata entries (keys not starting with ``streamlstm.format``, ``streamlstm.runtime``
    or ``streamlstm.model``) are stored beside them, e.g. a StreamTrainer's optimizer state."""
    state = runtime.state_dict()
    settings = dict(state["config"], key_kind=state["key_kind"], counters=state["counters"],
                    busy_seconds=state["busy_seconds"])
    metadata = {b"streamlstm.format": b"stream_runtime", b"streamlstm.format_version": str(FORMAT_VERSION).encode(),
                b"streamlstm.runtime": json.dumps(settings).encode(),
                b"streamlstm.model": model_to_bytes(runtime.model)}
    clash = set(extra or {}) & set(metadata)
    if clash:
        raise ConfigError(f"`extra` must not replace the runtime file's own metadata, got {sorted(clash)}")
    metadata.update(extra or {})
    streams: pa.Table = state["streams"]
    schema = streams.schema.with_metadata(metadata)

    def write(sink: Any) -> None:
        with pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(streams.replace_schema_metadata(metadata), max_chunksize=_CHUNK)

    write_atomic(path, sealed(write))


def read_metadata(path: Any) -> dict[bytes, bytes]:
    """The schema metadata of a runtime file (``extra`` entries of :func:`save_runtime` included), after
    the same checks as :func:`load_runtime` (checksum, full validation).

    Raises:
        FileError: the file is damaged or not a runtime file.
    """
    return _read(path)[1]


def _read(path: Any) -> tuple[int, dict[bytes, bytes], pa.Table]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FileError(f"cannot read a stream runtime file at {str(path)!r}: {exc.strerror or exc}") from exc
    return load_ipc(data, f"stream runtime file {str(path)!r}", b"stream_runtime", _READS, _SEALED_SINCE)


def _version_1_streams(data: pa.Table, counters: dict[str, int]) -> pa.Table:
    """Absolute ``last_used``/``last_batch`` stamps as the ``idle_rows``/``idle_batches`` of version 2."""
    idle_rows = pc.subtract(pa.scalar(counters["rows"], pa.int64()), data.column("last_used"))
    idle_batches = pc.subtract(pa.scalar(counters["batches"], pa.int64()), data.column("last_batch"))
    data = data.drop_columns(["last_used", "last_batch"])
    return data.append_column("idle_rows", idle_rows).append_column("idle_batches", idle_batches)


def load_runtime(path: Any, *, device: Any = None, on_evict: Callable[[Any, Any], None] | None = None,
                 clock: Callable[[], float] | None = None) -> StreamRuntime:
    """Read a runtime written by :func:`save_runtime`; callables are not saved, so pass them again.

    Raises:
        FileError: the file is damaged, not a runtime file, or of an unsupported ``format_version``.
    """
    version, metadata, data = _read(path)
    name = f"stream runtime file {str(path)!r}"
    with decoding(name, "a runtime"):
        settings = json.loads(metadata[b"streamlstm.runtime"])
        model = model_from_bytes(metadata[b"streamlstm.model"], device=device, name=f"{name} (its model)")
        ttl = settings.pop("idle_ttl")
        ttl = None if ttl is None else (datetime.timedelta(seconds=ttl["seconds"]) if "seconds" in ttl
                                        else ttl["batches"])
        kind, counters, busy = settings.pop("key_kind"), settings.pop("counters"), settings.pop("busy_seconds")
        extra = {} if clock is None else {"clock": clock}
        runtime = StreamRuntime(model, idle_ttl=ttl, on_evict=on_evict, device=device, **settings, **extra)
        if version == 1:
            data = _version_1_streams(data, counters)
        if data.num_rows and len(runtime.model.state_dict()) == 0:
            raise ValueError("the saved runtime holds streams but its model has no weights")
        runtime.load_state_dict({"version": 1, "config": runtime.config(), "model": runtime.model.state_dict(),
                                 "streams": data, "counters": counters, "busy_seconds": busy, "key_kind": kind})
    return runtime
