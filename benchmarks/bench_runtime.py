"""Stream runtime benchmark: ratios against baselines measured in the same run (issue 3, Performance).

Contenders run interleaved (round after round, every contender once per round) so that a busy machine
slows them alike; each figure is a median over rounds. Run: ``python benchmarks/bench_runtime.py``
(``--quick``: fewer rounds; ``--skip-memory``: no 1,000,000-stream memory check).

1. Fleet: 10,000 streams x 1 row per batch, F=32, units=64: ``feed`` rows/s in each mode against raw
   ``torch.nn.LSTMCell`` on a [10000, 32] batch (goal >= 90%), and a naive runtime (Python dict lookups,
   fancy-index gather/scatter). "same order": the fleet's rows come in the same order every batch;
   "shuffled": a new order every batch (the full path: key lookup, row layout, gathers).
2. Latency: 1 stream, 1 row per ``feed``: median against one raw ``LSTMCell`` call on [1, 32] (goal <= 2.5x).
3. Replay: 1,000 streams x 100 rows per batch in chunk mode against ``torch.nn.LSTM`` on the same
   [1000, 100, 32] tensor (goal >= 85%); rows interleaved (time-major) or grouped by stream.
4. Memory: resident growth for 1,000,000 streams of 64 units against the raw carry bytes
   (goal: within 1.5x raw + 200 bytes per stream).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import interleaved, print_table

import streamlstm as sl

F, UNITS = 32, 64


def rate_rows(times: dict[str, tuple[float, float]], rows: int, baseline: str) -> list[list[object]]:
    wall0, cpu0 = times[baseline]
    return [[name, f"{rows / wall:,.0f}", f"{wall0 / wall:.0%}", f"{cpu0 / cpu:.0%}"]
            for name, (wall, cpu) in times.items()]


def make_layer() -> sl.LSTM:
    torch.manual_seed(0)
    layer = sl.LSTM(UNITS, return_sequences=True)
    layer.build((None, None, F))
    return layer


def torch_cell(layer: sl.LSTM) -> torch.nn.LSTMCell:
    cell = torch.nn.LSTMCell(F, UNITS)
    with torch.no_grad():
        cell.weight_ih.copy_(layer.cell.kernel.T)
        cell.weight_hh.copy_(layer.cell.recurrent_kernel.T)
        cell.bias_ih.copy_(layer.cell.bias)
        cell.bias_hh.zero_()
    return cell


def fixed_list(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def batches(keys: list[np.ndarray], rng: np.random.Generator) -> list[pa.RecordBatch]:
    return [pa.record_batch({"id": pa.array(k), "x": fixed_list(rng.normal(size=(len(k), F)).astype(np.float32))})
            for k in keys]


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


def fleet(rounds: int) -> list[list[object]]:
    n = 10_000
    layer, rng = make_layer(), np.random.default_rng(0)
    cell = torch_cell(layer)
    same = batches([np.arange(n, dtype=np.int64)] * 6, rng)
    shuffled = batches([rng.permutation(n).astype(np.int64) for _ in range(6)], rng)
    x = torch.from_numpy(rng.normal(size=(n, F)).astype(np.float32))
    h, c = torch.zeros(n, UNITS), torch.zeros(n, UNITS)

    def cycle(feed: Callable[[pa.RecordBatch], object], data: list[pa.RecordBatch]) -> Callable[[], object]:
        state = {"i": 0}

        def run() -> object:
            state["i"] += 1
            return feed(data[state["i"] % len(data)])
        return run

    def raw() -> object:
        with torch.no_grad():
            return cell(x, (h, c))

    runtimes = {mode: sl.StreamRuntime(layer, key="id", features="x", mode=mode) for mode in ("step", "chunk", "auto")}
    contenders: dict[str, Callable[[], object]] = {"raw LSTMCell [10000, 32]": raw}
    for mode, rt in runtimes.items():
        contenders[f"feed mode={mode}, same order"] = cycle(rt.feed, same)
    shuffled_rt = sl.StreamRuntime(layer, key="id", features="x")
    contenders["feed mode=auto, shuffled"] = cycle(shuffled_rt.feed, shuffled)
    string_rt = sl.StreamRuntime(layer, key="id", features="x")
    strings = [b.set_column(0, "id", pa.array([f"sensor-{k}" for k in b.column(0).to_pylist()])) for b in shuffled]
    contenders["feed mode=auto, shuffled string keys"] = cycle(string_rt.feed, strings)
    contenders["naive runtime"] = cycle(NaiveRuntime(cell).feed, same)
    return rate_rows(interleaved(contenders, 3 * rounds, 1), n, "raw LSTMCell [10000, 32]")


def latency(rounds: int) -> list[list[object]]:
    layer, rng = make_layer(), np.random.default_rng(1)
    cell = torch_cell(layer)
    one = batches([np.array([7], np.int64)] * 8, rng)
    x, h, c = torch.randn(1, F), torch.zeros(1, UNITS), torch.zeros(1, UNITS)
    rt = sl.StreamRuntime(layer, key="id", features="x")
    naive = NaiveRuntime(cell)
    state = {"i": 0}

    def feed() -> object:
        state["i"] += 1
        return rt.feed(one[state["i"] % 8])

    def raw() -> object:
        with torch.no_grad():
            return cell(x, (h, c))

    times = interleaved({"raw LSTMCell [1, 32]": raw, "feed (1 stream, 1 row)": feed,
                         "naive runtime": lambda: naive.feed(one[0])}, rounds, 200)
    wall0, cpu0 = times["raw LSTMCell [1, 32]"]
    return [[name, f"{wall * 1e6:.1f} us", f"{wall / wall0:.2f}x", f"{cpu * 1e6:.1f} us", f"{cpu / cpu0:.2f}x"]
            for name, (wall, cpu) in times.items()]


def replay(rounds: int) -> list[list[object]]:
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

    times = interleaved({"raw nn.LSTM [1000, 100, 32]": raw, "chunk, rows interleaved": lambda: rt_a.feed(time_major),
                         "chunk, rows grouped by stream": lambda: rt_b.feed(grouped)}, rounds, 1)
    return rate_rows(times, streams * steps, "raw nn.LSTM [1000, 100, 32]")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(total: int = 1_000_000, per_batch: int = 10_000) -> list[list[object]]:
    layer = make_layer()
    rng = np.random.default_rng(3)
    x = fixed_list(rng.normal(size=(per_batch, F)).astype(np.float32))
    sl.StreamRuntime(layer, key="id", features="x").feed(pa.record_batch({"id": pa.array(np.arange(per_batch)),
                                                                          "x": x}))
    gc.collect()
    before = resident_bytes()
    rt = sl.StreamRuntime(layer, key="id", features="x")
    for start in range(0, total, per_batch):
        rt.feed(pa.record_batch({"id": pa.array(np.arange(start, start + per_batch, dtype=np.int64)), "x": x}))
    gc.collect()
    growth = resident_bytes() - before
    raw = total * 2 * UNITS * 4
    budget = 1.5 * raw + 200 * total
    return [["streams", f"{len(rt):,}"], ["raw carry bytes (h, c float32)", f"{raw / 2**20:,.0f} MiB"],
            ["resident growth", f"{growth / 2**20:,.0f} MiB ({growth / raw:.2f}x raw, "
                                f"{(growth - raw) / total:.0f} B/stream over raw)"],
            ["budget 1.5x raw + 200 B/stream", f"{budget / 2**20:,.0f} MiB: {'met' if growth <= budget else 'MISSED'}"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 1,000,000-stream memory check")
    parser.add_argument("--sections", default="1234", help="which sections to run, e.g. 12")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    torch.set_num_threads(torch.get_num_threads())
    print(f"streamlstm {sl.__version__}, torch {torch.__version__}, pyarrow {pa.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads\n")
    if "1" in args.sections:
        print("1. 10,000 streams x 1 row, F=32, units=64 (rows/s; share of raw LSTMCell; goal >= 90%)")
        print_table(["contender", "rows/s (wall)", "vs raw (wall)", "vs raw (CPU)"], fleet(rounds))
    if "2" in args.sections:
        print("\n2. 1 stream, 1 row per feed (median latency; goal <= 2.5x)")
        print_table(["contender", "wall", "vs raw", "CPU", "vs raw (CPU)"], latency(rounds))
    if "3" in args.sections:
        print("\n3. 1,000 streams x 100 rows per batch, chunk mode (rows/s; goal >= 85%)")
        print_table(["contender", "rows/s (wall)", "vs raw (wall)", "vs raw (CPU)"], replay(rounds))
    if "4" in args.sections and not args.skip_memory:
        print("\n4. Memory, 1,000,000 streams of 64 units")
        print_table(["measure", "value"], memory())


if __name__ == "__main__":
    main()
