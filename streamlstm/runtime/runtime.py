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

from streamlstm.arrow import as_tensor
from streamlstm.errors import ConfigError, StreamError
from streamlstm.runtime import report
from streamlstm.runtime.eviction import Eviction
from streamlstm.runtime.execute import Outcome, execute
from streamlstm.runtime.keys import KeyIndex
from streamlstm.runtime.model_plan import build_plan
from streamlstm.runtime.placement import Placement, Stamp
from streamlstm.runtime.prepared import BatchPlan, PreparedFeed
from streamlstm.runtime.schema import BatchParser, Columns, ParsedBatch, key_kind
from streamlstm.runtime.segments import RowPlan, plan_rows
from streamlstm.runtime.store import StreamStore
from streamlstm.runtime.stream_state import StreamStateMixin
from streamlstm.runtime.times import LATE_POLICIES, check_times, keep_rows
from streamlstm.runtime.transfer import TransferMixin

__all__ = ["PreparedFeed", "StreamRuntime"]

_MODES = ("auto", "step", "chunk")
# What torch.set_grad_enabled(mode) does, without making an object: two per feed show at one row per stream.
_set_grad_enabled = torch._C._set_grad_enabled  # noqa: SLF001 (the switch behind torch.set_grad_enabled)
# Up to this many rows a batch takes step mode whatever the mode says: the sequence kernel's setup
# costs more than the whole batch there (benchmarks/bench_runtime.py, forced chunk mode).
TINY_ROWS = 64


