"""Giving free heap memory back after evictions (:mod:`streamlstm.runtime.heap`).

The rate limit is checked with a stand-in clock and trim function (the C library is the dependency
replaced, the policy is ours); the real ``malloc_trim`` is checked in a fresh process, where a
fragmented heap's free memory must leave the resident set, and a runtime that evicts must call it.
"""

from __future__ import annotations

import pytest
from runtime_helpers import child_json

from streamlstm.runtime.heap import HeapTrimmer, give_back

MiB = 2**20
glibc_only = pytest.mark.skipif(not give_back.available, reason="malloc_trim is glibc's (Linux)")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trims_at_most_its_share_of_the_time() -> None:
    clock, calls = Clock(), []

    def trim(pad: int) -> int:
        calls.append(pad)
        clock.now += 0.002   # a trim takes 2 ms
        return 1

    trimmer = HeapTrimmer(trim, clock, share=0.01)
    assert trimmer.available
    assert trimmer() and calls == [0]             # the first call trims (pad 0: every free page)
    clock.now += 0.1
    assert not trimmer() and len(calls) == 1      # 2 ms / 1% = 0.2 s must pass after the trim ended
    clock.now += 0.0999
    assert not trimmer() and len(calls) == 1
    clock.now += 0.0002
    assert trimmer() and len(calls) == 2
    assert trimmer.trims == 2


def test_without_malloc_trim_nothing_happens() -> None:
    trimmer = HeapTrimmer(None, Clock())
    assert not trimmer.available
    assert not trimmer() and trimmer.trims == 0


def test_a_trim_in_progress_makes_other_callers_skip() -> None:
    clock = Clock()
    inner: list[bool] = []

    def trim(pad: int) -> int:
        inner.append(trimmer())   # another caller while this trim runs (as from another thread)
        clock.now += 0.001
        return 1

    trimmer = HeapTrimmer(trim, clock)
    assert trimmer()
    assert inner == [False] and trimmer.trims == 1


FRAGMENTED = r"""
import json, os
import numpy as np
from streamlstm.runtime.heap import give_back

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

base = rss()
# 3,200 blocks of 64 KiB (below malloc's mmap threshold: they come from the heap), every page written;
# all freed but the last, which keeps the free space inside the heap, where free() does not return it.
blocks = [np.ones(16384, np.float32) for _ in range(3200)]
last = blocks[-1]
del blocks
held = rss()
trimmed = give_back()
print(json.dumps({"base": base, "held": held, "after": rss(), "trimmed": trimmed}))
"""


@glibc_only
def test_malloc_trim_returns_a_fragmented_heaps_free_pages() -> None:
    result = child_json(FRAGMENTED)
    held, after = result["held"] - result["base"], result["after"] - result["base"]
    assert result["trimmed"]
    assert held >= 150 * MiB, f"the freed blocks were already returned ({held / MiB:.0f} MiB held): no test"
    assert after <= held - 150 * MiB, f"{held / MiB:.0f} MiB held before the trim, {after / MiB:.0f} MiB after"


EVICTING = r"""
import json
import numpy as np, pyarrow as pa
import streamlstm as sl
from streamlstm.runtime.heap import give_back

layer = sl.LSTM(4)
rt = sl.StreamRuntime(layer, key="id", features="x", max_streams=10)
x = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(40, np.float32)), 2)
before = give_back.trims
rt.feed(pa.record_batch({"id": pa.array(np.arange(20, dtype=np.int64)), "x": x}))
print(json.dumps({"before": before, "after": give_back.trims, "streams": len(rt)}))
"""


@glibc_only
def test_an_eviction_gives_free_heap_memory_back() -> None:
    result = child_json(EVICTING)
    assert result["streams"] == 10
    assert result["before"] == 0 and result["after"] == 1
