"""The inference step's kernels by batch size: where LSTMCell.step switches from torch's native cell to the
one-GEMM gate-major cell (``CELL_ROWS`` in streamlstm/layers/lstm_cell.py).

    python benchmarks/bench_kernels.py [--quick] [--threads 1]

Per rows and units (F=8): microseconds per step of torch's native cell (``torch.lstm_cell``, what
``nn.LSTMCell`` runs), of the gate-major step including its input projection, and of the gate-major
step alone (the projection made once for all rounds of a batch, as the runtime's step mode does), and of
the gate-major cell (one GEMM over ``[x | h]``, what a lone step takes from ``CELL_ROWS`` rows).
Contenders run round-robin and the minimum over rounds is reported: on a shared machine the minimum
is the figure least disturbed by other processes.
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
        "gate-major cell": lambda: kernels.gate_major_cell(x, h, c, gate_major, out_h, out_c),
    }


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
        for rows in (1, 16, 32, CELL_ROWS, 100, 128, 632, 1000, 4000, 10000):
            times = minimum_us(contenders(rows, units), rounds, max(1, 2000 // rows))
            native = times["native cell"]
            table.append([units, rows, *(f"{value:,.1f} ({native / value:.2f}x)" for value in times.values())])
    print(f"LSTM step, F={F}, {args.threads} thread(s); us per step (speed vs the native cell); "
          f"LSTMCell.step takes the gate-major cell from {CELL_ROWS} rows")
    print_table(["units", "rows", "native cell", "gate-major", "gate-major, projected", "gate-major cell"], table)


if __name__ == "__main__":
    main()
