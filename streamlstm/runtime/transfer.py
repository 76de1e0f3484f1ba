"""Moving streams out of and into a runtime: ``export_streams``, ``import_streams``, ``state_dict``.

An exported stream is one row of a ``pyarrow.Table``; importing it into another runtime with the same
model makes it continue exactly as if it had never moved (same carries, same previous output, same
last time). This is what sharding and rescaling move between processes, and what the runtime file
(:mod:`streamlstm.io.runtime_file`) stores.

=================== ========================================================================
``key``             int64 or large_string
``key_group``       int32: :func:`streamlstm.key_group` of the key for the runtime's ``key_groups``
                    (schema metadata ``streamlstm.key_groups``); recomputed on import
``last_time``       the time column's type, null when the stream has no time yet (only once the
                    runtime has seen its time column)
``idle_rows``       int64: rows fed to the runtime since the stream's last row (LRU order)
``idle_batches``    int64: batches since the stream's last batch (``idle_ttl`` in batches)
``idle_seconds``    float64: ``clock`` seconds since the stream was last fed
``has_output_<s>``  bool per recurrent layer ``s``: the stream has had a real step (a masked step
                    then repeats ``h``)
``h_<i>``, ``c_<i>`` ``FixedSizeList<float32|float64>[units]`` per LSTM cell ``i`` in model order
=================== ========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamlstm.arrow import fixed_list, fixed_list_to_numpy
from streamlstm.errors import ArgumentTypeError, SchemaError, StateError
from streamlstm.runtime.schema import key_kind, time_values

__all__ = ["TransferMixin", "time_array"]

STATE_DICT_VERSION = 1


def time_array(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """The inverse of :func:`streamlstm.runtime.schema.time_values`."""
    if pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type):
        return pa.array(values).cast(arrow_type)
    storage = pa.int32() if arrow_type == pa.date32() else pa.int64()
    return pa.array(values).cast(storage).view(arrow_type)


def _carry_names(cells_per_stage: list[int]) -> list[tuple[int, list[str]]]:
    """Per stage: its number and the names of its flat state columns."""
    names, cell = [], 0
    for stage, count in enumerate(cells_per_stage):
        names.append((stage, [f"{hc}_{cell + j}" for j in range(count) for hc in "hc"]))
        cell += count
    return names


def _fixed(column: Any, name: str, width: int) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_fixed_size_list(array.type) and pa.types.is_floating(array.type.value_type)
            and array.type.list_size == width):
        raise SchemaError(f"streams column {name!r} must be FixedSizeList<float>[{width}], got {array.type}")
    if array.null_count or array.values.null_count:
        raise SchemaError(f"streams column {name!r} has nulls")
    values = fixed_list_to_numpy(array)
    if not np.isfinite(values).all():
        raise SchemaError(f"streams column {name!r} has a non-finite value; carries must be finite")
    return values


def _check_weights(given: dict[str, Any], current: dict[str, Any]) -> None:
    """The same weight names and shapes as the model has, or a StateError naming the first difference."""
    if not isinstance(given, dict) or set(given) != set(current):
        missing, extra = sorted(set(current) - set(given or {})), sorted(set(given or {}) - set(current))
        raise StateError(f"`state['model']` must hold this model's weights: missing {missing}, unexpected {extra}")
    for name, value in current.items():
        shape = tuple(getattr(given[name], "shape", ()))
        if shape != tuple(value.shape):
            raise StateError(f"`state['model']` weight {name!r} has shape {shape}, this model's has "
                             f"{tuple(value.shape)}")


class TransferMixin:
    """:meth:`export_streams`, :meth:`import_streams`, :meth:`state_dict` and :meth:`load_state_dict`
    of :class:`StreamRuntime`."""

    def _cells_per_stage(self) -> list[int]:
        return [len(stage.cells) for stage in self._plan.recurrent]

    def export_streams(self, keys: Iterable[Any] | None = None,
                       key_groups: Iterable[int] | None = None) -> pa.Table:
        """The streams held (all, those of ``keys``, or those in ``key_groups``) as a table, one row
        per stream (columns in the module docstring). Unknown keys are skipped. Nothing changes."""
        with self._lock:
            store = self._store
            slots = np.empty(0, np.int64) if store is None else store.live_slots()
            if store is not None and keys is not None:
                if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
                    raise ArgumentTypeError(f"`keys` must be an iterable of keys or None, got {type(keys).__name__}")
                slots = np.array(sorted({s for s in (store.find(k) for k in keys) if s >= 0}), np.int64)
            if store is not None and key_groups is not None:
                wanted = np.asarray(list(key_groups), np.int64)
                slots = slots[np.isin(store.key_group[slots], wanted)]
            return self._streams_table(slots)

    def _streams_table(self, slots: np.ndarray) -> pa.Table:
        store, kind = self._store, (self._store.key_kind if self._store is not None else None) or "int"
        key_type = pa.int64() if kind == "int" else pa.large_string()
        columns: dict[str, pa.Array] = {}
        if store is None:
            columns["key"] = pa.array([], key_type)
            return pa.table(columns)
        data = store.export(slots)
        columns["key"] = pa.array(data["keys"], key_type) if kind == "int" else pa.array(list(data["keys"]), key_type)
        columns["key_group"] = pa.array(data["key_group"], pa.int32())
        if self._time_type is not None:
            times = time_array(data["last_time"], self._time_type)
            columns["last_time"] = pc.if_else(pa.array(data["has_time"], pa.bool_()), times,
                                              pa.nulls(len(slots), self._time_type))
        columns["idle_rows"] = pa.array(self.counters["rows"] - data["last_used"], pa.int64())
        columns["idle_batches"] = pa.array(self.counters["batches"] - data["last_batch"], pa.int64())
        columns["idle_seconds"] = pa.array(self._eviction.clock() - data["last_seen"], pa.float64())
        for (stage, names), (states, has) in zip(_carry_names(self._cells_per_stage()), data["carries"]):
            columns[f"has_output_{stage}"] = pa.array(has, pa.bool_())
            for name, values in zip(names, states):
                columns[name] = fixed_list(values)
        return pa.table(columns).replace_schema_metadata({b"streamlstm.key_groups": str(store.key_groups).encode()})

    def import_streams(self, table: pa.Table | pa.RecordBatch) -> int:
        """Add the streams of ``table`` (from :meth:`export_streams` of a runtime with the same model);
        they continue exactly where they were. All or nothing: a key already held here, a duplicate or
        null key, a missing or mis-shaped column raises and changes nothing. Returns the count."""
        with self._lock:
            if self._store is None:
                raise StateError("the model is not built yet: feed a batch first or pass a built model")
            kind, keys, columns, carries, time_type = self._check_streams(table)
            if time_type is not None and self._time_type is None:
                self._set_time_type(time_type)
            if not len(keys):
                return 0
            self._store.import_streams(kind, keys, columns, carries)
            self._eviction.reschedule()
            self._recent = None
            return len(keys)

    def _check_streams(self, table: Any) -> tuple[str, np.ndarray, dict[str, np.ndarray], list, Any]:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise ArgumentTypeError(f"`table` must be a pyarrow.Table or RecordBatch, got {type(table).__name__}")
        names = set(table.column_names)
        needed = ["key"] + [f"has_output_{s}" for s in range(len(self._plan.recurrent))] + \
            [n for _, stage_names in _carry_names(self._cells_per_stage()) for n in stage_names]
        missing = [n for n in needed if n not in names]
        if missing:
            raise SchemaError(f"streams table lacks column(s) {missing}; it has {table.column_names}")
        key_column = table.column("key").combine_chunks()
        kind, expected = key_kind(key_column.type), self._store.key_kind
        if not len(key_column) and kind is not None:   # nothing to add (e.g. the export of an empty shard)
            kind = expected or kind
        if kind is None or (expected is not None and kind != expected):
            want = "integer or string" if expected is None else ("integer" if expected == "int" else "string")
            raise SchemaError(f"streams column 'key' must be {want}, got {key_column.type}")
        if key_column.null_count:
            raise SchemaError("streams column 'key' has nulls")
        keys = key_column.to_numpy(zero_copy_only=False).astype(np.int64) if kind == "int" else \
            np.array(key_column.cast(pa.large_string()).to_pylist(), dtype=object)
        unique, counts = np.unique(keys if kind == "int" else keys.astype(str), return_counts=True)
        if (counts > 1).any():
            raise StateError(f"streams table has key {unique[counts > 1][0].item()!r} more than once")
        held = np.flatnonzero(self._store.lookup(key_column, kind).slots >= 0) if len(self._store) else []
        if len(held):   # one vectorized lookup: a rescale imports hundreds of thousands of streams
            first = keys[held[:1]].tolist()[0]
            raise StateError(f"stream {first!r} is already held by this runtime ({len(held)} of the imported keys "
                             f"are); export it from here or reset it instead")
        columns, time_type = self._check_bookkeeping(table)
        carries = []
        cells = self._plan.cells
        for stage, stage_names in _carry_names(self._cells_per_stage()):
            states = [_fixed(table.column(n), n, cells[int(n.split("_")[1])].units) for n in stage_names]
            has = table.column(f"has_output_{stage}").combine_chunks()
            if not pa.types.is_boolean(has.type) or has.null_count:
                raise SchemaError(f"streams column 'has_output_{stage}' must be bool without nulls, got {has.type}")
            carries.append((states, has.to_numpy(zero_copy_only=False)))
        return kind, keys, columns, carries, time_type

    def _check_bookkeeping(self, table: pa.Table) -> tuple[dict[str, np.ndarray], pa.DataType | None]:
        columns: dict[str, np.ndarray] = {}
        counters, now = self.counters, self._eviction.clock()
        for name, target, base in (("idle_rows", "last_used", counters["rows"]),
                                   ("idle_batches", "last_batch", counters["batches"]),
                                   ("idle_seconds", "last_seen", now)):
            if name in table.column_names:
                column = table.column(name).combine_chunks()
                if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)) or column.null_count:
                    raise SchemaError(f"streams column {name!r} must be numeric without nulls, got {column.type}")
                columns[target] = base - column.to_numpy(zero_copy_only=False)
        if "last_time" in table.column_names:
            times = table.column("last_time").combine_chunks()
            if self._columns.time is None:
                raise SchemaError("streams table has 'last_time' but this runtime has no time column")
            if self._time_type is not None and times.type != self._time_type:
                raise SchemaError(f"streams column 'last_time' must be {self._time_type} like this runtime's "
                                  f"time column, got {times.type}")
            valid = times.is_valid().to_numpy(zero_copy_only=False)
            filled = pc.fill_null(times, time_array(np.zeros(1, np.int64), times.type)[0]) if times.null_count \
                else times
            columns["last_time"] = time_values(filled, "last_time", None)
            columns["has_time"] = valid
            return columns, times.type
        return columns, None

    # -- the whole runtime --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the runtime holds, in memory: ``config`` (:meth:`config`), ``model`` (the model's
        ``state_dict``), ``streams`` (:meth:`export_streams`), ``counters``, ``busy_seconds``,
        ``key_kind`` and ``version``. :meth:`load_state_dict` puts it back."""
        with self._lock:
            return {"version": STATE_DICT_VERSION, "config": self.config(), "model": self.model.state_dict(),
                    "streams": self.export_streams(), "counters": dict(self.counters),
                    "busy_seconds": self.busy_seconds,
                    "key_kind": None if self._store is None else self._store.key_kind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the model's weights, every stream and the counters with those of ``state`` (from
        :meth:`state_dict` of a runtime with the same model architecture and columns). All or nothing."""
        with self._lock:
            if not isinstance(state, dict) or state.get("version") != STATE_DICT_VERSION:
                raise StateError(f"`state` must be a StreamRuntime.state_dict() of version {STATE_DICT_VERSION}")
            if self._plan.output_dim is None:   # a model not built yet holds no streams
                if state["streams"].num_rows:
                    raise StateError("`state` holds streams but this runtime's model is not built yet")
                self.model.load_state_dict(state["model"])
                self.counters, self.busy_seconds = dict(state["counters"]), float(state["busy_seconds"])
                return
            if self._store is None:
                self._make_store()
            old = self._store, self.counters, self.busy_seconds, self._time_type
            self._make_store()
            self.counters = dict(state["counters"])
            self.busy_seconds = float(state["busy_seconds"])
            weights = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
            try:
                _check_weights(state["model"], weights)
                if state.get("key_kind") is not None:
                    self._store.set_key_kind(state["key_kind"])
                self.import_streams(state["streams"])
                self.model.load_state_dict(state["model"])
            except BaseException:
                self._store, self.counters, self.busy_seconds, self._time_type = old
                self.model.load_state_dict(weights)
                raise
            finally:
                self._recent = None
                self._eviction.reschedule()
