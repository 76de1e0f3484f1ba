"""Runtime files: :func:`save_runtime` / :func:`load_runtime`, one Arrow IPC file, written atomically,
no pickle.

The file is :meth:`StreamRuntime.state_dict() <streamlstm.StreamRuntime.state_dict>` on disk. Schema
metadata:

- ``streamlstm.format`` = ``"stream_runtime"``, ``streamlstm.format_version`` = ``"2"``;
- ``streamlstm.runtime`` = JSON: :meth:`StreamRuntime.config() <streamlstm.StreamRuntime.config>`, the
  key kind (``"int"``/``"str"``/null), the counters and busy seconds;
- ``streamlstm.model`` = the model file bytes of :func:`streamlstm.save_model`.

The rows are the table of :meth:`StreamRuntime.export_streams() <streamlstm.StreamRuntime.export_streams>`
(one row per stream, columns documented in :mod:`streamlstm.runtime.transfer`), in record batches of at
most 65,536 rows.

Version 1 files (streamlstm 0.1) still load: they have no ``key_group`` column and store ``last_used``
and ``last_batch`` as absolute stamps instead of ``idle_rows`` and ``idle_batches``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from streamlstm.errors import ConfigError
from streamlstm.io.model_file import model_from_bytes, model_to_bytes, write_atomic
from streamlstm.runtime import StreamRuntime

__all__ = ["load_runtime", "read_metadata", "save_runtime"]

FORMAT_VERSION = 2
_READS = (1, 2)
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

    write_atomic(path, write)


def read_metadata(path: Any) -> dict[bytes, bytes]:
    """The schema metadata of a runtime file (``extra`` entries of :func:`save_runtime` included),
    without reading its streams."""
    try:
        with pa.memory_map(str(Path(path)), "r") as source:
            return pa.ipc.open_file(source).schema.metadata or {}
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"cannot read a stream runtime file at {str(path)!r}: {exc}") from exc


def _read(path: Any) -> tuple[dict[bytes, bytes], pa.Table]:
    try:
        with pa.memory_map(str(Path(path)), "r") as source:
            reader = pa.ipc.open_file(source)
            return reader.schema.metadata or {}, reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"cannot read a stream runtime file at {str(path)!r}: {exc}") from exc


def _version_1_streams(data: pa.Table, counters: dict[str, int]) -> pa.Table:
    """Absolute ``last_used``/``last_batch`` stamps as the ``idle_rows``/``idle_batches`` of version 2."""
    idle_rows = pc.subtract(pa.scalar(counters["rows"], pa.int64()), data.column("last_used"))
    idle_batches = pc.subtract(pa.scalar(counters["batches"], pa.int64()), data.column("last_batch"))
    data = data.drop_columns(["last_used", "last_batch"])
    return data.append_column("idle_rows", idle_rows).append_column("idle_batches", idle_batches)


def load_runtime(path: Any, *, device: Any = None, on_evict: Callable[[Any, Any], None] | None = None,
                 clock: Callable[[], float] | None = None) -> StreamRuntime:
    """Read a runtime written by :func:`save_runtime`; callables are not saved, so pass them again."""
    metadata, data = _read(path)
    if metadata.get(b"streamlstm.format") != b"stream_runtime":
        raise ConfigError(f"{str(path)!r} is not a stream runtime file (streamlstm.format is "
                          f"{metadata.get(b'streamlstm.format')!r})")
    version = int(metadata.get(b"streamlstm.format_version", b"0"))
    if version not in _READS:
        raise ConfigError(f"stream runtime format_version {version} is not supported (this streamlstm reads "
                          f"{', '.join(map(str, _READS))})")
    settings = json.loads(metadata[b"streamlstm.runtime"])
    model = model_from_bytes(metadata[b"streamlstm.model"], device=device)
    ttl = settings.pop("idle_ttl")
    ttl = None if ttl is None else (datetime.timedelta(seconds=ttl["seconds"]) if "seconds" in ttl else ttl["batches"])
    kind, counters, busy = settings.pop("key_kind"), settings.pop("counters"), settings.pop("busy_seconds")
    extra = {} if clock is None else {"clock": clock}
    runtime = StreamRuntime(model, idle_ttl=ttl, on_evict=on_evict, device=device, **settings, **extra)
    if version == 1:
        data = _version_1_streams(data, counters)
    if data.num_rows and len(runtime.model.state_dict()) == 0:
        raise ConfigError("the saved runtime holds streams but its model has no weights")
    runtime.load_state_dict({"version": 1, "config": runtime.config(), "model": runtime.model.state_dict(),
                             "streams": data, "counters": counters, "busy_seconds": busy, "key_kind": kind})
    return runtime
