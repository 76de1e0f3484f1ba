"""The inference step's kernels by batch size: where LSTMCell.step switches from torch's native cell to the
one-GEMM gate-major cell (``CELL_ROWS`` in streamlstm/layers/lstm_cell.py).

    python benchmarks/bench_kernels.py [--quick] [--threads 1]

Per rows and units (F=8): microseconds per lone step of torch's native cell (``torch.lstm_cell``, what
``nn.LSTMCell`` runs) and of the gate-major cell (one GEMM over ``[x | h | 1]``, what ``LSTMCell.step``
takes from ``CELL_ROWS`` rows). The minimum over round-robin rounds is reported: on a shared machine
the minimum is the figure least disturbed by other processes.

A second table chains the rounds of a live batch (1,000 rows drawn with repeats from 1,000 streams: 632,
264, 80, 19, 4 and 1 rows, each round from the previous one's states, as the runtime's step mode runs
them) under two kernel policies: ``LSTMCell.step`` (the runtime's) and the native cell for every round.
It reports the median too: alone, a kernel runs with everything in cache; in a chain of rounds one
round's buffers can cost the next ones.
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
from streamlstm.layers.lstm_cell import CELL_ROWS

F = 8
LIVE_ROUNDS = (632, 264, 80, 19, 4, 1)


def times_us(contenders: dict[str, Callable[[], object]], rounds: int, inner: int) -> dict[str, tuple[float, float]]:
    """(minimum, median) microseconds per call of each contender over ``rounds`` round-robin rounds."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) / inner * 1e6)
    return {name: (min(values), sorted(values)[len(values) // 2]) for name, values in samples.items()}


def built_cell(units: int, seed: int) -> sl.LSTMCell:
    torch.manual_seed(seed)
    cell = sl.LSTMCell(units)
    cell.build((None, F))
    return cell


def lone_steps(rows: int, units: int) -> dict[str, Callable[[], object]]:
    cell = built_cell(units, rows)
    x, h, c = torch.randn(rows, F), torch.randn(rows, units), torch.randn(rows, units)
    weight_ih, weight_hh = cell.torch_weights()
    bias, gate_major = cell.bias.detach(), cell.gate_major_weights()
    return {
        "native cell": lambda: kernels.native_cell(x, h, c, weight_ih, weight_hh, bias),
        "gate-major cell": lambda: kernels.gate_major_cell(x, h, c, gate_major),
    }


def live_rounds(units: int) -> dict[str, Callable[[], object]]:
    """The rounds of a live batch, chained, under each kernel policy (see the module docstring)."""
    cell = built_cell(units, units)
    x = torch.randn(sum(LIVE_ROUNDS), F)
    h0, c0 = torch.randn(LIVE_ROUNDS[0], units), torch.randn(LIVE_ROUNDS[0], units)
    weight_ih, weight_hh = cell.torch_weights()
    bias = cell.bias.detach()

    def chain(step: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], object]:
        def run() -> object:
            h, c = h0, c0
            for rows, inputs in zip(LIVE_ROUNDS, x.split_with_sizes(LIVE_ROUNDS)):
                h, c = step(inputs, h[:rows], c[:rows])
            return h
        return run

    return {"LSTMCell.step (the runtime's)": chain(cell.step),
            "native cell": chain(lambda x, h, c: kernels.native_cell(x, h, c, weight_ih, weight_hh, bias))}


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
        for rows in (1, 16, 32, 64, CELL_ROWS, 128, 632, 1000, 4000, 10000):
            times = times_us(lone_steps(rows, units), rounds, max(1, 2000 // rows))
            native = times["native cell"][0]
            table.append([units, rows, *(f"{low:,.1f} ({native / low:.2f}x)" for low, _ in times.values())])
    print(f"LSTM step, F={F}, {args.threads} thread(s); us per step, minimum (speed vs the native cell); "
          f"LSTMCell.step takes the gate-major cell from {CELL_ROWS} rows")
    print_table(["units", "rows", "native cell", "gate-major cell"], table)
    table = []
    for units in (32, 64):
        times = times_us(live_rounds(units), 5 * rounds, 1)
        table.append([units, *(f"{low:,.0f} / {mid:,.0f}" for low, mid in times.values())])
    print(f"\nRounds {', '.join(map(str, LIVE_ROUNDS))} of a live batch, chained; us per batch (minimum / median)")
    print_table(["units", "LSTMCell.step (the runtime's)", "native cell"], table)


if __name__ == "__main__":
    main()
