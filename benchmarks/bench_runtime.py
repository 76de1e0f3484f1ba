"""Stream runtime benchmark: ratios against baselines measured in the same run (issues 3 and 10, Performance).

Contenders run interleaved (round after round, every contender once per round) so that a busy machine
slows them alike; each figure is a median over rounds (latencies: median and p99 of single calls, the
contenders taking turns in blocks). Only the public API is used (``StreamRuntime``, ``feed``, ``len``),
so the same script measures any version of the runtime. Run: ``python benchmarks/bench_runtime.py``
(``--quick``: fewer rounds; ``--sections 137``: some sections; ``--skip-memory``: no section 7;
``--json PATH``: every figure, for comparing runs; ``--before PATH``: show an earlier run's figures, e.g.
of the previous version, beside this run's). A goals summary (met / MISSED) ends the output.

1. Fleet: 10,000 streams x 1 row per batch, F=32, units=64: ``feed`` rows/s in each mode against raw
   ``torch.nn.LSTMCell`` on a [10000, 32] batch (goal: auto mode >= 140% of raw), and a naive runtime
   (Python dict lookups, fancy-index gather/scatter). "same order": the fleet's rows come in the same
   order every batch; "shuffled": a new order every batch (the full path: key lookup, row layout, gathers).
2. Small fleet: 100 streams x 1 row per batch, F=8, model ``Sequential(LSTM(64), Linear(64, 1))``:
   ``feed`` rows/s against the raw compute on the same rows, ``LSTMCell`` on [100, 8] plus the Linear
   head (goal: auto mode >= 80% of raw).
3. Live traffic: batches of 64 or 1,000 rows whose keys are drawn from 1,000 streams, with repeats
   (a stream may have several rows in a batch) or distinct; F=8, units=32, one torch thread. ``feed``
   (auto mode) time against one raw ``LSTMCell`` call on as many rows (goal: <= 4x for 64 rows with
   repeats, <= 1.5x for 1,000 rows with repeats; distinct keys are reported without a goal).
4. Latency: 1 stream, 1 row per ``feed`` (auto mode): median and p99 of single calls against one raw
   ``LSTMCell`` call on [1, 32] (goal: median <= 2.5x).
5. Latency in forced chunk mode: as 4 with ``mode="chunk"`` (no mode should have a cliff; goal as 4:
   median <= 2.5x).
6. Replay: 1,000 streams x 100 rows per batch in chunk mode against ``torch.nn.LSTM`` on the same
   [1000, 100, 32] tensor (goal: replay >= 90% of raw nn.LSTM rows/s); rows interleaved (time-major)
   or grouped by stream.
7. Memory, each part in a fresh process (resident set from /proc/self/statm, after gc, against a
   baseline taken after a warm-up runtime fed one batch and dropped):
   a. 1,000,000 streams of 64 units fed 10,000 new streams per batch: resident growth against the raw
      carry bytes n * 2 * 64 * 4 (goal: <= 1.5x raw + 200 bytes per stream, 923 MiB), and the rate of
      new streams (goal: >= 200,000 rows/s).
   b. Churn: ``max_streams=100,000`` fed 10,000 new keys per batch, 5,000,000 keys in all: the peak
      resident set (read after every batch) when it first holds 100,000 streams, from there to 1,000,000
      keys, and from 1,000,000 to 5,000,000 (goal: flat under further churn, the last peak within +5%
      of the one before). Beside it the same 100,000 keys fed again and again (no eviction, no new
      stream): the resident set rises after the first full batch there too, until malloc's heaps hold a
      feed's temporaries, so the growth that matters is the one after that. Without
      :mod:`streamlstm.runtime.heap` (glibc's ``malloc_trim`` after evictions, at most 0.2% of the
      time) the churn's resident set crept on: 150 MiB over the base after 1,000,000 keys, 173 MiB
      after 10,000,000, with 57.4 MiB in use throughout.
8. Replay cut into batches: 10,000 streams x 100 rows, F=8, units=32, rows interleaved as recorded live
   (row r is step r // 10,000 of stream r % 10,000), fed in auto mode in batches of 65,536 rows (the
   default ``batch_rows`` of ``streamlstm replay``, so streams get 6 or 7 rows per batch) and of 100,000
   rows (10 rows each), against ``torch.nn.LSTM`` on the same data as one [10000, 100, 8] tensor (goal:
   65,536-row batches >= 90% of raw nn.LSTM rows/s). ``benchmarks/bench_replay.py`` measures the whole
   replay command (file reading and writing included). Runs before section 7.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import interleaved, per_call, percentile, print_table

import streamlstm as sl

F, UNITS = 32, 64
MiB = 2**20


@dataclass
class Goal:
    section: str
    goal: str
    value: str
    met: bool


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[object]]
    figures: dict[str, Any] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)


def rate_rows(times: dict[str, tuple[float, float]], rows: int,
              baseline: str) -> tuple[list[list[object]], dict[str, Any]]:
    wall0, cpu0 = times[baseline]
    table = [[name, f"{rows / wall:,.0f}", f"{wall0 / wall:.0%}", f"{cpu0 / cpu:.0%}"]
             for name, (wall, cpu) in times.items()]
    figures = {name: {"seconds_wall": wall, "seconds_cpu": cpu, "rows_per_s": rows / wall,
                      "vs_raw_wall": wall0 / wall, "vs_raw_cpu": cpu0 / cpu}
               for name, (wall, cpu) in times.items()}
    return table, figures


def make_layer(units: int = UNITS, features: int = F) -> sl.LSTM:
    torch.manual_seed(0)
    layer = sl.LSTM(units, return_sequences=True)
    layer.build((None, None, features))
    return layer


def torch_cell(layer: sl.LSTM) -> torch.nn.LSTMCell:
    features, gates = layer.cell.kernel.shape
    cell = torch.nn.LSTMCell(features, gates // 4)
    with torch.no_grad():
        cell.weight_ih.copy_(layer.cell.kernel.T)
        cell.weight_hh.copy_(layer.cell.recurrent_kernel.T)
        cell.bias_ih.copy_(layer.cell.bias)
        cell.bias_hh.zero_()
    return cell


def fixed_list(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def batches(keys: list[np.ndarray], rng: np.random.Generator, features: int = F) -> list[pa.RecordBatch]:
    return [pa.record_batch({"id": pa.array(k.astype(np.int64)),
                             "x": fixed_list(rng.normal(size=(len(k), features)).astype(np.float32))})
            for k in keys]


def cycle(feed: Callable[[pa.RecordBatch], object], data: list[pa.RecordBatch]) -> Callable[[], object]:
    """Feed the batches of ``data`` in turn, one per call."""
    state = {"i": 0}

    def run() -> object:
        state["i"] += 1
        return feed(data[state["i"] % len(data)])
    return run


class NaiveRuntime:
    """The baseline the issue names: a dict per stream key, fancy-index gather/scatter, LSTMCell."""

    def __init__(self, cell: torch.nn.LSTMCell) -> None:
        self.cell, self.slots = cell, {}
        self.h = torch.zeros(1024, UNITS)
        self.c = torch.zeros(1024, UNITS)

    def feed(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        keys = batch.column("id")
        x = torch.from_numpy(batch.column("x").flatten().to_numpy(zero_copy_only=False).reshape(len(keys), F))
        index = []
        for key in keys.to_pylist():
            slot = self.slots.get(key)
            if slot is None:
                slot = self.slots[key] = len(self.slots)
                if slot >= len(self.h):
                    self.h = torch.cat([self.h, torch.zeros_like(self.h)])
                    self.c = torch.cat([self.c, torch.zeros_like(self.c)])
            index.append(slot)
        index = torch.tensor(index)
        with torch.no_grad():
            h, c = self.cell(x, (self.h[index], self.c[index]))
            self.h[index], self.c[index] = h, c
        return pa.record_batch({"id": keys, "output": fixed_list(h.numpy())})


RATE_HEADERS = ["contender", "rows/s (wall)", "vs raw (wall)", "vs raw (CPU)"]


def fleet(rounds: int) -> Section:
    n = 10_000
    layer, rng = make_layer(), np.random.default_rng(0)
    cell = torch_cell(layer)
    same = batches([np.arange(n)] * 6, rng)
    shuffled = batches([rng.permutation(n) for _ in range(6)], rng)
    x = torch.from_numpy(rng.normal(size=(n, F)).astype(np.float32))
    h, c = torch.zeros(n, UNITS), torch.zeros(n, UNITS)

    def raw() -> object:
        with torch.no_grad():
            return cell(x, (h, c))

    baseline = "raw LSTMCell [10000, 32]"
    contenders: dict[str, Callable[[], object]] = {baseline: raw, **feed_contenders(layer, same, shuffled)}
    strings = [b.set_column(0, "id", pa.array([f"sensor-{k}" for k in b.column(0).to_pylist()])) for b in shuffled]
    contenders["feed mode=auto, shuffled string keys"] = cycle(
        sl.StreamRuntime(layer, key="id", features="x").feed, strings)
    contenders["naive runtime"] = cycle(NaiveRuntime(cell).feed, same)
    table, figures = rate_rows(interleaved(contenders, 3 * rounds, 1), n, baseline)
    goals = [Goal("1", f"{name}: >= 140% of raw LSTMCell", f"{figures[name]['vs_raw_wall']:.0%}",
                  figures[name]["vs_raw_wall"] >= 1.40)
             for name in ("feed mode=auto, same order", "feed mode=auto, shuffled")]
    return Section("10,000 streams x 1 row, F=32, units=64 (rows/s; share of raw LSTMCell; goal: auto >= 140%)",
                   RATE_HEADERS, table, figures, goals)


def feed_contenders(model: torch.nn.Module, same: list[pa.RecordBatch],
                    shuffled: list[pa.RecordBatch]) -> dict[str, Callable[[], object]]:
    """A runtime per mode fed the same order every batch, and one in auto mode fed shuffled keys."""
    contenders = {f"feed mode={mode}, same order": cycle(sl.StreamRuntime(model, key="id", features="x",
                                                                          mode=mode).feed, same)
                  for mode in ("step", "chunk", "auto")}
    contenders["feed mode=auto, shuffled"] = cycle(sl.StreamRuntime(model, key="id", features="x").feed, shuffled)
    return contenders


def small_fleet(rounds: int) -> Section:
    n, features, units = 100, 8, 64
    rng = np.random.default_rng(4)
    lstm = make_layer(units, features)
    head = torch.nn.Linear(units, 1)
    model = torch.nn.Sequential(lstm, head)
    cell = torch_cell(lstm)
    same = batches([np.arange(n)] * 20, rng, features)
    shuffled = batches([rng.permutation(n) for _ in range(20)], rng, features)
    x = torch.from_numpy(rng.normal(size=(n, features)).astype(np.float32))
    h, c = torch.zeros(n, units), torch.zeros(n, units)

    def raw() -> object:
        with torch.no_grad():
            return head(cell(x, (h, c))[0])

    baseline = "raw LSTMCell [100, 8] + Linear"
    contenders: dict[str, Callable[[], object]] = {baseline: raw, **feed_contenders(model, same, shuffled)}
    table, figures = rate_rows(interleaved(contenders, 3 * rounds, 20), n, baseline)
    goals = [Goal("2", f"{name}: >= 80% of raw LSTMCell + Linear", f"{figures[name]['vs_raw_wall']:.0%}",
                  figures[name]["vs_raw_wall"] >= 0.80)
             for name in ("feed mode=auto, same order", "feed mode=auto, shuffled")]
    return Section("100 streams x 1 row, F=8, Sequential(LSTM(64), Linear(64, 1)) (rows/s; share of raw "
                   "LSTMCell + Linear; goal: auto >= 80%)", RATE_HEADERS, table, figures, goals)


def live_traffic(rounds: int) -> Section:
    streams, features, units, pool = 1000, 8, 32, 20
    goals_at = {(64, "repeats"): 4.0, (1000, "repeats"): 1.5}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        layer, rng = make_layer(units, features), np.random.default_rng(5)
        cell = torch_cell(layer)
        table: list[list[object]] = []
        figures: dict[str, Any] = {}
        goals = []
        for rows, inner in ((64, 20), (1000, 2)):
            x = torch.from_numpy(rng.normal(size=(rows, features)).astype(np.float32))
            h, c = torch.zeros(rows, units), torch.zeros(rows, units)

            def raw() -> object:
                with torch.no_grad():
                    return cell(x, (h, c))

            contenders: dict[str, Callable[[], object]] = {"raw": raw}
            for keys, draw in (("repeats", lambda: rng.integers(0, streams, size=rows)),
                               ("distinct", lambda: rng.choice(streams, rows, replace=False))):
                data = batches([draw() for _ in range(pool)], rng, features)
                rt = sl.StreamRuntime(layer, key="id", features="x")
                rt.feed(batches([np.arange(streams)], rng, features)[0])  # every stream known: steady traffic
                for batch in data:
                    rt.feed(batch)
                contenders[keys] = cycle(rt.feed, data)
            times = interleaved(contenders, 3 * rounds, inner)
            wall0, cpu0 = times.pop("raw")
            for keys, (wall, cpu) in times.items():
                limit = goals_at.get((rows, keys))
                name = f"{rows} rows, keys with {keys}" if keys == "repeats" else f"{rows} rows, distinct keys"
                table.append([name, f"{wall * 1e6:,.0f}", f"{wall0 * 1e6:,.0f}", f"{wall / wall0:.2f}x",
                              f"{cpu / cpu0:.2f}x", "-" if limit is None else f"<= {limit}x"])
                figures[name] = {"feed_us": wall * 1e6, "raw_us": wall0 * 1e6, "ratio_wall": wall / wall0,
                                 "ratio_cpu": cpu / cpu0, "feed_cpu_us": cpu * 1e6, "raw_cpu_us": cpu0 * 1e6}
                if limit is not None:
                    goals.append(Goal("3", f"{name}: feed <= {limit}x raw LSTMCell", f"{wall / wall0:.2f}x",
                                      wall / wall0 <= limit))
    finally:
        torch.set_num_threads(threads)
    return Section("Live traffic: keys drawn from 1,000 streams, F=8, units=32, 1 thread, auto mode (time per "
                   "feed against one raw LSTMCell call on as many rows)",
                   ["batch", "feed us", "raw us", "ratio (wall)", "ratio (CPU)", "goal"], table, figures, goals)


def latency(calls: int, mode: str, section: str) -> Section:
    layer, rng = make_layer(), np.random.default_rng(1)
    cell = torch_cell(layer)
    one = batches([np.array([7])] * 8, rng)
    x, h, c = torch.randn(1, F), torch.zeros(1, UNITS), torch.zeros(1, UNITS)

    def raw() -> object:
        with torch.no_grad():
            return cell(x, (h, c))

    baseline, name = "raw LSTMCell [1, 32]", f"feed mode={mode} (1 stream, 1 row)"
    contenders: dict[str, Callable[[], object]] = {
        baseline: raw, name: cycle(sl.StreamRuntime(layer, key="id", features="x", mode=mode).feed, one)}
    if mode == "auto":
        naive = NaiveRuntime(cell)
        contenders["naive runtime"] = lambda: naive.feed(one[0])
    samples = per_call(contenders, calls)
    stats = {n: (percentile(s, 50), percentile(s, 99)) for n, s in samples.items()}
    median0, p990 = stats[baseline]
    table = [[n, f"{median * 1e6:.1f}", f"{p99 * 1e6:.1f}", f"{median / median0:.2f}x", f"{p99 / p990:.2f}x"]
             for n, (median, p99) in stats.items()]
    figures = {n: {"median_us": median * 1e6, "p99_us": p99 * 1e6, "median_vs_raw": median / median0,
                   "p99_vs_raw": p99 / p990, "calls": len(samples[n])} for n, (median, p99) in stats.items()}
    ratio = figures[name]["median_vs_raw"]
    goals = [Goal(section, f"{name}: median <= 2.5x raw LSTMCell", f"{ratio:.2f}x", ratio <= 2.5)]
    title = (f"1 stream, 1 row per feed, mode={mode} (latency of {calls:,} single calls each; goal: median <= "
             f"2.5x{'' if mode == 'auto' else ', as section 4'})")
    return Section(title, ["contender", "median us", "p99 us", "median vs raw", "p99 vs raw"], table, figures, goals)


def replay_batches(rounds: int) -> Section:
    streams, steps, features, units = 10_000, 100, 8, 32
    torch.manual_seed(0)
    layer = sl.LSTM(units, return_sequences=True, input_shape=(None, features))
    ref = layer.to_torch_lstm().eval()
    x = np.random.default_rng(6).standard_normal((steps, streams, features)).astype(np.float32)
    keys = np.tile(np.arange(streams, dtype=np.int64), steps)
    flat = x.reshape(-1, features)
    xt = torch.from_numpy(x.transpose(1, 0, 2).copy())

    def raw() -> object:
        with torch.no_grad():
            return ref(xt)

    def replayer(rows: int) -> Callable[[], object]:
        cut = [pa.record_batch({"id": pa.array(keys[i:i + rows]), "x": fixed_list(flat[i:i + rows])})
               for i in range(0, len(keys), rows)]

        def run() -> object:
            rt = sl.StreamRuntime(layer, key="id", features="x")
            for batch in cut:
                rt.feed(batch)
            return rt
        return run

    baseline = "raw nn.LSTM [10000, 100, 8]"
    default, aligned = "feed, batches of 65,536 rows", "feed, batches of 100,000 rows"
    times = interleaved({baseline: raw, default: replayer(65_536), aligned: replayer(100_000)}, rounds, 1)
    table, figures = rate_rows(times, streams * steps, baseline)
    share = figures[default]["vs_raw_wall"]
    goals = [Goal("8", "replay in 65,536-row batches >= 90% of raw nn.LSTM rows/s", f"{share:.0%}", share >= 0.90)]
    return Section("10,000 streams x 100 rows, F=8, units=32, rows interleaved, cut into batches (rows/s; goal: "
                   "65,536-row batches >= 90% of raw nn.LSTM)", RATE_HEADERS, table, figures, goals)


def replay(rounds: int) -> Section:
    streams, steps = 1000, 100
    layer, rng = make_layer(), np.random.default_rng(2)
    ref = layer.to_torch_lstm()
    x = rng.normal(size=(streams, steps, F)).astype(np.float32)
    xt = torch.from_numpy(x)
    h0, c0 = torch.zeros(1, streams, UNITS), torch.zeros(1, streams, UNITS)
    ids = np.arange(streams, dtype=np.int64)
    by_time = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(-1, F)
    time_major = pa.record_batch({"id": pa.array(np.tile(ids, steps)), "x": fixed_list(by_time)})
    grouped = pa.record_batch({"id": pa.array(np.repeat(ids, steps)), "x": fixed_list(x.reshape(-1, F))})
    rt_a = sl.StreamRuntime(layer, key="id", features="x", mode="chunk")
    rt_b = sl.StreamRuntime(layer, key="id", features="x", mode="chunk")

    def raw() -> object:
        with torch.no_grad():
            return ref(xt, (h0, c0))

    baseline = "raw nn.LSTM [1000, 100, 32]"
    times = interleaved({baseline: raw, "chunk, rows interleaved": lambda: rt_a.feed(time_major),
                         "chunk, rows grouped by stream": lambda: rt_b.feed(grouped)}, rounds, 1)
    table, figures = rate_rows(times, streams * steps, baseline)
    goals = [Goal("6", f"replay ({name}) >= 90% of raw nn.LSTM rows/s", f"{figures[name]['vs_raw_wall']:.0%}",
                  figures[name]["vs_raw_wall"] >= 0.90)
             for name in ("chunk, rows interleaved", "chunk, rows grouped by stream")]
    return Section("1,000 streams x 100 rows per batch, chunk mode (rows/s; goal: replay >= 90% of raw nn.LSTM "
                   "rows/s)", RATE_HEADERS, table, figures, goals)


# -- memory: each part runs in a fresh process (``--child growth|churn|refeed``) ----------------------------
def resident_bytes(collect: bool = True) -> int:
    if collect:
        gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def new_keys(start: int, count: int) -> pa.Array:
    return pa.array(np.arange(start, start + count, dtype=np.int64))


def warm_baseline(layer: sl.LSTM, x: pa.Array) -> int:
    """Resident bytes after a warm-up runtime was fed one batch and dropped (libraries, allocator pools)."""
    sl.StreamRuntime(layer, key="id", features="x").feed(pa.record_batch({"id": new_keys(-len(x), len(x)), "x": x}))
    return resident_bytes()


def child_growth(total: int = 1_000_000, per_batch: int = 10_000) -> dict[str, Any]:
    layer = make_layer()
    x = fixed_list(np.random.default_rng(3).normal(size=(per_batch, F)).astype(np.float32))
    before = warm_baseline(layer, x)
    rt = sl.StreamRuntime(layer, key="id", features="x")
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, total, per_batch):
        rt.feed(pa.record_batch({"id": new_keys(start, per_batch), "x": x}))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    growth = resident_bytes() - before
    return {"streams": len(rt), "baseline_bytes": before, "growth_bytes": growth,
            "raw_bytes": total * 2 * UNITS * 4, "seconds_wall": wall, "seconds_cpu": cpu}


def child_churn(new_streams: bool = True, total: int = 5_000_000, per_batch: int = 10_000,
                max_streams: int = 100_000, settled: int = 1_000_000) -> dict[str, Any]:
    """The peak resident bytes (read after every batch) in three windows: the batch that first holds
    ``max_streams``, the batches up to ``settled`` keys, and those after it up to ``total``; new keys every
    batch (``new_streams``: eviction of as many), or the first ``max_streams`` keys again and again."""
    layer = make_layer()
    x = fixed_list(np.random.default_rng(3).normal(size=(per_batch, F)).astype(np.float32))
    result: dict[str, Any] = {"baseline_bytes": warm_baseline(layer, x), "checkpoints": []}
    rt = sl.StreamRuntime(layer, key="id", features="x", max_streams=max_streams)
    peak = 0
    wall = time.perf_counter()
    for start in range(0, total, per_batch):
        rt.feed(pa.record_batch({"id": new_keys(start if new_streams else start % max_streams, per_batch), "x": x}))
        seen = start + per_batch
        if len(rt) < max_streams:
            continue
        peak = max(peak, resident_bytes(collect=False))
        if not result["checkpoints"] or seen in (settled, total):
            result["checkpoints"].append({"keys_fed": seen, "streams": len(rt), "resident_bytes": peak})
            peak = 0
    result["seconds_wall"] = time.perf_counter() - wall
    result["rows"] = total
    return result


def run_child(part: str) -> dict[str, Any]:
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(sl.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", part], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child {part!r} failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _churn_rows(title: str, run: dict[str, Any]) -> list[list[object]]:
    """Table rows of a churn child: its rate, then each window's peak against the window before."""
    rate = run["rows"] / run["seconds_wall"]
    rows: list[list[object]] = [[title, f"{run['rows']:,} keys, {rate:,.0f} rows/s (wall)"]]
    previous = None
    for point in run["checkpoints"]:
        rss = point["resident_bytes"]
        if previous is None:
            name, versus = f"   first full ({point['keys_fed']:,} keys)", ""
        else:
            name = f"   peak, {previous['keys_fed']:,} to {point['keys_fed']:,} keys"
            versus = f", {rss / previous['resident_bytes'] - 1:+.1%} vs the window before"
        rows.append([name, f"RSS {rss / MiB:,.0f} MiB (growth {(rss - run['baseline_bytes']) / MiB:,.0f} MiB){versus}"])
        previous = point
    return rows


