"""Micro-batching: record batches from concurrent clients fed to the runtime together.

Every caller of :meth:`MicroBatcher.submit` queues its batch and waits. There is no batching thread:
the first caller that finds no round running *leads* one. It waits up to ``max_delay`` after the
oldest queued batch arrived for more callers (but not when every open feeder already has a batch
queued, so one client on an idle server never waits), takes the queue's head up to ``max_batch_rows``
rows, feeds it as one batch, hands each caller exactly its rows (the runtime answers rows in input
order, so each caller's rows are a slice), and passes the lead to the caller of the next queued batch.
Batches are taken in arrival order, so a stream that several clients feed is processed in arrival
order, and each stream's rows keep their order.

A failed combined feed changes no state (the runtime is all-or-nothing), so the round then feeds the
batches one by one, in the same order: one client's bad batch fails only that client, and the result
is exactly what feeding the batches one at a time would give. Batches of different schemas (another
key or feature type) are fed as consecutive groups.

Coalescing is off for models with ``go_backwards`` layers: those process each ``feed`` call's rows of
a stream last to first, so joining two clients' batches would change the numbers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pyarrow as pa

__all__ = ["MicroBatcher"]

_WAIT, _DONE, _LEAD = 0, 1, 2


class _Request:
    __slots__ = ("arrived", "batch", "error", "result", "state", "wake")

    def __init__(self, batch: pa.RecordBatch) -> None:
        self.batch = batch
        self.arrived = time.perf_counter()
        self.state = _WAIT
        self.result: pa.RecordBatch | None = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()  # released once: when the request is answered or asked to lead


class MicroBatcher:
    """Coalesce concurrent :meth:`submit` calls into fewer ``feed`` calls (see the module docstring).

    Args:
        feed (callable): ``feed(batch_or_table) -> RecordBatch`` with one output row per input row, in
            input order, all or nothing (``StreamRuntime.feed``).
        max_delay (float, 0.002): seconds a round waits for more batches after its first one arrived.
        max_batch_rows (int, 16384): rows a round takes at most (a larger single batch is fed alone).
        coalesce (bool, True): False feeds every batch on its own (still one at a time, in order).
    """

    def __init__(self, feed: Callable[[Any], pa.RecordBatch], *, max_delay: float = 0.002,
                 max_batch_rows: int = 16384, coalesce: bool = True) -> None:
        self._feed = feed
        self.max_delay, self.max_batch_rows, self.coalesce = float(max_delay), int(max_batch_rows), coalesce
        self._mutex = threading.Lock()
        self._arrival = threading.Condition(self._mutex)
        self._queue: deque[_Request] = deque()
        self._leading = False
        self._feeders = 0
        self.counters = {"rounds": 0, "batches": 0, "rows": 0, "max_round_rows": 0, "max_round_batches": 0,
                         "fallbacks": 0, "errors": 0}

    # -- feeders: open calls that may submit soon (a round waits for them, up to max_delay) ------------
    def add_feeder(self) -> None:
        with self._mutex:
            self._feeders += 1

    def remove_feeder(self) -> None:
        with self._mutex:
            self._feeders -= 1
            self._arrival.notify()

    @property
    def feeders(self) -> int:
        return self._feeders

    def submit(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Feed ``batch`` (possibly with others); returns its output rows or raises its error."""
        request = _Request(batch)
        with self._mutex:
            self._queue.append(request)
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                self._arrival.notify()
        if not lead:
            request.wake.acquire()
        if request.state != _DONE:  # leading: this request is at the head of the queue
            self._lead()
        if request.error is not None:
            raise request.error
        return request.result

    def _lead(self) -> None:
        with self._mutex:
            self._wait_for_more()
            taken = self._take()
        try:
            self._run(taken)
        except BaseException as exc:  # noqa: BLE001 - e.g. KeyboardInterrupt: every caller must wake
            for request in taken:
                if request.result is None and request.error is None:
                    request.error = exc
        with self._mutex:
            following = self._queue[0] if self._queue else None
            self._leading = following is not None
        for request in taken:
            request.state = _DONE
            request.wake.release()
        if following is not None:
            following.state = _LEAD
            following.wake.release()

    def _wait_for_more(self) -> None:
        if not self.coalesce:
            return
        deadline = self._queue[0].arrived + self.max_delay
        while len(self._queue) < self._feeders and self._rows() < self.max_batch_rows:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._arrival.wait(left)

    def _rows(self) -> int:
        return sum(request.batch.num_rows for request in self._queue)

    def _take(self) -> list[_Request]:
        taken = [self._queue.popleft()]
        rows = taken[0].batch.num_rows
        while self.coalesce and self._queue and rows + self._queue[0].batch.num_rows <= self.max_batch_rows:
            rows += self._queue[0].batch.num_rows
            taken.append(self._queue.popleft())
        counters = self.counters
        counters["rounds"] += 1
        counters["batches"] += len(taken)
        counters["rows"] += rows
        counters["max_round_rows"] = max(counters["max_round_rows"], rows)
        counters["max_round_batches"] = max(counters["max_round_batches"], len(taken))
        return taken

    def _run(self, taken: list[_Request]) -> None:
        for group in _schema_groups(taken):
            if len(group) == 1:
                self._feed_one(group[0])
                continue
            try:
                output = self._feed(pa.Table.from_batches([request.batch for request in group]))
            except Exception:  # noqa: BLE001 - nothing changed: feed them one by one, each gets its own answer
                self.counters["fallbacks"] += 1
                for request in group:
                    self._feed_one(request)
                continue
            offset = 0
            for request in group:
                request.result = output.slice(offset, request.batch.num_rows)
                offset += request.batch.num_rows

    def _feed_one(self, request: _Request) -> None:
        try:
            request.result = self._feed(request.batch)
        except Exception as exc:  # noqa: BLE001 - handed to the caller that submitted the batch
            self.counters["errors"] += 1
            request.error = exc


def _schema_groups(taken: list[_Request]) -> list[list[_Request]]:
    groups: list[list[_Request]] = []
    for request in taken:
        if groups and groups[-1][0].batch.schema.equals(request.batch.schema):
            groups[-1].append(request)
        else:
            groups.append([request])
    return groups
