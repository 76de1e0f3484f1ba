"""The driver's side of the shards: their actors, the batches in flight, the log, and recovery.

:class:`ShardGroup` carries out the one-round-trip feed protocol described in
:mod:`streamlstm.cluster.sharded`: it sends each batch's parts (:meth:`ShardGroup.send`), lands them
(:meth:`ShardGroup.land`: every shard's status and output in one ``ray.get``), passes every shard the
verdicts that settle its pending feed with its next call, and after any failure (a bad batch, a dead
actor) brings every shard back to exactly the batches landed so far (:meth:`ShardGroup.rewind`).
"""

from __future__ import annotations

import threading
import time as _time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from streamlstm.cluster.layout import BatchSplit, SharedBatch, Splitter
from streamlstm.cluster.shard import PREPARED
from streamlstm.errors import StateError, StreamError, StreamLSTMError
from streamlstm.runtime.report import COUNTERS

__all__ = ["Flight", "RecoveryPoint", "ShardGroup", "renumber"]


class _ShardsDied(Exception):
    """A shard's actor is gone (or a call depended on the answer of one that is)."""


@dataclass
class Flight:
    """One batch on its way through the shards: cut, then sent as batch number ``seq``."""

    batch: Any                               # what was fed: a RecordBatch, or what shard 0 refuses
    split: BatchSplit
    problem: StreamLSTMError | None = None   # the key column could not be hashed: shard 0 names the error
    seq: int = -1
    sent: float = 0.0
    statuses: dict[int, Any] = field(default_factory=dict)   # shard -> ref of its status
    outputs: dict[int, Any] = field(default_factory=dict)    # shard -> ref of its output


@dataclass
class RecoveryPoint:
    """Where a restarted shard starts from: shard files of the same layout (``own``), or files of
    another layout from which it takes its key groups (``counters``: each shard's counts there)."""

    paths: list[str]
    own: bool
    counters: list[dict] = field(default_factory=list)


def renumber(error: StreamLSTMError, row: int, rows: np.ndarray) -> tuple[StreamLSTMError, int]:
    """``error`` naming the row of the whole batch (``rows[row]``) instead of row ``row`` of a shard's
    part, and that row (-1 when the error names none: it does not depend on the part)."""
    if not isinstance(error, StreamError) or not 0 <= row < len(rows):
        return error, -1
    whole = int(rows[row])
    return type(error)(str(error).replace(f"row {row}", f"row {whole}", 1), row=whole), whole


