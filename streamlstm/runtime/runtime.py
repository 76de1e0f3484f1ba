"""StreamRuntime: one Keras ``stateful=True`` LSTM per stream key, fed by Arrow record batches."""

from __future__ import annotations

import datetime
import threading
import time as _time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.errors import ArgumentTypeError, ConfigError, StreamError
from streamlstm.runtime import fast_path, report
from streamlstm.runtime.eviction import Eviction
from streamlstm.runtime.execute import commit, contiguous_start, execute
from streamlstm.runtime.keys import KeyIndex, Lookup
from streamlstm.runtime.model_plan import build_plan
from streamlstm.runtime.schema import Columns, ParsedBatch, describe_key, key_kind, parse_batch
from streamlstm.runtime.segments import late_rows, plan_rows
from streamlstm.runtime.state_table import StateTable
from streamlstm.runtime.stream_state import StreamStateMixin

__all__ = ["StreamRuntime"]

_MODES = ("auto", "step", "chunk")


class StreamRuntime(StreamStateMixin):
    """Run a recurrent model over many interleaved streams, each exactly like a Keras stateful model.

    Args:
        model: a streamlstm ``LSTM`` (or ``RNN`` over LSTM cells), a ``torch.nn.Sequential`` of such
            layers and per-step modules, or a Keras model from :func:`streamlstm.load_keras` (its Masking
            becomes a mask rule; see :mod:`streamlstm.runtime.model_plan`). The runtime puts it
            in eval mode and never trains it; every recurrent layer emits one output per row.
        key (str, "stream_id"): the stream key column (integer or string, dictionary-encoded allowed).
        features (str | list[str], "x"): one ``FixedSizeList<float>[F]`` column, or numeric columns.
        mask (str, None): bool column; False = the step is masked (Keras masking: carries unchanged,
            output repeats the stream's previous output, zeros before its first real step).
        reset (str, None): bool column; True = the stream's carries and previous output return to
            zeros before this row.
        end (str, None): bool column; True = the stream is released after this row (a later row of the
            same key starts a new stream).
        time (str, None): per stream strictly increasing across rows and batches (integer, float,
            timestamp, date or duration column).
        mode (str, "auto"): "step", "chunk" or "auto" (step when every stream has one row in the
            batch, chunk otherwise: what the benchmarks show to be faster). All give the same numbers
            to float rounding.
        device (str | torch.device, None): where carries and compute live; the model is moved there.
            Default: the model's device.
        late (str, "raise"): "raise" rejects a batch with a row at or before its stream's last time;
            "drop" ignores such rows (their output is null) and counts them.
        allow_nonfinite (bool, False): accept NaN/Inf features.
        idle_ttl (int | datetime.timedelta, None): evict a stream absent from this many consecutive
            batches (int), or not seen for this long (timedelta, measured with ``clock``).
        max_streams (int, None): after each batch keep at most this many streams, evicting the least
            recently used first.
        on_evict (callable, None): ``on_evict(key, state)`` for each evicted stream, after the batch is
            committed; ``state`` is as returned by :meth:`state`.
        return_state (bool, False): add ``h_<i>`` and ``c_<i>`` columns (each LSTM cell's state after
            the row; forces step mode).
        capacity (int, 1024): initial number of stream slots; it doubles when full.
        clock (callable, time.monotonic): seconds, for ``idle_ttl`` given as a timedelta.

    Call :meth:`feed` with a ``pyarrow.RecordBatch`` or ``Table``; it returns one row per input row,
    in input order: the key column, the time column when configured, ``output``
    (``FixedSizeList<float32>[out_dim]``) and the optional state columns.

    go_backwards layers: a stream's rows within one ``feed`` are processed last to first (one Keras
    stateful call per feed), carries flowing from feed to feed; outputs still come back in input order.

    Example:
        >>> import pyarrow as pa, streamlstm as sl
        >>> runtime = sl.StreamRuntime(sl.LSTM(4), key="id", features="x")
        >>> x = pa.FixedSizeListArray.from_arrays(pa.array([0.1] * 6, pa.float32()), 3)
        >>> out = runtime.feed(pa.record_batch({"id": [7, 8], "x": x}))
        >>> out.schema.names, len(runtime)
        (['id', 'output'], 2)
    """

    def __init__(self, model: torch.nn.Module, key: str = "stream_id", features: str | list[str] = "x",
                 mask: str | None = None, reset: str | None = None, end: str | None = None,
                 time: str | None = None, mode: str = "auto", device: Any = None, *, late: str = "raise",
                 allow_nonfinite: bool = False, idle_ttl: int | datetime.timedelta | None = None,
                 max_streams: int | None = None, on_evict: Callable[[Any, Any], None] | None = None,
                 return_state: bool = False, capacity: int = 1024,
                 clock: Callable[[], float] = _time.monotonic) -> None:
        self._columns = _columns(key, features, mask, reset, end, time)
        if mode not in _MODES:
            raise ConfigError(f"`mode` must be one of {', '.join(_MODES)}, got {mode!r}")
        if late not in ("raise", "drop"):
            raise ConfigError(f"`late` must be 'raise' or 'drop', got {late!r}")
        self.mode, self.late, self.allow_nonfinite = mode, late, bool(allow_nonfinite)
        self.return_state = bool(return_state)
        self._eviction = Eviction(idle_ttl, max_streams, on_evict, clock)
        self._plan = build_plan(model)
        model.eval()
        if device is not None:
            model.to(device)
        self.device = torch.device(device) if device is not None else _model_device(model)
        self._capacity = capacity
        self._lock = threading.RLock()
        self._index: KeyIndex | None = None
        self._table: StateTable | None = None
        self._time_type: pa.DataType | None = None
        self._cache: tuple[pa.Array, int, Lookup] | None = None
        self._generation = 0
        self._fast: fast_path.FastPath | None = None
        self.counters = dict.fromkeys(report.COUNTERS, 0)
        self.busy_seconds = 0.0
        if self._plan.output_dim is not None:
            self._make_table()

    # -- configuration -------------------------------------------------------------------------------
    @property
    def columns(self) -> Columns:
        return self._columns

    @property
    def model(self) -> torch.nn.Module:
        return self._plan.model

    def _make_table(self) -> None:
        self._plan.ensure_built(self._plan.input_dim, self.device)
        sizes = [stage.state_sizes for stage in self._plan.recurrent]
        floating = self._time_type is not None and pa.types.is_floating(self._time_type)
        time_dtype = np.float64 if floating else np.int64
        self._table = StateTable(sizes, self._plan.dtype, self.device, self._capacity, np.dtype(time_dtype))

    # -- feeding -------------------------------------------------------------------------------------
    def feed(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """Advance every stream in ``batch`` by its rows; all or nothing (see the class docstring)."""
        with self._lock:
            started = _time.perf_counter()
            try:
                if self._fast is not None:
                    output = fast_path.try_feed(self, batch)
                    if output is not None:
                        self._evict()
                        return output
                return self._feed(batch)
            finally:
                self.busy_seconds += _time.perf_counter() - started

    def _feed(self, batch: Any) -> pa.RecordBatch:
        parsed = parse_batch(batch, self._columns, width=self._plan.input_dim,
                             expected_key_kind=None if self._index is None else self._index.kind,
                             time_type=self._time_type, allow_nonfinite=self.allow_nonfinite)
        if parsed.num_rows == 0:
            return report.output_batch(self, parsed, None, None, None)
        index = self._index if self._index is not None else KeyIndex(key_kind(parsed.keys.type))
        lookup = self._lookup(index, parsed.keys)
        full, kept = parsed, None
        if parsed.time is not None:
            kept = self._check_times(parsed, lookup)
            if kept is not None:
                parsed = _subset(parsed, kept)
                lookup = index.lookup(parsed.keys)
        if self._table is None:
            self._plan.input_dim = parsed.x.shape[1]
            self._make_table()
        if self._time_type is None and full.time_column is not None:
            self._time_type = full.time_column.type
            if pa.types.is_floating(self._time_type):
                self._table.last_time = self._table.last_time.astype(np.float64)
        outcome = None
        if parsed.num_rows:
            row_plans = {direction: plan_rows(lookup.group, lookup.distinct, parsed.reset, parsed.end, direction)
                         for direction in {stage.go_backwards for stage in self._plan.recurrent}}
            rows = next(iter(row_plans.values()))
            x, mask = self._tensors(parsed)
            mode = self.mode if self.mode != "auto" else _auto_mode(rows)
            key_slots = lookup.slots[rows.key_rows]
            with torch.inference_mode():
                outcome = execute(self._plan, self._table, row_plans, key_slots, x, mask, mode, self.return_state)
            self._index = index
            self._commit(parsed, lookup, rows, key_slots, outcome)
            self._fast = None
            if kept is None and lookup.distinct and not rows.key_released.any():
                start = contiguous_start(self._cache[2].slots)
                self._fast = fast_path.prepare(self, batch, parsed.keys, self._cache[2].slots, start)
        output = report.output_batch(self, full, parsed, outcome, kept)
        self.counters["batches"] += 1
        self.counters["rows"] += full.num_rows
        self._evict()
        return output

    def _lookup(self, index: KeyIndex, keys: pa.Array) -> Lookup:
        cache = self._cache
        if cache is not None and cache[1] == self._generation and len(cache[0]) == len(keys) and cache[0].equals(keys):
            return cache[2]
        return index.lookup(keys)

    def _tensors(self, parsed: ParsedBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = fast_path.as_tensor(parsed.x)
        mask = None if parsed.mask is None or parsed.mask.all() else torch.from_numpy(parsed.mask)
        if self.device.type != "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
            mask = None if mask is None else mask.pin_memory().to(self.device, non_blocking=True)
        return x.to(self._plan.dtype), mask

    def _check_times(self, parsed: ParsedBatch, lookup: Lookup) -> np.ndarray | None:
        table = self._table
        known = lookup.slots >= 0
        bound = np.zeros(parsed.num_rows, table.last_time.dtype if table is not None else parsed.time.dtype)
        has_bound = np.zeros(parsed.num_rows, bool)
        if table is not None and known.any():
            slots = lookup.slots[known]
            bound[known] = table.last_time[slots]
            has_bound[known] = table.has_time[slots]
        late, previous = late_rows(lookup.group, lookup.distinct, parsed.end, parsed.time, bound, has_bound)
        if not late.any():
            return None
        if self.late == "drop":
            self.counters["dropped_late"] += int(late.sum())
            return ~late
        row = int(np.argmax(late))
        name = self._columns.time
        raise StreamError(
            f"time column {name!r} must increase strictly per stream: row {row} (stream "
            f"{describe_key(parsed.keys, row)}) has time {parsed.time_column[row].as_py()!r}, not after the "
            f"stream's earlier time {_as_time(previous[row], parsed.time_column.type)!r}; pass late='drop' to "
            f"drop such rows"
        )

    def _commit(self, parsed: ParsedBatch, lookup: Lookup, rows: Any, key_slots: np.ndarray, outcome: Any) -> None:
        table, index = self._table, self._index
        released = rows.key_released
        slots = commit(table, outcome, key_slots, released)
        new = (key_slots < 0) & ~released
        if new.any():
            index.insert(parsed.keys, rows.key_rows[new], slots[new], lookup)
        ends = 0 if parsed.end is None else int(parsed.end.sum())
        # Streams begin as new keys and after every end row that is not its key's last row.
        self.counters["streams_created"] += int((key_slots < 0).sum()) + ends - int(released.sum())
        self.counters["streams_ended"] += ends
        gone = (key_slots >= 0) & released
        if gone.any():
            index.remove(key_slots[gone])
            table.release(key_slots[gone])
            self._generation += 1
        live = slots >= 0
        kept_slots = slots[live]
        table.last_used[kept_slots] = self.counters["rows"] + rows.key_last_row[live]
        table.last_batch[kept_slots] = self.counters["batches"] + 1
        table.last_seen[kept_slots] = self._eviction.clock()
        if parsed.time is not None:
            table.last_time[kept_slots] = parsed.time[rows.key_last_row[live]]
            table.has_time[kept_slots] = True
        if parsed.reset is not None:
            self.counters["resets"] += int(parsed.reset.sum())
        if not released.any():
            per_row = slots[rows.key_of_row]
            self._cache = (parsed.keys, self._generation, Lookup(per_row, per_row, np.empty(0, np.int64),
                                                                 lookup.distinct))

    def _evict(self) -> None:
        if self._table is None or not self._eviction.active:
            return
        victims, reasons = self._eviction.victims(self._table, self.counters["batches"])
        if not len(victims):
            return
        notes = [(self._index.slot_keys[s], self.state_of_slot(int(s))) for s in victims] \
            if self._eviction.on_evict is not None else []
        self._index.remove(victims)
        self._table.release(victims)
        self._generation += 1
        for reason, count in reasons.items():
            self.counters[f"evicted_{reason}"] += count
        for key, state in notes:
            self._eviction.on_evict(report.python_key(key), state)

    # -- summaries -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters: rows, batches, streams, evictions, ..., and ``rows_per_second`` of busy time."""
        with self._lock:
            return report.stats(self)

    def __repr__(self) -> str:
        return report.text(self)

    def _repr_html_(self) -> str:
        return report.html(self)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Write model, carries, per-stream times and counters to ``path`` atomically (see
        :mod:`streamlstm.runtime.persistence` for the format)."""
        from streamlstm.runtime.persistence import save_runtime
        with self._lock:
            save_runtime(self, path)

    @classmethod
    def load(cls, path: Any, *, device: Any = None, on_evict: Callable[[Any, Any], None] | None = None,
             clock: Callable[[], float] = _time.monotonic) -> StreamRuntime:
        """Read a runtime written by :meth:`save`; callables are not saved, so pass them again."""
        from streamlstm.runtime.persistence import load_runtime
        return load_runtime(cls, path, device=device, on_evict=on_evict, clock=clock)


def _auto_mode(rows: Any) -> str:
    """Step mode when every segment has one row (one fused GEMM pair and in-place gate math beat the
    sequence kernel's setup there), chunk otherwise (see benchmarks/bench_runtime.py)."""
    return "step" if rows.max_len == 1 else "chunk"


def _columns(key: Any, features: Any, mask: Any, reset: Any, end: Any, time: Any) -> Columns:
    for name, value in (("key", key), ("mask", mask), ("reset", reset), ("end", end), ("time", time)):
        if value is not None and not isinstance(value, str):
            raise ArgumentTypeError(f"`{name}` must be a column name (str), got {type(value).__name__}")
    if not isinstance(features, str):
        if not isinstance(features, (list, tuple)) or not features or not all(isinstance(f, str) for f in features):
            raise ArgumentTypeError(f"`features` must be a column name or a non-empty list of names, got {features!r}")
        features = tuple(features)
    names = [key, *([features] if isinstance(features, str) else features), mask, reset, end, time]
    used = [n for n in names if n is not None]
    if len(set(used)) != len(used) or "output" in used:
        raise ConfigError(f"column names must be distinct and not 'output', got {used}")
    return Columns(key, features, mask, reset, end, time)


def _model_device(model: torch.nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def _subset(parsed: ParsedBatch, keep: np.ndarray) -> ParsedBatch:
    rows = np.flatnonzero(keep)
    pick = (lambda a: None if a is None else a[rows])  # noqa: E731
    return ParsedBatch(len(rows), parsed.keys.take(pa.array(rows)), parsed.x[rows], pick(parsed.mask),
                       pick(parsed.reset), pick(parsed.end), pick(parsed.time),
                       parsed.time_column.take(pa.array(rows)))


def _as_time(value: Any, arrow_type: pa.DataType) -> Any:
    storage = pa.float64() if pa.types.is_floating(arrow_type) else pa.int64()
    scalar = pa.scalar(value.item() if hasattr(value, "item") else value, storage)
    try:
        return scalar.cast(arrow_type).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return scalar.as_py()
