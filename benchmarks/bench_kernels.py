"""The inference step's kernels by batch size: where LSTMCell.step switches from torch's native cell to the
gate-major step (``GATE_MAJOR_ROWS`` in streamlstm/layers/lstm_cell.py).

    python benchmarks/bench_kernels.py [--quick] [--threads 1]

Per rows and units (F=8): microseconds per step of torch's native cell (``torch.lstm_cell``, what
``nn.LSTMCell`` runs), of the gate-major step including its input projection, and of the gate-major
step alone (the projection made once for all rounds of a batch, as the runtime's step mode does).
Contenders run round-robin and the minimum over rounds is reported: on a shared machine the minimum
is the figure least disturbed by other processes.

A second table chains the rounds of a live batch (1,000 rows drawn with repeats from 1,000 streams: 632,
264, 80, 19, 4 and 1 rows, each round's states from the previous one's, as the runtime's step mode runs
them) under three kernel policies: the inputs of rounds of at least 128 rows projected once and
``LSTMCell.step`` for each round (the runtime's policy until the native cell measured faster here),
``LSTMCell.step`` alone, and the native cell for every round (the runtime's now:
``LSTMCell.step(..., chained=True)``). It reports the median too: alone, a kernel runs with everything
in cache; in a chain of rounds the larger buffers of one round cost the next ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import print_table

import streamlstm as sl
from streamlstm.layers import kernels
from streamlstm.layers.lstm_cell import GATE_MAJOR_ROWS

F = 8


def minimum_us(contenders: dict[str, Callable[[], object]], rounds: int, inner: int) -> dict[str, float]:
    """Fastest microseconds per call of each contender over ``rounds`` round-robin rounds."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / inner * 1e6)
    return best


def contenders(rows: int, units: int) -> dict[str, Callable[[], object]]:
    torch.manual_seed(rows)
    cell = sl.LSTMCell(units)
    cell.build((None, F))
    x, h, c = torch.randn(rows, F), torch.randn(rows, units), torch.randn(rows, units)
    weight_ih, weight_hh = cell.torch_weights()
    bias, gate_major = cell.bias.detach(), cell.gate_major_weights()
    projected = kernels.project_gate_major(x, gate_major)
    out_h, out_c = torch.empty_like(h), torch.empty_like(c)
    return {
        "native cell": lambda: kernels.native_cell(x, h, c, weight_ih, weight_hh, bias),
        "gate-major": lambda: kernels.gate_major_step(kernels.project_gate_major(x, gate_major), h, c,
                                                      gate_major, out_h, out_c),
        "gate-major, projected": lambda: kernels.gate_major_step(projected, h, c, gate_major, out_h, out_c),
    }


LIVE_ROUNDS = (632, 264, 80, 19, 4, 1)
SHARED_PROJECTION_ROWS = 128   # the former policy: rounds from this many rows share one input projection


def live_rounds(units: int) -> dict[str, Callable[[], object]]:
    """The rounds of a live batch, chained, under each kernel policy (see the module docstring)."""
    torch.manual_seed(units)
    cell = sl.LSTMCell(units)
    cell.build((None, F))
    x = torch.randn(sum(LIVE_ROUNDS), F)
    h0, c0 = torch.randn(LIVE_ROUNDS[0], units), torch.randn(LIVE_ROUNDS[0], units)
    weight_ih, weight_hh = cell.torch_weights()
    bias = cell.bias.detach()

    def chain(policy: str) -> Callable[[], object]:
        def run() -> object:
            big = [n for n in LIVE_ROUNDS if n >= SHARED_PROJECTION_ROWS] if policy == "shared projection" else []
            z_of = cell.project_steps(x[:sum(big)]).split_with_sizes(big, dim=1) if big else []
            h, c = h0, c0
            for r, (rows, inputs) in enumerate(zip(LIVE_ROUNDS, x.split_with_sizes(LIVE_ROUNDS))):
                h, c = h[:rows], c[:rows]
                if policy == "native cell":
                    h, c = kernels.native_cell(inputs, h, c, weight_ih, weight_hh, bias)
                else:
                    h, c = cell.step(inputs, h, c, z_of[r] if r < len(z_of) else None)
            return h
        return run

    return {policy: chain(policy) for policy in ("shared projection", "LSTMCell.step", "native cell")}


def spread_us(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, tuple[float, float]]:
    """(minimum, median) microseconds per call of each contender, one call per contender per round."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e6)
    return {name: (min(values), sorted(values)[len(values) // 2]) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    rounds = 8 if args.quick else 60
    table = []
    for units in (32, 64):
        for rows in (1, 16, 64, 128, GATE_MAJOR_ROWS, 632, 1000, 4000):
            times = minimum_us(contenders(rows, units), rounds, max(1, 2000 // rows))
            native = times["native cell"]
            table.append([units, rows, *(f"{value:,.1f} ({native / value:.2f}x)" for value in times.values())])
    print(f"LSTM step, F={F}, {args.threads} thread(s); us per step (speed vs the native cell); "
          f"LSTMCell.step takes the gate-major step from {GATE_MAJOR_ROWS} rows")
    print_table(["units", "rows", "native cell", "gate-major", "gate-major, projected"], table)
    table = []
    for units in (32, 64):
        times = spread_us(live_rounds(units), 40 if args.quick else 400)
        table.append([units, *(f"{low:,.0f} / {mid:,.0f}" for low, mid in times.values())])
    print(f"\nRounds {', '.join(map(str, LIVE_ROUNDS))} of a live batch, chained; us per batch (minimum / median)")
    print_table(["units", f"shared projection from {SHARED_PROJECTION_ROWS}", "LSTMCell.step",
                 "native cell (the runtime's)"], table)


if __name__ == "__main__":
    main()
