"""Eviction of idle or surplus streams, checked after each committed batch.

- ``idle_ttl`` as an int: a stream absent from that many consecutive batches is evicted.
- ``idle_ttl`` as a ``datetime.timedelta``: a stream not seen for that long (``clock`` seconds).
- ``max_streams``: while more streams are held, the least recently used (by last row) go first.

The scans are numpy over the slot arrays, and are skipped while no stream can be due yet.

``on_evict`` runs after the batch is committed, once per evicted stream. When it raises, the batch
stays committed and ``feed`` still returns its output (an error there would lose the output of rows
already counted, and a client resending the batch would apply it twice); the evicted streams stay
evicted, the other callbacks still run, and each error is reported as an :class:`EvictionWarning`
naming the key and the error. A callback that must not lose a stream's state should handle its own
errors (e.g. queue the state for a retry).
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from streamlstm.errors import ArgumentTypeError, ConfigError
from streamlstm.runtime.store import StreamStore

__all__ = ["Eviction", "EvictionWarning"]


class EvictionWarning(RuntimeWarning):
    """An ``on_evict`` callback raised; the batch was committed and its output returned anyway."""


class Eviction:
    def __init__(self, idle_ttl: Any, max_streams: Any, on_evict: Callable[[Any, Any], None] | None,
                 clock: Callable[[], float]) -> None:
        self.ttl_batches: int | None = None
        self.ttl_seconds: float | None = None
        if isinstance(idle_ttl, datetime.timedelta):
            if idle_ttl.total_seconds() <= 0:
                raise ConfigError(f"`idle_ttl` must be positive, got {idle_ttl}")
            self.ttl_seconds = idle_ttl.total_seconds()
        elif idle_ttl is not None:
            if isinstance(idle_ttl, bool) or not isinstance(idle_ttl, (int, np.integer)):
                raise ArgumentTypeError(f"`idle_ttl` must be an int (batches) or a datetime.timedelta, "
                                        f"got {type(idle_ttl).__name__} {idle_ttl!r}")
            if idle_ttl <= 0:
                raise ConfigError(f"`idle_ttl` must be a positive number of batches, got {idle_ttl}")
            self.ttl_batches = int(idle_ttl)
        if max_streams is not None and (isinstance(max_streams, bool) or not isinstance(max_streams, int)
                                        or max_streams <= 0):
            raise ConfigError(f"`max_streams` must be a positive integer or None, got {max_streams!r}")
        if on_evict is not None and not callable(on_evict):
            raise ArgumentTypeError(f"`on_evict` must be callable, got {type(on_evict).__name__}")
        self.max_streams = max_streams
        self.on_evict = on_evict
        self.clock = clock
        self._next_due: float = -np.inf   # no TTL eviction can happen before this batch number / time
        # Whether anything can ever be evicted (the settings above never change).
        self.active = self.ttl_batches is not None or self.ttl_seconds is not None or self.max_streams is not None

    def notify(self, evicted: Iterable[tuple[Any, Any]]) -> None:
        """Call ``on_evict(key, state)`` for each evicted stream; an error is a warning (see above)."""
        if self.on_evict is None:
            return
        for key, state in evicted:
            try:
                self.on_evict(key, state)
            except Exception as exc:  # noqa: BLE001 - the user's callback; the batch is committed already
                warnings.warn(f"on_evict({key!r}, state) raised {type(exc).__name__}: {exc}; the stream stays "
                              f"evicted and the batch committed", EvictionWarning, stacklevel=4)

    def reschedule(self) -> None:
        """Forget when the next stream can expire (streams were added with their own idle times)."""
        self._next_due = -np.inf

    @property
    def idle_ttl(self) -> int | datetime.timedelta | None:
        if self.ttl_seconds is not None:
            return datetime.timedelta(seconds=self.ttl_seconds)
        return self.ttl_batches

    def victims(self, table: StreamStore, batches: int) -> tuple[np.ndarray, dict[str, int]]:
        """Slots to evict now, and how many for each reason ("ttl", "max_streams")."""
        parts, reasons = [], {}
        if self.ttl_batches is not None or self.ttl_seconds is not None:
            expired = self._expired(table, batches)
            if len(expired):
                parts.append(expired)
                reasons["ttl"] = len(expired)
        if self.max_streams is not None and len(table) - sum(map(len, parts)) > self.max_streams:
            live = table.live.copy()
            for part in parts:
                live[part] = False
            candidates = np.flatnonzero(live)
            surplus = len(candidates) - self.max_streams
            order = np.argpartition(table.last_used[candidates], surplus - 1)[:surplus]
            parts.append(candidates[order])
            reasons["max_streams"] = surplus
        victims = np.concatenate(parts) if parts else np.empty(0, np.int64)
        return victims, reasons

    def _expired(self, table: StreamStore, batches: int) -> np.ndarray:
        now = float(batches) if self.ttl_batches is not None else self.clock()
        if now < self._next_due:
            return np.empty(0, np.int64)
        if self.ttl_batches is not None:
            last, ttl = table.last_batch, self.ttl_batches
        else:
            last, ttl = table.last_seen, self.ttl_seconds
        live = table.live_slots()
        due = live[now - last[live] >= ttl]
        remaining = np.setdiff1d(live, due, assume_unique=True)
        self._next_due = float(last[remaining].min()) + ttl if len(remaining) else -np.inf
        return due