def memory() -> Section:
    grow, churn, refeed = run_child("growth"), run_child("churn"), run_child("refeed")
    n, raw, growth = grow["streams"], grow["raw_bytes"], grow["growth_bytes"]
    budget = 1.5 * raw + 200 * n
    rate = n / grow["seconds_wall"]
    settled, last = (p["resident_bytes"] for p in churn["checkpoints"][-2:])
    table: list[list[object]] = [
        ["a. streams", f"{n:,}"],
        ["   raw carry bytes (h, c float32)", f"{raw / MiB:,.0f} MiB"],
        ["   resident growth", f"{growth / MiB:,.0f} MiB ({growth / raw:.2f}x raw, "
                               f"{(growth - raw) / n:.0f} B/stream over raw)"],
        ["   budget 1.5x raw + 200 B/stream", f"{budget / MiB:,.0f} MiB: {'met' if growth <= budget else 'MISSED'}"],
        ["   new streams fed", f"{rate:,.0f} rows/s (wall), {n / grow['seconds_cpu']:,.0f} rows/s (CPU); "
                              f"goal >= 200,000"],
        *_churn_rows("b. churn, max_streams=100,000, new keys", churn),
        *_churn_rows("   reference: the same 100,000 keys again", refeed)]
    goals = [Goal("7a", "resident growth <= 1.5x raw + 200 B/stream (1M streams x 64 units)",
                  f"{growth / MiB:,.0f} MiB of {budget / MiB:,.0f} MiB", growth <= budget),
             Goal("7a", "new streams fed >= 200,000 rows/s", f"{rate:,.0f} rows/s", rate >= 200_000),
             Goal("7b", "churn at max_streams=100,000: peak RSS flat under further churn (1M-5M keys vs "
                        "100k-1M: <= +5%)",
                  f"{last / settled - 1:+.1%}", last <= 1.05 * settled)]
    figures = {"growth": {**grow, "budget_bytes": budget, "growth_vs_raw": growth / raw,
                          "bytes_per_stream_over_raw": (growth - raw) / n, "rows_per_s": rate,
                          "rows_per_s_cpu": n / grow["seconds_cpu"]},
               "churn": churn, "refeed": refeed}
    return Section("Memory, each part in a fresh process (resident set growth)", ["measure", "value"], table,
                   figures, goals)


