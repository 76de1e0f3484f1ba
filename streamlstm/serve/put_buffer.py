"""The outputs of ``DoPut`` producers, kept per stream until a ``DoGet`` takes them.

Retention: each stream keeps at most ``rows_per_stream`` output rows, the newest; older rows are
dropped and counted (``put_rows_dropped`` in the stats). ``DoGet`` returns and removes a stream's rows,
so each row is handed out at most once. ``rows_per_stream=0`` keeps nothing (fire and forget). Rows of
a stream that ended (``end`` column) or was evicted stay until taken. Key columns are stored decoded
(dictionary keys as plain strings, integer keys as int64) so that rows from producers with different
key encodings come back in one schema.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["PutBuffer"]


class PutBuffer:
    """Per-stream bounded output rows (see the module docstring).

    Args:
        rows_per_stream (int): rows kept per stream at most; 0 keeps nothing.
    """

    def __init__(self, rows_per_stream: int) -> None:
        self.rows_per_stream = int(rows_per_stream)
        self._lock = threading.Lock()
        self._streams: dict[Any, deque[pa.RecordBatch]] = {}
        self._rows: dict[Any, int] = {}
        self.schema: pa.Schema | None = None
        self.rows_dropped = 0

    @property
    def rows(self) -> int:
        return sum(self._rows.values())

    def add(self, output: pa.RecordBatch) -> None:
        """Keep the rows of ``output`` (a runtime output batch: its first column is the key)."""
        if self.rows_per_stream <= 0 or output.num_rows == 0:
            return
        output = _plain_keys(output)
        keys = output.column(0)
        distinct = pc.unique(keys)
        group = pc.index_in(keys, value_set=distinct).to_numpy()
        order = np.argsort(group, kind="stable")
        counts = np.bincount(group, minlength=len(distinct))
        ordered = output.take(pa.array(order))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        with self._lock:
            self.schema = output.schema
            for key, start, count in zip(distinct.to_pylist(), starts.tolist(), counts.tolist()):
                self._keep(key, ordered.slice(start, count))

    def _keep(self, key: Any, rows: pa.RecordBatch) -> None:
        kept = self._streams.setdefault(key, deque())
        kept.append(rows)
        total = self._rows.get(key, 0) + rows.num_rows
        while total > self.rows_per_stream:
            over = total - self.rows_per_stream
            oldest = kept[0]
            if oldest.num_rows <= over:
                kept.popleft()
                dropped = oldest.num_rows
            else:
                kept[0] = oldest.slice(over)
                dropped = over
            total -= dropped
            self.rows_dropped += dropped
        self._rows[key] = total

    def take(self, keys: Iterable[Any] | None) -> pa.Table:
        """Remove and return the rows of ``keys`` (every stream when None), stream by stream."""
        with self._lock:
            chosen = list(self._streams) if keys is None else [k for k in keys if k in self._streams]
            batches = []
            for key in chosen:
                batches.extend(self._streams.pop(key))
                del self._rows[key]
            schema = self.schema if self.schema is not None else pa.schema([])
        return pa.Table.from_batches(batches, schema=schema)


def _plain_keys(output: pa.RecordBatch) -> pa.RecordBatch:
    keys = output.column(0)
    if pa.types.is_dictionary(keys.type):
        keys = keys.dictionary_decode()
    if pa.types.is_integer(keys.type):
        target = pa.int64()
    elif pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type):
        target = pa.string()
    else:
        target = keys.type
    if keys.type == output.schema.field(0).type == target:
        return output
    if keys.type != target:
        keys = keys.cast(target)
    return pa.RecordBatch.from_arrays([keys, *output.columns[1:]],
                                      schema=output.schema.set(0, pa.field(output.schema.names[0], target)))