class ShardGroup:
    """The shard actors and everything the driver keeps to feed them all or nothing and restart them."""

    def __init__(self, ray: Any, spawn: Callable[[], Any], shards: int, splitter: Splitter, recover: bool) -> None:
        self.ray, self.spawn, self.splitter, self.recover = ray, spawn, splitter, recover
        self.actors = [spawn() for _ in range(shards)]
        self.owed: dict[int, tuple[int, list[Any]]] = {}   # shard -> (batch, its status refs): the feed it holds
        self.window: deque[Flight] = deque()   # batches sent, not landed, in order
        self.sent = 0                          # batch numbers given out
        self.landed = -1                       # the number of the last batch landed
        self.log: list[Any] = []               # batches landed since the recovery point
        self.point: RecoveryPoint | None = None
        self.carried = [dict.fromkeys(COUNTERS, 0) for _ in range(shards)]   # a shard's counts before a restart
        self.restarts = 0
        self.batches = 0                       # batches landed in the runtime's life (a loaded one: since its start)
        self.seconds = 0.0
        self._last_landed = 0.0
        # One feed at a time (its batches in ``window``); queries from other threads wait for a send or
        # a land to finish, and see the batches landed.
        self.lock = threading.RLock()

    # -- feeding ---------------------------------------------------------------------------------
    def send(self, flight: Flight) -> None:
        """Send ``flight``'s parts; each step carries the verdicts that settle its shard's pending feed."""
        with self.lock:
            self._send(flight)

    def _send(self, flight: Flight) -> None:
        flight.seq, self.sent = self.sent, self.sent + 1
        flight.sent = _time.perf_counter()
        flight.statuses, flight.outputs = {}, {}
        stored: dict[int, Any] = {}   # id of a part sent to several shards -> its one object in the store
        for shard, part in flight.split.parts.items():
            if isinstance(part, SharedBatch):
                part = stored[id(part)] if id(part) in stored else stored.setdefault(id(part), self.ray.put(part))
            call = self.actors[shard].step.options(num_returns=2)
            _, verdicts = self.owed.pop(shard, (-1, []))
            flight.statuses[shard], flight.outputs[shard] = call.remote(flight.seq, part, shard, *verdicts)
        verdicts = list(flight.statuses.values())
        for shard in flight.statuses:
            self.owed[shard] = (flight.seq, verdicts)
        self.window.append(flight)

    def land(self) -> tuple[Flight, dict[int, pa.RecordBatch]]:
        """Wait for the oldest batch in flight; it and its outputs by shard. A bad batch rewinds every shard
        to the batches landed before it and raises its error; a dead shard is restarted and the batches
        in flight are sent again."""
        with self.lock:
            return self._land()

    def _land(self) -> tuple[Flight, dict[int, pa.RecordBatch]]:
        while True:
            flight = self.window[0]
            try:
                values = self._get(list(flight.statuses.values()) + list(flight.outputs.values()))
                break
            except _ShardsDied:
                self._resend()
        statuses = dict(zip(flight.statuses, values[:len(flight.statuses)]))
        errors = [renumber(*status, flight.split.rows[shard]) for shard, status in statuses.items()
                  if status is not PREPARED]
        if errors or flight.problem is not None:
            self._rewind()
            # An error without a row (a schema error) comes before row errors; then the first row.
            raise min(errors, key=lambda e: (e[1] >= 0, e[1]))[0] if errors else flight.problem
        self.window.popleft()
        self.landed = flight.seq
        self.batches += 1
        if self.recover:
            self.log.append(flight.batch)
        now = _time.perf_counter()
        self.seconds += now - max(flight.sent, self._last_landed)
        self._last_landed = now
        return flight, dict(zip(flight.outputs, values[len(flight.statuses):]))

    # -- other calls -----------------------------------------------------------------------------
    def ask(self, method: str, args_of: dict[int, tuple] | None = None) -> dict[int, Any]:
        """``method`` on every shard (or on the shards of ``args_of``, with those arguments), after the
        batches in flight and the pending feeds are settled; a dead shard is restarted and the call
        repeated. A batch still in flight (another thread's feed) is not seen."""
        with self.lock:
            while True:
                calls = args_of if args_of is not None else dict.fromkeys(range(len(self.actors)), ())
                try:
                    settled = self._settle_landed(calls)
                    refs = {s: getattr(self.actors[s], method).remote(*a) for s, a in calls.items()}
                    return dict(zip(refs, self._get(list(refs.values()) + settled)))
                except _ShardsDied:
                    self._resend()

    def _settle_landed(self, shards: Iterable[int]) -> list[Any]:
        """Send ``settle`` to those of ``shards`` that hold a landed batch prepared; the refs of the calls."""
        landed = [s for s in shards if s in self.owed and self.owed[s][0] <= self.landed]
        return [self.actors[s].settle.remote(*self.owed.pop(s)[1]) for s in landed]

    def discard(self) -> None:
        """Drop the batches in flight that no caller will land (a ``feed_many`` left unfinished): they
        change nothing."""
        with self.lock:
            if self.window or any(seq > self.landed for seq, _ in self.owed.values()):
                self.rewind()

    def flush(self) -> None:
        """Settle every pending feed of a landed batch now (the commits otherwise travel with the next call)."""
        with self.lock:
            try:
                self._get(self._settle_landed(list(self.owed)))
            except _ShardsDied:
                self._resend()

    # -- failures --------------------------------------------------------------------------------
    def _get(self, refs: list[Any]) -> list[Any]:
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError as exc:
            raise _ShardsDied() from exc

    def rewind(self) -> None:
        """Bring every shard to exactly the batches landed: a live one commits its pending feed if that
        batch landed and drops it otherwise; a dead one is restarted. The batches in flight are dropped."""
        with self.lock:
            self._rewind()

    def _rewind(self) -> None:
        self.window.clear()
        self.owed.clear()
        refs = [actor.settle_to.remote(self.landed) for actor in self.actors]
        dead = set()
        for shard, ref in enumerate(refs):
            try:
                self._get([ref])
            except _ShardsDied:
                dead.add(shard)
        for shard in sorted(dead):
            self._restart(shard)

    def _resend(self) -> None:
        """After a shard died: rewind, then send the batches that were in flight again, in order."""
        flights = list(self.window)
        self._rewind()
        for flight in flights:
            self._send(flight)

    def _restart(self, shard: int) -> None:
        """Start a dead shard again: from the recovery point, then its part of every logged batch."""
        if not self.recover:
            raise StateError(f"shard {shard} of this ShardedRuntime died and it keeps no log to restart it from "
                             f"(recover=False); load the last checkpoint instead")
        self.ray.kill(self.actors[shard], no_restart=True)
        actor = self.spawn()
        point = self.point
        if point is not None:
            own = point.own
            self.ray.get(actor.restore.remote([point.paths[shard]] if own else point.paths,
                                              None if own else self.splitter.layout.groups_of(shard)))
            if not own:   # a fresh runtime counts from zero: carry the shard's counts at the point
                self.carried[shard] = dict(point.counters[shard])
        for batch in self.log:
            part = self.splitter.split(batch).part(shard)
            if part is not None:
                self.ray.get(actor.feed.remote(part))
        self.actors[shard] = actor
        self.restarts += 1

    def checkpoint(self, point: RecoveryPoint) -> None:
        """Restart lost shards from ``point`` on (taken at the last landed batch); the log restarts here."""
        self.point = point
        self.log.clear()

    def close(self) -> None:
        """Settle the pending feeds (the landed ones commit), then end the actors (after ``ray.shutdown()``
        they are gone already)."""
        actors, self.actors = self.actors, []
        if not self.ray.is_initialized():
            return
        try:
            self.ray.get([actor.settle_to.remote(self.landed) for actor in actors])
        except self.ray.exceptions.RayError:
            pass   # a dead shard has nothing left to settle; handles of an earlier Ray session, no actors
        for actor in actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except self.ray.exceptions.ActorHandleNotFoundError:
                return   # the handles belong to an earlier Ray session, which took the actors with it
