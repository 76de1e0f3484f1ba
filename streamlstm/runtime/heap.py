"""Giving the process heap's free memory back to the operating system after streams leave.

A runtime that evicts streams and keeps taking new ones (``max_streams``, ``idle_ttl``) frees and
allocates a batch's temporaries again and again. glibc's ``malloc`` keeps freed memory inside its
heaps for reuse, and after a large block is freed it raises its mmap threshold to that block's size,
so later tensors of a few MiB come from the heaps too. Their free space fragments, and the resident
set creeps up although the memory in use does not: 100,000 streams of 64 units under churn (10,000 new
keys a batch) held 150 MiB over the baseline after 1,000,000 keys and 173 MiB after 10,000,000,
while the memory in use (the resident set right after a trim) stayed at 57.4 MiB throughout.

``malloc_trim(0)`` hands every free page of every heap back (``MADV_DONTNEED``); Dask's workers do the
same against the same growth. :func:`give_back` runs when streams were released (:meth:`StreamStore.compact
<streamlstm.runtime.store.StreamStore.compact>`). A trim walks the heaps (about 2 ms at 150 MiB), so it
runs at most once per ``1 / SHARE`` times its own last duration (about every second), for all runtimes
of the process together: at most 0.2% of the time, which keeps the creep away (the same churn with it:
13 trims in 10,000,000 keys, and a peak of 117 to 136 MiB in every window of 1,000,000 keys, with no
trend). Where there is no glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["SHARE", "HeapTrimmer", "give_back"]

SHARE = 0.002   # the most of the process's time trims may take


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class HeapTrimmer:
    """Calls ``trim(0)`` when asked, unless the last trim ended less than ``duration / share`` ago."""

    def __init__(self, trim: Callable[[int], int] | None, clock: Callable[[], float] = time.perf_counter,
                 share: float = SHARE) -> None:
        self._trim, self._clock, self._share = trim, clock, share
        self._lock = threading.Lock()
        self._next = float("-inf")   # the clock's time from which the next trim may run
        self.trims = 0

    @property
    def available(self) -> bool:
        """Whether this process has a ``malloc_trim`` to call."""
        return self._trim is not None

    def __call__(self) -> bool:
        """Trim now if the time budget allows (another thread trimming: skip); returns whether it did."""
        if self._trim is None or self._clock() < self._next or not self._lock.acquire(blocking=False):
            return False
        try:
            started = self._clock()
            self._trim(0)
            ended = self._clock()
            self._next = ended + (ended - started) / self._share
            self.trims += 1
            return True
        finally:
            self._lock.release()


give_back = HeapTrimmer(_malloc_trim())
