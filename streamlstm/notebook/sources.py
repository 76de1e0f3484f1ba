"""What a dashboard reads: Arrow files, readers, iterators and async iterators as one kind of feed.

=============================== ==================================================================
``source``                      how the dashboard reads it
=============================== ==================================================================
path (str or Path)              :func:`streamlstm.io.sources.open_source` (Arrow IPC file or stream,
                                Parquet, directory or glob), cut into ``batch_rows``-row batches;
                                the total is known, so the dashboard shows a progress bar
Table / RecordBatch             likewise, in memory
RecordBatchReader               batch by batch, as written; no total
iterator or iterable            batch by batch (``RecordBatch`` or ``Table`` items); no total
async iterator or iterable      a live feed: awaited on the event loop, never in a thread
=============================== ==================================================================

Blocking reads (files, readers, plain iterators) run in the dashboard's worker thread, so a slow
disk never freezes the kernel; async feeds are awaited on the kernel's loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pyarrow as pa

from streamlstm.arrow import as_record_batch
from streamlstm.errors import ArgumentTypeError, SourceError

__all__ = ["BatchFeed", "open_feed"]

DEFAULT_BATCH_ROWS = 256
_END = object()


class BatchFeed:
    """One source of record batches: ``await feed.next(run)`` returns the next batch or None at the end.

    Args:
        description: what was opened, for the dashboard's title.
        total_rows: rows in the whole source, or None when unknown (streams and live feeds).
        sync_iter: a blocking iterator (read in the worker thread), or None.
        async_iter: an async iterator (awaited on the loop), or None.
    """

    def __init__(self, description: str, total_rows: int | None, *, sync_iter: Iterator[Any] | None = None,
                 async_iter: AsyncIterator[Any] | None = None) -> None:
        self.description = description
        self.total_rows = total_rows
        self._sync = sync_iter
        self._async = async_iter
        self.exhausted = False

    async def next(self, in_worker: Any) -> pa.RecordBatch | None:
        """The next batch, or None once the source is exhausted. ``in_worker(fn, *args)`` is awaited
        to run a blocking call off the loop."""
        if self.exhausted:
            return None
        if self._async is not None:
            try:
                item = await anext(self._async)
            except StopAsyncIteration:
                item = _END
        else:
            # A StopIteration cannot cross a future: the worker returns a sentinel instead.
            item = await in_worker(next, self._sync, _END)
        if item is _END:
            self.exhausted = True
            return None
        return _as_batch(item)

    def close(self) -> None:
        """Close the underlying generator (async generators are closed by the loop at shutdown)."""
        close = getattr(self._sync, "close", None)
        if callable(close):
            close()


def _as_batch(item: Any) -> pa.RecordBatch:
    batch = as_record_batch(item)
    if batch is not None:
        return batch
    raise SourceError(f"a dashboard source must yield pyarrow RecordBatches or Tables, got {type(item).__name__}")


def open_feed(source: Any, batch_rows: int = DEFAULT_BATCH_ROWS) -> BatchFeed:
    """Recognize ``source`` (see the module docstring) and open it, reading nothing yet.

    Raises:
        SourceError: a path that is missing or not Arrow/Parquet.
        ArgumentTypeError: anything that is not a path, Arrow data or an (async) iterable.
    """
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ArgumentTypeError(f"`batch_rows` must be a positive integer, got {batch_rows!r}")
    if isinstance(source, (str, os.PathLike, pa.Table, pa.RecordBatch)):
        from streamlstm.io.sources import open_source

        opened = open_source(source)
        return BatchFeed(opened.description, opened.total_rows, sync_iter=opened.batches(batch_rows))
    if isinstance(source, pa.RecordBatchReader):
        return BatchFeed("<RecordBatchReader>", None, sync_iter=iter(source))
    if hasattr(source, "__anext__"):
        return BatchFeed(_name(source), None, async_iter=source)
    if hasattr(source, "__aiter__"):
        return BatchFeed(_name(source), None, async_iter=source.__aiter__())
    if hasattr(source, "__next__"):
        return BatchFeed(_name(source), None, sync_iter=source)
    if hasattr(source, "__iter__"):
        total = _total(source)
        return BatchFeed(_name(source), total, sync_iter=iter(source))
    raise ArgumentTypeError("`source` must be an Arrow file path, a pyarrow Table, RecordBatch or RecordBatchReader, "
                            f"or an iterator or async iterator of RecordBatches, got {type(source).__name__}")


def _name(source: Any) -> str:
    name = getattr(source, "__qualname__", None) or getattr(source, "__name__", None) or type(source).__name__
    return f"<{name}>"


def _total(items: Any) -> int | None:
    """Rows of a list or tuple of batches (a known total gives a progress bar)."""
    if isinstance(items, (list, tuple)) and all(isinstance(b, (pa.RecordBatch, pa.Table)) for b in items):
        return sum(b.num_rows for b in items)
    return None

