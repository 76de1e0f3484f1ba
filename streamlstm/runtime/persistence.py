"""``StreamRuntime.save`` / ``StreamRuntime.load``: one Arrow IPC file, written atomically, no pickle.

Format (``format_version`` 1). Schema metadata:

- ``streamlstm.format`` = ``"stream_runtime"``, ``streamlstm.format_version`` = ``"1"``;
- ``streamlstm.runtime`` = JSON: the constructor settings (columns, mode, late, allow_nonfinite,
  ``idle_ttl`` as ``{"batches": n}`` or ``{"seconds": s}``, max_streams, return_state, capacity), the
  key kind (``"int"``/``"str"``/null), the counters and busy seconds;
- ``streamlstm.model`` = the model file bytes of :func:`streamlstm.save_model`.

One row per stream held, in record batches of at most 65,536 rows:

=================== ======================================================================
``key``             int64 or large_string
``last_time``       the time column's type, null when the stream has no time yet (only with
                    a time column)
``last_used``       int64 row stamp (LRU order); ``last_batch`` int64 batch number
``idle_seconds``    float64 seconds since the stream was last fed (``clock`` differs per process)
``has_output_<s>``  bool per recurrent layer ``s``: the stream has had a real step (so a masked
                    step repeats ``h``)
``h_<i>``, ``c_<i>`` ``FixedSizeList<float32|float64>[units]`` per LSTM cell ``i`` in model order
=================== ======================================================================
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from streamlstm.errors import ConfigError
from streamlstm.io.model_file import model_from_bytes, model_to_bytes, write_atomic
from streamlstm.runtime.keys import KeyIndex
from streamlstm.runtime.schema import time_values

__all__ = ["load_runtime", "save_runtime"]

FORMAT_VERSION = 1
_CHUNK = 65536


def _settings(rt: Any) -> dict[str, Any]:
    cols = rt.columns
    ttl = rt._eviction.idle_ttl
    return {
        "key": cols.key, "features": cols.features if isinstance(cols.features, str) else list(cols.features),
        "mask": cols.mask, "reset": cols.reset, "end": cols.end, "time": cols.time, "mode": rt.mode,
        "late": rt.late, "allow_nonfinite": rt.allow_nonfinite, "return_state": rt.return_state,
        "idle_ttl": None if ttl is None else ({"seconds": ttl.total_seconds()}
                                              if isinstance(ttl, datetime.timedelta) else {"batches": ttl}),
        "max_streams": rt._eviction.max_streams, "capacity": rt._capacity,
    }


def _columns(rt: Any, slots: np.ndarray) -> dict[str, pa.Array]:
    table, index = rt._table, rt._index
    keys = index.slot_keys[slots]
    columns = {"key": pa.array(keys, pa.int64() if index.kind == "int" else pa.large_string())}
    if rt._time_type is not None:
        times = _time_array(table.last_time[slots], rt._time_type)
        columns["last_time"] = pc.if_else(pa.array(table.has_time[slots]), times, pa.nulls(len(slots), rt._time_type))
    columns["last_used"] = pa.array(table.last_used[slots])
    columns["last_batch"] = pa.array(table.last_batch[slots])
    columns["idle_seconds"] = pa.array(rt._eviction.clock() - table.last_seen[slots])
    index_t = torch.as_tensor(slots, dtype=torch.long, device=table.device)
    cell = 0
    for stage, slabs in enumerate(table.slabs):
        columns[f"has_output_{stage}"] = pa.array(table.has_output[stage].index_select(0, index_t).cpu().numpy())
        for j, slab in enumerate(slabs):
            values = slab.index_select(0, index_t).cpu().numpy()
            name = f"{'hc'[j % 2]}_{cell + j // 2}"
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        cell += len(slabs) // 2
    return columns


def _time_array(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """The inverse of :func:`streamlstm.runtime.schema.time_values`."""
    if pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type):
        return pa.array(values).cast(arrow_type)
    storage = pa.int32() if arrow_type == pa.date32() else pa.int64()
    return pa.array(values).cast(storage).view(arrow_type)


def save_runtime(rt: Any, path: Any) -> None:
    settings = _settings(rt)
    settings.update(key_kind=None if rt._index is None else rt._index.kind, counters=rt.counters,
                    busy_seconds=rt.busy_seconds)
    metadata = {b"streamlstm.format": b"stream_runtime", b"streamlstm.format_version": str(FORMAT_VERSION).encode(),
                b"streamlstm.runtime": json.dumps(settings).encode(), b"streamlstm.model": model_to_bytes(rt.model)}
    slots = np.empty(0, np.int64) if rt._table is None or rt._index is None else rt._index.live_slots()
    batches = [pa.record_batch(_columns(rt, slots[i:i + _CHUNK])) for i in range(0, len(slots), _CHUNK)]
    schema = batches[0].schema if batches else pa.schema([("key", pa.int64())])

    def write(sink: Any) -> None:
        with pa.ipc.new_file(sink, schema.with_metadata(metadata)) as writer:
            for batch in batches:
                writer.write_batch(batch)

    write_atomic(path, write)


def _read(path: Any) -> tuple[dict[bytes, bytes], pa.Table]:
    try:
        with pa.memory_map(str(Path(path)), "r") as source:
            reader = pa.ipc.open_file(source)
            return reader.schema.metadata or {}, reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"cannot read a stream runtime file at {str(path)!r}: {exc}") from exc


def load_runtime(cls: type, path: Any, *, device: Any, on_evict: Any, clock: Any) -> Any:
    metadata, data = _read(path)
    if metadata.get(b"streamlstm.format") != b"stream_runtime":
        raise ConfigError(f"{str(path)!r} is not a stream runtime file (streamlstm.format is "
                          f"{metadata.get(b'streamlstm.format')!r})")
    version = int(metadata.get(b"streamlstm.format_version", b"0"))
    if version != FORMAT_VERSION:
        raise ConfigError(f"stream runtime format_version {version} is not supported (this streamlstm reads "
                          f"{FORMAT_VERSION})")
    settings = json.loads(metadata[b"streamlstm.runtime"])
    model = model_from_bytes(metadata[b"streamlstm.model"], device=device)
    ttl = settings.pop("idle_ttl")
    ttl = None if ttl is None else (datetime.timedelta(seconds=ttl["seconds"]) if "seconds" in ttl else ttl["batches"])
    kind, counters, busy = settings.pop("key_kind"), settings.pop("counters"), settings.pop("busy_seconds")
    rt = cls(model, idle_ttl=ttl, on_evict=on_evict, clock=clock, device=device, **settings)
    rt.counters.update(counters)
    rt.busy_seconds = busy
    if "last_time" in data.column_names:
        rt._time_type = data.schema.field("last_time").type
    if kind is not None:
        rt._index = KeyIndex(kind)
    if data.num_rows:
        _restore_rows(rt, data.combine_chunks())
    return rt


def _fixed(column: pa.ChunkedArray) -> np.ndarray:
    array = column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)
    return array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), array.type.list_size)


def _restore_rows(rt: Any, data: pa.Table) -> None:
    if rt._table is None:
        raise ConfigError("the saved runtime holds streams but its model has no weights")
    table, n = rt._table, data.num_rows
    if rt._time_type is not None and pa.types.is_floating(rt._time_type):
        table.last_time = table.last_time.astype(np.float64)
    slots = table.allocate(n)
    keys = data.column("key").to_numpy() if rt._index.kind == "int" else np.array(data.column("key").to_pylist(),
                                                                                   dtype=object)
    rt._index.insert_values(keys, slots)
    table.last_used[slots] = data.column("last_used").to_numpy()
    table.last_batch[slots] = data.column("last_batch").to_numpy()
    table.last_seen[slots] = rt._eviction.clock() - data.column("idle_seconds").to_numpy()
    if rt._time_type is not None:
        times = data.column("last_time")
        valid = times.is_valid().to_numpy() if times.null_count else np.ones(n, bool)
        times = times.combine_chunks() if isinstance(times, pa.ChunkedArray) else times
        zero = _time_array(np.zeros(1, table.last_time.dtype), rt._time_type)[0]
        filled = pc.fill_null(times, zero) if times.null_count else times
        table.last_time[slots] = time_values(filled, "last_time", None)
        table.has_time[slots] = valid
    index = torch.as_tensor(slots, dtype=torch.long, device=table.device)
    cell = 0
    with torch.no_grad():
        for stage, slabs in enumerate(table.slabs):
            flags = torch.as_tensor(data.column(f"has_output_{stage}").to_numpy(), device=table.device)
            table.has_output[stage].index_copy_(0, index, flags)
            for j, slab in enumerate(slabs):
                values = torch.as_tensor(_fixed(data.column(f"{'hc'[j % 2]}_{cell + j // 2}")))
                slab.index_copy_(0, index, values.to(dtype=slab.dtype, device=slab.device))
            cell += len(slabs) // 2
