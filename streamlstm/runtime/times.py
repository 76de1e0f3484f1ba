"""The time column's rule, shared by everything that advances the streams of one
:class:`~streamlstm.runtime.store.StreamStore` (a :class:`~streamlstm.StreamRuntime` and the
:class:`~streamlstm.StreamTrainer` learning on its carries).

Per stream, times increase strictly across rows and batches: a row is *late* when its time is at or
before an earlier time of the same stream, in this batch (the same life: an ``end`` row starts a new
one) or, for the key's first life in the batch, the time the store holds (``last_time`` where
``has_time``; committed with the :class:`~streamlstm.runtime.placement.Stamp` of each batch). With
``late="raise"`` a late row rejects the whole batch; with ``late="drop"`` late rows are left out (their
output is null) and the caller counts them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from streamlstm.errors import StreamError
from streamlstm.runtime.keys import Lookup
from streamlstm.runtime.schema import ParsedBatch, describe_key
from streamlstm.runtime.store import StreamStore

__all__ = ["LATE_POLICIES", "check_times", "keep_rows"]

LATE_POLICIES = ("raise", "drop")


def check_times(parsed: ParsedBatch, lookup: Lookup, store: StreamStore | None, late: str,
                name: str) -> np.ndarray | None:
    """The rows of ``parsed`` to keep (bool [rows]), or None when no row is late.

    Args:
        parsed: the batch, with its time values (``parsed.time``).
        lookup: its keys looked up in ``store`` (slot -1 = a new key).
        store: the carries' owner (None before the first batch: nothing is known yet).
        late: ``"raise"`` (a late row raises :class:`~streamlstm.errors.StreamError`, naming the row,
            its stream, its time and the earlier one) or ``"drop"``.
        name: the time column's name, for the message.
    """
    known = lookup.slots >= 0
    bound = np.zeros(parsed.num_rows, store.last_time.dtype if store is not None else parsed.time.dtype)
    has_bound = np.zeros(parsed.num_rows, bool)
    if store is not None and known.any():
        slots = lookup.slots[known]
        bound[known] = store.last_time[slots]
        has_bound[known] = store.has_time[slots]
    is_late, previous = late_rows(lookup.group, lookup.distinct, parsed.end, parsed.time, bound, has_bound)
    if not is_late.any():
        return None
    if late == "drop":
        return ~is_late
    row = int(np.argmax(is_late))
    raise StreamError(
        f"time column {name!r} must increase strictly per stream: row {row} (stream "
        f"{describe_key(parsed.keys, row)}) has time {parsed.time_column[row].as_py()!r}, not after the "
        f"stream's earlier time {_as_time(previous[row], parsed.time_column.type)!r}; pass late='drop' to "
        f"drop such rows", row=row
    )


def keep_rows(parsed: ParsedBatch, keep: np.ndarray) -> ParsedBatch:
    """``parsed`` without the rows where ``keep`` is False (e.g. late rows)."""
    rows = np.flatnonzero(keep)
    pick = (lambda a: None if a is None else a[rows])  # noqa: E731
    taken = pa.array(rows)
    return ParsedBatch(len(rows), parsed.keys.take(taken), parsed.x[rows], pick(parsed.mask), pick(parsed.reset),
                       pick(parsed.end), pick(parsed.time),
                       None if parsed.time_column is None else parsed.time_column.take(taken))


def _as_time(value: Any, arrow_type: pa.DataType) -> Any:
    storage = pa.float64() if pa.types.is_floating(arrow_type) else pa.int64()
    scalar = pa.scalar(value.item() if hasattr(value, "item") else value, storage)
    try:
        return scalar.cast(arrow_type).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return scalar.as_py()


def late_rows(group: np.ndarray, distinct: bool, end: np.ndarray | None, time: np.ndarray, bound: np.ndarray,
              has_bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose time is not after every earlier time of the same stream (life).

    ``bound``/``has_bound`` give, per row, the stored last time of its key (used by the key's first
    life). Returns ``(late [n] bool, previous [n])`` in input order, ``previous`` being the latest
    earlier time a late row collided with.
    """
    n = len(group)
    if distinct:
        late = has_bound & (time <= bound)
        return late, bound
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    key_start = np.ones(n, bool)
    key_start[1:] = sorted_group[1:] != sorted_group[:-1]
    life_start = key_start.copy()
    if end is not None:
        life_start[1:] |= end[order][:-1]
    life_of = np.cumsum(life_start) - 1
    t = time[order]
    with_bound = key_start & has_bound[order]
    values, ranks = np.unique(np.concatenate([t, bound[order][with_bound]]), return_inverse=True)
    ranks = ranks.reshape(-1)
    span = len(values) + 1
    earlier = np.empty(n, np.int64)
    earlier[1:] = ranks[:n - 1]
    earlier[life_start] = -1
    earlier[with_bound] = ranks[n:]
    offset = life_of * span
    running = np.maximum.accumulate(earlier + 1 + offset) - offset - 1
    late_sorted = ranks[:n] <= running
    late = np.empty(n, bool)
    late[order] = late_sorted
    previous = np.empty(n, values.dtype)
    previous[order] = values[np.maximum(running, 0)]
    return late, previous
