"""Memory of the runtime through the public API, measured as resident-set growth in a fresh process.

Each test runs a child Python (``sys.executable -c``) so that other tests' allocations do not move the
figures; the child reports resident bytes from /proc/self/statm after ``gc.collect()``, with a baseline
taken after a warm-up runtime was fed one batch and dropped (libraries loaded, allocator pools warm),
as ``benchmarks/bench_runtime.py`` section 7 does.

- growth: 300,000 new streams of ``LSTM(64)``, F=8, 10,000 per batch, within 1.5x the raw carry bytes
  (n * 2 * 64 * 4) plus 200 bytes per stream.
- churn: ``max_streams=20,000`` fed 200,000 new keys, 2,000 per batch (90 batches of eviction once full):
  the resident set after the last batch stays within 5% (+ 8 MiB) of what it was when the runtime first
  held 20,000 streams. Batches small against ``max_streams``, as in live traffic: with 10,000-row batches
  the table transiently holds 30,000 streams and its one-time growth to 40,000 slots (~30 MiB) sits right
  at the 5% + 8 MiB allowance, which would make the test flaky rather than a measure of growth under churn.
"""

from __future__ import annotations

from typing import Any

import pytest
from runtime_helpers import child_json

pytestmark = pytest.mark.slow

MiB = 2**20
UNITS, FEATURES = 64, 8

CHILD = r"""
import gc, json, os, sys
import numpy as np, pyarrow as pa, torch
import streamlstm as sl

torch.set_num_threads(1)
total, per_batch, max_streams = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) or None
UNITS, FEATURES = {units}, {features}


def rss():
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def batch(start):
    return pa.record_batch({{"id": pa.array(np.arange(start, start + per_batch, dtype=np.int64)), "x": x}})


torch.manual_seed(0)
layer = sl.LSTM(UNITS, return_sequences=True)
layer.build((None, None, FEATURES))
x = np.random.default_rng(0).normal(size=(per_batch, FEATURES)).astype(np.float32)
x = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), FEATURES)
sl.StreamRuntime(layer, key="id", features="x").feed(batch(-per_batch))
result = {{"baseline": rss()}}
runtime = sl.StreamRuntime(layer, key="id", features="x", max_streams=max_streams)
for start in range(0, total, per_batch):
    runtime.feed(batch(start))
    if max_streams and "full" not in result and len(runtime) >= max_streams:
        result["full"], result["full_after"] = rss(), start + per_batch
result["end"], result["streams"] = rss(), len(runtime)
print(json.dumps(result))
"""


def run_child(total: int, per_batch: int, max_streams: int = 0) -> dict[str, Any]:
    """Feed ``total`` new int keys, ``per_batch`` a batch, in a fresh process; resident bytes (after gc) at
    the baseline, when ``max_streams`` were first held, and at the end."""
    return child_json(CHILD.format(units=UNITS, features=FEATURES), str(total), str(per_batch), str(max_streams))


def test_resident_growth_of_new_streams_within_budget() -> None:
    n = 300_000
    result = run_child(n, 10_000)
    assert result["streams"] == n
    growth = result["end"] - result["baseline"]
    raw = n * 2 * UNITS * 4
    budget = 1.5 * raw + 200 * n
    assert growth <= budget, (
        f"{n:,} streams of {UNITS} units: resident growth {growth / MiB:,.1f} MiB = {growth / raw:.2f}x the raw "
        f"carries ({raw / MiB:,.1f} MiB), {(growth - raw) / n:,.0f} B/stream over raw; budget 1.5x raw + "
        f"200 B/stream = {budget / MiB:,.1f} MiB (baseline RSS {result['baseline'] / MiB:,.1f} MiB)")


def test_resident_set_flat_under_churn_at_max_streams() -> None:
    max_streams, total = 20_000, 200_000
    result = run_child(total, 2_000, max_streams)
    assert result["streams"] == max_streams
    full, end = result["full"], result["end"]
    limit = full * 1.05 + 8 * MiB
    assert end <= limit, (
        f"max_streams={max_streams:,}, {total:,} new keys: RSS {full / MiB:,.1f} MiB when first full (after "
        f"{result['full_after']:,} keys), {end / MiB:,.1f} MiB after the last batch ({(end - full) / MiB:+,.1f} MiB, "
        f"{end / full - 1:+.1%}); limit 1.05x + 8 MiB = {limit / MiB:,.1f} MiB (baseline RSS "
        f"{result['baseline'] / MiB:,.1f} MiB)")