def machine() -> dict[str, Any]:
    return {"streamlstm": sl.__version__, "torch": torch.__version__, "pyarrow": pa.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads()}


def _goals_of(path: str) -> dict[tuple[str, str], str]:
    """(section, goal) -> measured value of an earlier run's --json file."""
    with open(path) as source:
        return {(g["section"], g["goal"]): g["value"] for g in json.load(source)["goals"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--skip-memory", action="store_true", help="skip section 7 (memory)")
    parser.add_argument("--sections", default="12345687", help="which sections to run, e.g. 137")
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    parser.add_argument("--before", metavar="PATH",
                        help="a --json file of an earlier run (e.g. of the previous version): the goals table "
                             "then shows its figure beside this run's")
    parser.add_argument("--child", choices=("growth", "churn", "refeed"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        children = {"growth": child_growth, "churn": child_churn, "refeed": lambda: child_churn(new_streams=False)}
        print(json.dumps(children[args.child]()))
        return
    rounds = 5 if args.quick else 15
    calls = 2000 if args.quick else 10_000
    torch.set_num_threads(torch.get_num_threads())
    info = machine()
    print(f"streamlstm {info['streamlstm']}, torch {info['torch']}, pyarrow {info['pyarrow']}, {info['cpu']}, "
          f"{info['cpus']} CPUs, {info['threads']} threads\n")
    sections: dict[str, Callable[[], Section]] = {
        "1": lambda: fleet(rounds), "2": lambda: small_fleet(rounds), "3": lambda: live_traffic(rounds),
        "4": lambda: latency(calls, "auto", "4"), "5": lambda: latency(calls, "chunk", "5"),
        "6": lambda: replay(rounds), "8": lambda: replay_batches(rounds), "7": memory}
    results: dict[str, Any] = {"machine": info, "quick": args.quick, "sections": {}, "goals": []}
    goals: list[Goal] = []
    for number, run in sections.items():
        if number not in args.sections or (number == "7" and args.skip_memory):
            continue
        section = run()
        print(f"{number}. {section.title}")
        print_table(section.headers, section.rows)
        print()
        goals += section.goals
        results["sections"][number] = {"title": section.title, "figures": section.figures}
    if goals:
        print("Goals")
        before = _goals_of(args.before) if args.before else None
        headers = ["section", "goal"] + (["before"] if before is not None else []) + ["measured", "status"]
        print_table(headers, [[g.section, g.goal] + ([before.get((g.section, g.goal), "-")] if before is not None
                                                      else []) + [g.value, "met" if g.met else "MISSED"]
                              for g in goals])
    results["goals"] = [g.__dict__ for g in goals]
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
