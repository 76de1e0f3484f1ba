"""Sharded runtime benchmark (issue 13): ratios against one local runtime, measured in the same run.

Every figure compares contenders measured in this process, round after round (each contender once per
round, median over rounds), so that a busy machine slows them alike. Only the public API is used.
Run: ``python benchmarks/bench_cluster.py`` (``--quick``: tiny sizes, to check that it runs; the
figures then mean nothing). Ray starts locally with one CPU per shard plus one.

1. Fleet: 10,000 streams x 1 row per batch, F=32, units=64. ``ShardedRuntime`` with 2 shards x 1 torch
   thread (``feed_many``, pipelined) against one local ``StreamRuntime`` on 1 thread (goal: >= 1.8x its
   rows/s) and on 2 threads (goal: >= 1.0x).
2. Chunks: 1,000 streams x 100 rows per batch, same model and comparisons, same goals.
3. Latency: 1 row per ``feed`` through 2 shards against a local runtime: p50 and p99 (goal: p99 <= 5 ms),
   on a busy machine: one process spins on a core meanwhile.
4. Replay: ``replay_to_file`` of an Arrow file (4M rows; 1,000 streams, F=32) with ``shards=2`` against
   ``shards=1`` (goal: >= 1.6x).
5. Rescale: 1M streams saved from 2 shards and loaded on 3: seconds, and the driver's peak resident set
   (the actors' memory is theirs and not counted).

Where the time goes (printed after sections 1 and 2, for one more pass of the sharded runtime): per
batch, the wall time, the driver's CPU time (all its threads: cutting, Ray submission and results,
reassembly; and of those, the feeding thread's own), each shard's compute (``busy_seconds``: prepare
and commit), and the round trip of an empty Ray call to a shard. Section 4 prints the seconds the
shard actors take to start (a fresh process importing torch each), measured apart, as they are part
of every replay.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import print_table  # noqa: E402

import streamlstm as sl  # noqa: E402

F, UNITS = 32, 64


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return sl.LSTM(UNITS, return_sequences=True, input_shape=(None, F))


def batch_of(keys: np.ndarray, rng: np.random.Generator) -> pa.RecordBatch:
    x = rng.standard_normal((len(keys), F)).astype(np.float32)
    return pa.record_batch({"id": pa.array(keys, pa.int64()),
                            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F)})


def local_feeder(threads: int) -> Callable[[list[pa.RecordBatch]], None]:
    runtime = sl.StreamRuntime(make_model(), key="id")

    def run(batches: list[pa.RecordBatch]) -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for batch in batches:
                runtime.feed(batch)
        finally:
            torch.set_num_threads(previous)
    return run


def sharded_feeder(runtime: sl.ShardedRuntime) -> Callable[[list[pa.RecordBatch]], None]:
    def run(batches: list[pa.RecordBatch]) -> None:
        for _ in runtime.feed_many(batches):
            pass
    return run


def rates(contenders: dict[str, Callable[[list], None]], batches: list[pa.RecordBatch], rounds: int) -> dict:
    """Median rows/s of each contender over ``rounds`` rounds (each feeds ``batches`` once per round)."""
    rows = sum(b.num_rows for b in batches)
    for run in contenders.values():
        run(batches[:2])   # warm-up: streams created, first calls done
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            run(batches)
            samples[name].append(rows / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in samples.items()}


def throughput_section(title: str, sharded: sl.ShardedRuntime, batches: list[pa.RecordBatch], rounds: int,
                       results: list) -> None:
    got = rates({"sharded": sharded_feeder(sharded), "local 1 thread": local_feeder(1),
                 "local 2 threads": local_feeder(2)}, batches, rounds)
    results.append((title, "2 shards / local 1 thread", got["sharded"] / got["local 1 thread"], ">= 1.8"))
    results.append((title, "2 shards / local 2 threads", got["sharded"] / got["local 2 threads"], ">= 1.0"))
    print(f"{title}: " + ", ".join(f"{name} {rate:,.0f} rows/s" for name, rate in got.items()), flush=True)
    breakdown(sharded, batches)


def breakdown(sharded: sl.ShardedRuntime, batches: list[pa.RecordBatch]) -> None:
    """Per batch: wall, driver CPU, each shard's compute, and an empty call's round trip (see the docstring)."""
    import ray

    before = [s["busy_seconds"] for s in sharded.stats()["shards"]]
    cpu, own, wall = time.process_time(), time.thread_time(), time.perf_counter()
    sharded_feeder(sharded)(batches)
    wall, cpu, own = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - own
    busy = [s["busy_seconds"] - b for s, b in zip(sharded.stats()["shards"], before)]
    trips = []
    for _ in range(50):
        started = time.perf_counter()
        ray.get(sharded.shard_actors()[0].ping.remote())
        trips.append((time.perf_counter() - started) * 1e3)
    n = len(batches)
    print(f"  per batch: wall {wall / n * 1e3:.2f} ms, driver CPU {cpu / n * 1e3:.2f} ms (its feeding thread "
          f"{own / n * 1e3:.2f}), shard compute "
          + " / ".join(f"{b / n * 1e3:.2f}" for b in busy) + f" ms; empty Ray call p50 {np.median(trips):.2f} ms",
          flush=True)


def spin(stop: Any) -> None:
    """Burn a core until ``stop`` is set (the busy machine of the latency section)."""
    while not stop.is_set():
        sum(range(10_000))


def latency_section(sharded: sl.ShardedRuntime, calls: int, results: list) -> None:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    spinner = context.Process(target=spin, args=(stop,), daemon=True)
    spinner.start()
    try:
        measure_latency(sharded, calls, results)
    finally:
        stop.set()
        spinner.join(timeout=60)


def measure_latency(sharded: sl.ShardedRuntime, calls: int, results: list) -> None:
    rng = np.random.default_rng(3)
    local = sl.StreamRuntime(make_model(), key="id")
    samples: dict[str, list[float]] = {"sharded": [], "local": []}
    for index in range(calls):
        batch = batch_of(np.array([10**6 + index % 7]), rng)
        for name, feed in (("sharded", sharded.feed), ("local", local.feed)):
            started = time.perf_counter()
            feed(batch)
            samples[name].append((time.perf_counter() - started) * 1e3)
    for name, values in samples.items():
        p50, p99 = np.percentile(values, 50), np.percentile(values, 99)
        print(f"latency {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
    results.append(("latency, 1 row", "2 shards p99 (ms)", float(np.percentile(samples["sharded"], 99)), "<= 5"))
    results.append(("latency, 1 row", "2 shards p99 / local p99", float(np.percentile(samples["sharded"], 99)
                                                                      / np.percentile(samples["local"], 99)), "-"))


def replay_section(rows: int, directory: Path, results: list, cpus: float) -> None:
    rng = np.random.default_rng(4)
    source = directory / "replay-in.arrow"
    keys = rng.integers(0, 1000, rows)
    x = rng.standard_normal((rows, F)).astype(np.float32)
    data = pa.table({"id": pa.array(keys, pa.int64()),
                     "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F)})
    with pa.ipc.new_file(str(source), data.schema) as writer:
        writer.write_table(data, max_chunksize=65536)
    model = directory / "model.slm"
    sl.save_model(make_model(), model)
    seconds, starts = {}, {}
    for shards in (1, 2):
        started = time.perf_counter()
        sl.ShardedRuntime(make_model(), shards=shards, key="id", num_cpus=cpus).close()
        starts[shards] = time.perf_counter() - started
        print(f"  {shards} shard actor(s) start in {starts[shards]:.2f} s", flush=True)
        started = time.perf_counter()
        sl.replay_to_file(source, model, directory / f"out-{shards}.arrow", key="id", shards=shards,
                          cpus_per_shard=cpus, progress=False)
        seconds[shards] = time.perf_counter() - started
        print(f"replay {rows:,} rows, {shards} shard(s): {seconds[shards]:.2f} s "
              f"({rows / seconds[shards]:,.0f} rows/s, actors started included)", flush=True)
    results.append(("replay", "shards 2 / shards 1 (rows/s)", seconds[1] / seconds[2], ">= 1.6"))
    results.append(("replay", "the same, less the actors' start", (seconds[1] - starts[1]) / (seconds[2] - starts[2]),
                    "-"))


def rescale_section(streams: int, directory: Path, results: list, cpus: float) -> None:
    sharded = sl.ShardedRuntime(make_model(), shards=2, key="id", num_cpus=cpus)
    rng = np.random.default_rng(5)
    for start in range(0, streams, 100_000):
        sharded.feed(batch_of(np.arange(start, min(streams, start + 100_000)), rng))
    started = time.perf_counter()
    sharded.save(directory / "rescale")
    saved = time.perf_counter() - started
    sharded.close()
    started = time.perf_counter()
    three = sl.ShardedRuntime.load(directory / "rescale", shards=3, num_cpus=cpus)
    held = len(three)
    loaded = time.perf_counter() - started
    three.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rescale {held:,} streams 2 -> 3 shards: save {saved:.2f} s, load {loaded:.2f} s (actors started "
          f"included); driver peak RSS {peak:,.0f} MiB", flush=True)
    results.append(("rescale 2 -> 3", f"{held:,} streams: save + load seconds", saved + loaded, "-"))
    results.append(("rescale 2 -> 3", "driver peak RSS (MiB)", peak, "-"))


def fleet_batches(streams: int, rows_per_stream: int, count: int) -> Iterable[pa.RecordBatch]:
    rng = np.random.default_rng(1)
    keys = np.repeat(np.arange(streams), rows_per_stream)
    return [batch_of(keys, rng) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args()
    quick = args.quick
    cpus = 0.5 if quick else 1
    import ray

    ray.init(num_cpus=2 if quick else 3, include_dashboard=False, log_to_driver=False)
    results: list = []
    sharded = sl.ShardedRuntime(make_model(), shards=2, key="id", num_cpus=cpus)
    fleet = 1000 if quick else 10_000
    throughput_section(f"fleet, {fleet:,} streams x 1 row", sharded,
                       fleet_batches(fleet, 1, 5 if quick else 50), 2 if quick else 7, results)
    chunk = 100 if quick else 1000
    throughput_section(f"chunks, {chunk:,} streams x 100 rows", sharded,
                       fleet_batches(chunk, 100, 2 if quick else 10), 2 if quick else 5, results)
    latency_section(sharded, 50 if quick else 2000, results)
    sharded.close()
    with tempfile.TemporaryDirectory() as directory:
        replay_section(20_000 if quick else 4_000_000, Path(directory), results, cpus)
        rescale_section(10_000 if quick else 1_000_000, Path(directory), results, cpus)
    print()
    print_table(["section", "figure", "value", "goal"], [(s, f, f"{v:,.2f}", g) for s, f, v, g in results])
    ray.shutdown()


if __name__ == "__main__":
    main()