class StreamRuntime(StreamStateMixin, TransferMixin):
    """Run a recurrent model over many interleaved streams, each exactly like a Keras stateful model.

    Args:
        model: a streamlstm ``LSTM`` (or ``RNN`` over LSTM cells), a ``torch.nn.Sequential`` of such
            layers and per-step modules, or a Keras model from :func:`streamlstm.load_keras` (its Masking
            becomes a mask rule; see :mod:`streamlstm.runtime.model_plan`). The runtime puts it
            in eval mode and never trains it; every recurrent layer emits one output per row.
        key (str, "stream_id"): the stream key column (integer or string, dictionary-encoded allowed).
        features (str | list[str], "x"): one ``FixedSizeList<float>[F]`` column (or ``List``/``LargeList``
            of floats, F per row), or numeric columns.
        mask (str, None): bool column; False = the step is masked (Keras masking: carries unchanged,
            output repeats the stream's previous output, zeros before its first real step).
        reset (str, None): bool column; True = the stream's carries and previous output return to
            zeros before this row.
        end (str, None): bool column; True = the stream is released after this row (a later row of the
            same key starts a new stream).
        time (str, None): per stream strictly increasing across rows and batches (integer, float,
            timestamp, date or duration column).
        mode (str, "auto"): "step", "chunk" or "auto". All give the same numbers to float rounding.
            "auto" takes step mode (one batched cell step per round of rows) when streams have at
            most two rows in the batch, or when padding every stream's rows to the longest would
            mostly compute padding; chunk mode (PyTorch's sequence kernel) otherwise. Batches of at
            most 64 rows always take step mode, whose cost there is a few kernel calls.
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
            committed; ``state`` is as returned by :meth:`state`. If it raises, ``feed`` still returns
            the batch's output and the error becomes an ``EvictionWarning`` (see
            :mod:`streamlstm.runtime.eviction`).
        return_state (bool, False): add ``h_<i>`` and ``c_<i>`` columns (each LSTM cell's state after
            the row; forces step mode).
        capacity (int, 1024): initial number of stream slots; it doubles when full (unused slots cost
            no memory) and shrinks when fewer than a quarter are used.
        key_groups (int, 128): streams are assigned to this many key groups by a stable hash of their
            key (:func:`streamlstm.key_group`); :meth:`export_streams` can select by group.
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
                 return_state: bool = False, capacity: int = 1024, key_groups: int = 128,
                 clock: Callable[[], float] = _time.monotonic) -> None:
        self._columns = Columns.named(key, features, mask, reset, end, time)
        self._parser = BatchParser(self._columns)
        if mode not in _MODES:
            raise ConfigError(f"`mode` must be one of {', '.join(_MODES)}, got {mode!r}")
        if late not in LATE_POLICIES:
            raise ConfigError(f"`late` must be 'raise' or 'drop', got {late!r}")
        for name, value in (("capacity", capacity), ("key_groups", key_groups)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")
        self.mode, self.late, self.allow_nonfinite = mode, late, bool(allow_nonfinite)
        self.return_state = bool(return_state)
        self.capacity, self.key_groups = capacity, key_groups
        self._eviction = Eviction(idle_ttl, max_streams, on_evict, clock)
        self._plan = build_plan(model)
        model.eval()
        if device is not None:
            model.to(device)
        self.device = torch.device(device) if device is not None else _model_device(model)
        self._on_cpu = self.device.type == "cpu"
        self._lock = threading.RLock()
        self._store: StreamStore | None = None
        self._time_type: pa.DataType | None = None
        self._recent: BatchPlan | None = None
        self._output: report.OutputBuilder | None = None
        self.counters = dict.fromkeys(report.COUNTERS, 0)
        self.busy_seconds = 0.0
        if self._plan.output_dim is not None:
            self._make_store()

    # -- configuration -------------------------------------------------------------------------------
    @property
    def columns(self) -> Columns:
        return self._columns

    @property
    def model(self) -> torch.nn.Module:
        return self._plan.model

    @property
    def idle_ttl(self) -> int | datetime.timedelta | None:
        return self._eviction.idle_ttl

    @property
    def max_streams(self) -> int | None:
        return self._eviction.max_streams

    def config(self) -> dict[str, Any]:
        """The constructor arguments other than the model and the callables, JSON-ready
        (``idle_ttl`` as ``{"batches": n}`` or ``{"seconds": s}``)."""
        cols, ttl = self._columns, self.idle_ttl
        return {
            "key": cols.key, "features": cols.features if isinstance(cols.features, str) else list(cols.features),
            "mask": cols.mask, "reset": cols.reset, "end": cols.end, "time": cols.time, "mode": self.mode,
            "late": self.late, "allow_nonfinite": self.allow_nonfinite, "return_state": self.return_state,
            "idle_ttl": None if ttl is None else ({"seconds": ttl.total_seconds()}
                                                  if isinstance(ttl, datetime.timedelta) else {"batches": ttl}),
            "max_streams": self.max_streams, "capacity": self.capacity, "key_groups": self.key_groups,
        }

    @property
    def lock(self) -> threading.RLock:
        """The re-entrant lock every public method holds: hold it to make several calls one step (a
        :class:`~streamlstm.StreamTrainer` learning on this runtime's carries holds it for each window)."""
        return self._lock

    def shared_store(self, input_dim: int) -> StreamStore:
        """The owner of every stream's carries, for a :class:`~streamlstm.StreamTrainer` that learns on
        the carries this runtime serves; a model not built yet is built for inputs of width
        ``input_dim``. :meth:`load_state_dict` replaces the store: ask again after it."""
        with self._lock:
            if self._store is None:
                self._plan.input_dim = input_dim
                self._make_store()
            return self._store

    def _make_store(self) -> None:
        self._store, self._output = self._new_store()

    def _new_store(self) -> tuple[StreamStore, report.OutputBuilder]:
        """An empty store and the output builder for the built model (the first batch builds it)."""
        plan = self._plan
        plan.ensure_built(plan.input_dim, self.device)
        store = StreamStore([stage.state_sizes for stage in plan.recurrent], plan.dtype, self.device,
                            capacity=self.capacity, key_groups=self.key_groups)
        if self._time_type is not None and pa.types.is_floating(self._time_type):
            store.set_time_floating()
        widths = [("output", plan.output_dim)]
        if self.return_state:
            for i, cell in enumerate(plan.cells):
                widths += [(f"h_{i}", cell.units), (f"c_{i}", cell.units)]
        return store, report.OutputBuilder(self._columns.key, self._columns.time, widths)

    @property
    def clock(self) -> Callable[[], float]:
        """The ``clock`` this runtime stamps streams with (a trainer on its carries uses it too)."""
        return self._eviction.clock

    @property
    def time_type(self) -> pa.DataType | None:
        """The time column's Arrow type, fixed by the first batch with rows (None before, or without
        a time column)."""
        return self._time_type

    def set_time_type(self, time_type: pa.DataType) -> None:
        """Fix the time column's type before committing times of that type to the shared store (what
        the first batch with rows does; a :class:`~streamlstm.StreamTrainer` does it for its batches)."""
        with self._lock:
            if self._time_type is None:
                self._set_time_type(time_type)

    def _set_time_type(self, time_type: pa.DataType) -> None:
        self._time_type = time_type
        if self._store is not None and pa.types.is_floating(time_type):
            self._store.set_time_floating()

    # -- feeding -------------------------------------------------------------------------------------
    def feed(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """Advance every stream in ``batch`` by its rows; all or nothing (see the class docstring).
        The same as ``prepare(batch).commit()``."""
        with self._lock:
            started = _time.perf_counter()
            try:
                return self._commit(self._prepare(batch))
            finally:
                self.busy_seconds += _time.perf_counter() - started

    def prepare(self, batch: pa.RecordBatch | pa.Table) -> PreparedFeed:
        """Parse, check and compute ``batch`` without changing any state; :meth:`PreparedFeed.commit`
        then applies it (and returns what :meth:`feed` would have), :meth:`PreparedFeed.abort` drops it.

        Every error :meth:`feed` raises for a bad batch is raised here. This is the first phase of an
        all-or-nothing feed across several runtimes (e.g. the shards of a sharded runtime): prepare on
        every one, then commit on all or abort on all. A prepared feed is valid until this runtime's
        state changes (another feed, a reset, ``set_state``, an import); committing it after that
        raises :class:`~streamlstm.errors.StreamError`, and nothing is applied."""
        with self._lock:
            started = _time.perf_counter()
            try:
                return self._prepare(batch)
            finally:
                self.busy_seconds += _time.perf_counter() - started

    def commit(self, prepared: PreparedFeed) -> pa.RecordBatch:
        """Apply a feed from :meth:`prepare` (once) and return its output batch."""
        with self._lock:
            if prepared.runtime is not self:
                raise StreamError("this prepared feed belongs to another runtime")
            if prepared.state != "prepared":
                raise StreamError(f"this prepared feed was {prepared.state} already; prepare the batch again")
            if prepared.token != self._token():
                raise StreamError("the runtime's state changed since this feed was prepared (another feed, a "
                                  "reset, set_state or an import); prepare the batch again")
            started = _time.perf_counter()
            try:
                return self._commit(prepared)
            finally:
                self.busy_seconds += _time.perf_counter() - started

    def _token(self) -> tuple[Any, int]:
        store = self._store
        return store, (-1 if store is None else store.version)

    def _prepare(self, batch: Any) -> PreparedFeed:
        store = self._store
        parsed = self._parser.parse(batch, width=self._plan.input_dim,
                                    expected_key_kind=None if store is None else store.key_kind,
                                    time_type=self._time_type, allow_nonfinite=self.allow_nonfinite,
                                    dtype=self._plan.dtype if store is None else store.dtype)   # the carries
        prepared = PreparedFeed(self, self._token(), parsed)
        if parsed.num_rows == 0:
            output = self._output
            if output is None:   # the model is built from the batch's declared width, as by a first row
                self._plan.ensure_built(parsed.x.shape[1], self.device)
                prepared.fresh = _, output = self._new_store()
            prepared.output = output.build(parsed.keys, parsed.time_column, None, None)
            return prepared
        plan = self._batch_plan(parsed)
        if parsed.time is not None:
            prepared.kept = kept = check_times(parsed, plan.placement.lookup, store, self.late, self._columns.time)
            if kept is not None:   # late="drop"; counted by the commit
                prepared.dropped = int(parsed.num_rows - kept.sum())
                parsed = keep_rows(parsed, kept)
                plan = self._batch_plan(parsed) if parsed.num_rows else None
        output = self._output
        if store is None:   # the first batch builds the model; the store is installed by the commit
            if self._plan.output_dim is None:
                self._plan.ensure_built(parsed.x.shape[1], self.device)
            prepared.fresh = store, output = self._new_store()
        if plan is not None:
            prepared.plan, prepared.computed = plan, parsed
            prepared.outcome = self._compute(parsed, plan, store)
        prepared.output = output.build(prepared.parsed.keys, prepared.parsed.time_column, prepared.outcome,
                                       prepared.kept)
        return prepared

    def _commit(self, prepared: PreparedFeed) -> pa.RecordBatch:
        prepared.state = "committed"
        full = prepared.parsed
        if prepared.fresh is not None:
            self._store, self._output = prepared.fresh
        if full.num_rows == 0:
            return prepared.output
        if self._time_type is None and full.time_column is not None:
            self._set_time_type(full.time_column.type)
        if prepared.outcome is not None:
            self._apply(prepared.computed, prepared.plan, prepared.outcome)
        counters = self.counters
        counters["dropped_late"] += prepared.dropped
        counters["batches"] += 1
        counters["rows"] += full.num_rows
        self._evict()
        return prepared.output

    def _batch_plan(self, parsed: ParsedBatch) -> BatchPlan:
        """The keys resolved and the rows laid out, from the previous batch's plan when it had the same
        key column or the batch continues its recording (and neither batch resets or ends a stream)."""
        recent = self._recent
        if recent is not None and recent.generation == self._store.generation and parsed.plain():
            reused = recent.next_for(parsed.keys)
            if reused is not None:
                return reused
        store = self._store
        kind = key_kind(parsed.keys.type)
        # Before the first batch's commit there is no store: every key is new.
        lookup = store.lookup(parsed.keys, kind) if store is not None else KeyIndex(kind).lookup(parsed.keys)
        row_plans = {back: plan_rows(lookup.group, lookup.distinct, parsed.reset, parsed.end, back, lookup.first_row)
                     for back in {stage.go_backwards for stage in self._plan.recurrent}}
        rows = next(iter(row_plans.values()))
        key_slots = lookup.slots if lookup.distinct else lookup.slots[rows.key_rows]   # distinct: key k is row k
        placement = Placement(parsed.keys, kind, lookup, rows.key_rows, key_slots, rows.key_released)
        if recent is not None and recent.generation == store.generation:   # the same streams in a new order?
            placement.flag_as(recent.placement)
        return BatchPlan(placement, row_plans)

    def _use_step(self, rows: RowPlan) -> bool:
        """Step mode for "step", ``return_state`` and tiny batches; in "auto" mode also when padding
        the segments to one length would mostly compute padding (step mode's rounds then cost less
        than the sequence kernel's wasted steps; measured in benchmarks/bench_runtime.py, section 3)."""
        if self.mode == "step" or self.return_state or rows.num_rows <= TINY_ROWS:
            return True
        if self.mode == "chunk":
            return False
        steps = rows.max_len
        return steps <= 2 or (steps <= 32 and rows.num_rows < 0.4 * rows.num_segments * steps)

    def _compute(self, parsed: ParsedBatch, plan: BatchPlan, store: StreamStore) -> Outcome:
        """Every stage over the batch's rows, from the carries in ``store``; writes nothing."""
        x, mask = self._tensors(parsed, store.dtype)
        grad = torch.is_grad_enabled()
        _set_grad_enabled(False)   # cheaper than a context manager (or set_grad_enabled's object) at one row
        try:
            return execute(self._plan, store, plan.row_plans, plan.placement, x, mask,
                           self._use_step(plan.rows), self.return_state, plan.memo)
        finally:
            _set_grad_enabled(grad)

    def _apply(self, parsed: ParsedBatch, plan: BatchPlan, outcome: Outcome) -> None:
        """Commit a computed batch: the only place a feed changes stream state."""
        store, rows, counters = self._store, plan.rows, self.counters
        last = rows.key_last_row
        stamp = Stamp(last, counters["rows"], counters["batches"] + 1, self._eviction.clock(),
                      None if parsed.time is None else parsed.time[last])
        slots = store.commit(plan.placement, outcome.finals, outcome.has_output, stamp, outcome.key_order)
        if not plan.placement.settled:
            ends = 0 if parsed.end is None else int(parsed.end.sum())
            # Streams begin as new keys and after every end row that is not its key's last row.
            counters["streams_created"] += plan.placement.created + ends - int(rows.key_released.sum())
            counters["streams_ended"] += ends
        if parsed.reset is not None:
            counters["resets"] += int(parsed.reset.sum())
        self._remember(parsed, plan, slots)

    def _remember(self, parsed: ParsedBatch, plan: BatchPlan, slots: np.ndarray) -> None:
        """Keep the plan for the next batch with the same keys, now that every key has its slot."""
        if plan is self._recent and plan.generation == self._store.generation:
            return   # still valid: the same keys again
        self._recent = None
        if not parsed.plain() or plan.rows.releases:
            return
        plan.generation = self._store.generation
        plan.committed = None if plan.placement.settled else slots   # a new plan is made only if reused
        self._recent = plan

    def _tensors(self, parsed: ParsedBatch, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = as_tensor(parsed.x)
        mask = None if parsed.mask is None or parsed.mask.all() else torch.from_numpy(parsed.mask)
        if not self._on_cpu:
            x = x.pin_memory().to(self.device, non_blocking=True)
            mask = None if mask is None else mask.pin_memory().to(self.device, non_blocking=True)
        return (x if x.dtype == dtype else x.to(dtype)), mask

    def _evict(self) -> None:
        store = self._store
        if store is None or not self._eviction.active:
            return
        victims, reasons = self._eviction.victims(store, self.counters["batches"])
        if not len(victims):
            return
        notes = [(key, self._state_of_slot(int(slot))) for key, slot in zip(store.keys_of(victims), victims)] \
            if self._eviction.on_evict is not None else []
        store.release(victims)
        store.compact()
        for reason, count in reasons.items():
            self.counters[f"evicted_{reason}"] += count
        self._eviction.notify((report.python_key(key), state) for key, state in notes)

    # -- summaries -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters: rows, batches, streams, evictions, ..., and ``rows_per_second`` of busy time."""
        with self._lock:
            result: dict[str, Any] = dict(self.counters)
            result["streams"] = len(self)
            result["evictions"] = result["evicted_ttl"] + result["evicted_max_streams"]
            result["busy_seconds"] = self.busy_seconds
            result["rows_per_second"] = result["rows"] / self.busy_seconds if self.busy_seconds else 0.0
            store = self._store
            result["capacity"] = 0 if store is None else store.capacity
            result["state_bytes"] = 0 if store is None else store.nbytes()
            return result

    def _summary(self) -> tuple[str, list[tuple[str, str]]]:
        layers = [stage.layers if hasattr(stage, "cells") else type(getattr(stage, "module", stage)).__name__
                  for stage in self._plan.stages]
        title = f"StreamRuntime(key={self._columns.key!r}, features={self._columns.features!r})"
        return title, report.summary(self.stats(), layers, self.device, self.mode)

    def __repr__(self) -> str:
        return report.text(*self._summary())

    def _repr_html_(self) -> str:
        return report.html(*self._summary())


def _model_device(model: torch.nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")
