"""Serving benchmark: ``streamlstm serve`` over Arrow Flight against the runtime in-process (issue 6).

Run: ``python benchmarks/bench_serve.py`` (``--rounds N``: repeats per figure, median reported).

1. Throughput: 16 client threads, each feeding 200 batches x 64 rows of its own streams (1,000 streams
   in all, F=8, LSTM units=32) to a server process with micro-batching, against the very same batches
   fed one after the other to a runtime in this process (goal >= 50%). Also shown: the same batches
   joined 16 at a time in-process (what perfect micro-batching without transport would give).
2. Latency: one client, 1-row batches, on an idle server: p50 and p99 round trip (goal p50 < 1 ms),
   against ``feed`` of the same 1-row batch in-process.

Server and this process run torch on one thread (small tensors; on a shared machine intra-op threads
spinning against other processes cost more than they give).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import print_table

import streamlstm as sl

F, UNITS, CLIENTS, BATCHES, ROWS, STREAMS = 8, 32, 16, 200, 64, 1000


def make_batch(keys: np.ndarray, rng: np.random.Generator) -> pa.RecordBatch:
    x = rng.standard_normal((len(keys), F)).astype(np.float32)
    return pa.record_batch({"stream_id": pa.array(keys.astype(np.int64)),
                            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F)})


def plans(seed: int = 0) -> list[list[pa.RecordBatch]]:
    rng = np.random.default_rng(seed)
    streams = np.arange(STREAMS)
    return [[make_batch(rng.choice(streams[streams % CLIENTS == c], ROWS), rng) for _ in range(BATCHES)]
            for c in range(CLIENTS)]


class Server:
    def __init__(self, model: Path) -> None:
        command = [sys.executable, "-m", "streamlstm", "serve", "--model", str(model), "--port", "0"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            self.proc.kill()
            raise SystemExit(f"server did not start: {line!r}")
        self.uri = line.split("listening on ")[1].split()[0]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def clients_rate(uri: str, work: list[list[pa.RecordBatch]]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    ready = threading.Barrier(len(work) + 1)

    def run(batches: list[pa.RecordBatch]) -> None:
        mine = []
        with sl.flight.Client(uri) as client:
            client.health()
            ready.wait()
            for batch in batches:
                started = time.perf_counter()
                client.feed(batch)
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(batches,)) for batches in work]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return sum(len(b) * ROWS for b in work) / (time.perf_counter() - started), latencies


def in_process_rate(model: torch.nn.Module, work: list[list[pa.RecordBatch]], joined: bool) -> float:
    runtime = sl.StreamRuntime(model)
    order = [batch for round_ in zip(*work) for batch in round_]  # the clients' batches, interleaved
    if joined:
        order = [pa.Table.from_batches(order[i:i + CLIENTS]) for i in range(0, len(order), CLIENTS)]
    started = time.perf_counter()
    for batch in order:
        runtime.feed(batch)
    return CLIENTS * BATCHES * ROWS / (time.perf_counter() - started)


def one_row_latency(uri: str, model: torch.nn.Module, calls: int = 3000) -> tuple[list[float], list[float]]:
    batch = make_batch(np.array([1]), np.random.default_rng(1))
    remote, local = [], []
    runtime = sl.StreamRuntime(model)
    with sl.flight.Client(uri) as client:
        for _ in range(200):
            client.feed(batch)
            runtime.feed(batch)
        for _ in range(calls):
            started = time.perf_counter()
            client.feed(batch)
            remote.append(time.perf_counter() - started)
            started = time.perf_counter()
            runtime.feed(batch)
            local.append(time.perf_counter() - started)
    return remote, local


def ms(samples: list[float], q: float) -> str:
    return f"{np.percentile(np.asarray(samples) * 1e3, q):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repeats per figure (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = sl.LSTM(UNITS)
    model.build((None, None, F))
    print(f"streamlstm {sl.__version__}, torch {torch.__version__}, pyarrow {pa.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    work = plans()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.slm"
        sl.save_model(model, path)
        rates: dict[str, list[float]] = {"in-process, batch by batch": [], "in-process, 16 batches joined": [],
                                         "server, 16 clients": []}
        latencies: list[float] = []
        for _ in range(args.rounds):
            rates["in-process, batch by batch"].append(in_process_rate(model, work, joined=False))
            rates["in-process, 16 batches joined"].append(in_process_rate(model, work, joined=True))
            server = Server(path)
            try:
                rate, batch_latencies = clients_rate(server.uri, work)
            finally:
                server.stop()
            rates["server, 16 clients"].append(rate)
            latencies = batch_latencies
        server = Server(path)
        try:
            remote, local = one_row_latency(server.uri, model)
        finally:
            server.stop()
    base = statistics.median(rates["in-process, batch by batch"])
    print(f"1. {CLIENTS} clients x {BATCHES} batches x {ROWS} rows over {STREAMS:,} streams, F={F}, units={UNITS} "
          f"(median of {args.rounds}; goal: server >= 50% of in-process)")
    print_table(["contender", "rows/s", "vs in-process"],
                [[name, f"{statistics.median(r):,.0f}", f"{statistics.median(r) / base:.0%}"]
                 for name, r in rates.items()])
    print(f"   server batch latency (64 rows, 16 clients): p50 {ms(latencies, 50)} ms, p99 {ms(latencies, 99)} ms\n")
    print("2. one client, 1-row batches, idle server (goal: p50 < 1 ms)")
    print_table(["contender", "p50 ms", "p99 ms"],
                [["server round trip", ms(remote, 50), ms(remote, 99)],
                 ["in-process feed", ms(local, 50), ms(local, 99)],
                 ["ratio (p50)", f"{np.median(remote) / np.median(local):.1f}x", ""]])


if __name__ == "__main__":
    main()
