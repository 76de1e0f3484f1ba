"""Shared timing helpers for the benchmarks: medians of repeated runs, and a plain-text table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median_seconds(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    With ``min_time``, each sample loops ``fn`` until that many seconds passed and reports the mean.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        calls = 0
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / calls)
    return statistics.median(samples)


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int,
                inner: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per call of each contender, measured round-robin.

    CPU time is the process's (all threads): on a shared machine other processes inflate wall time
    unevenly, while CPU time counts only this process's work. The order of the contenders rotates
    from round to round (:func:`_turns`).
    """
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(max(2, inner // 4)):
            fn()
    for turn in range(rounds):
        for name, fn in _turns(contenders, turn):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                fn()
            samples[name].append(((time.perf_counter() - wall) / inner, (time.process_time() - cpu) / inner))
    return {name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for name, values in samples.items()}


def _turns(contenders: dict[str, Callable[[], object]], turn: int) -> list[tuple[str, Callable[[], object]]]:
    """The contenders in round ``turn``'s order: rotated by ``turn``, so that each follows every other
    equally often. A fixed order is biased: a contender that frees a lot of memory (a whole-sequence
    baseline frees ~130 MB) makes whoever runs next pay for the page faults, 3-6 ms per 25 ms batch
    measured in section 8 of bench_runtime.py."""
    items = list(contenders.items())
    shift = turn % len(items)
    return items[shift:] + items[:shift]


def per_call(contenders: dict[str, Callable[[], object]], calls: int, *, block: int = 100,
             warmup: int = 200) -> dict[str, list[float]]:
    """Wall seconds of every single call of each contender, ``calls`` per contender.

    The contenders take turns in blocks of ``block`` calls, so that a busy machine slows them alike; the
    per-call times give the median and the tail (p99) of the latency.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    clock = time.perf_counter
    for turn in range(-(-calls // block)):
        for name, fn in _turns(contenders, turn):
            times = samples[name]
            for _ in range(block):
                start = clock()
                fn()
                times.append(clock() - start)
    return samples


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linear between the nearest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
