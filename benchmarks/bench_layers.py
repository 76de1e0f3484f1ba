"""Layer benchmark: streamlstm.LSTM against torch.nn.LSTM, and the generic path against a naive loop.

One process, the same weights and data for every contender. Prints median times and ratios
(streamlstm time / baseline time; below 1 is faster). Run: ``python benchmarks/bench_layers.py``.
Shapes are (batch, time, features, units). ``--quick`` runs fewer repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_seconds, print_table

import streamlstm as sl

SHAPES = [(64, 100, 32, 64), (256, 200, 32, 128), (1, 1000, 8, 64)]


def make_pair(features: int, units: int) -> tuple[sl.LSTM, torch.nn.LSTM]:
    ours = sl.LSTM(units, return_sequences=True)
    ours.build((None, None, features))
    ref = torch.nn.LSTM(features, units, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(ours.cell.kernel.T)
        ref.weight_hh_l0.copy_(ours.cell.recurrent_kernel.T)
        ref.bias_ih_l0.copy_(ours.cell.bias)
        ref.bias_hh_l0.zero_()
    return ours, ref


def masks(batch: int, time: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    holes = torch.rand(batch, time, generator=gen) >= 0.2
    lengths = torch.randint(time // 2, time + 1, (batch,), generator=gen)
    right = torch.arange(time)[None, :] < lengths[:, None]
    return {"holes 20%": holes, "right-padded": right}


def timed(fn, backward: bool, repeats: int) -> float:
    def step():
        out = fn()
        if backward:
            out.sum().backward()

    if backward:
        return median_seconds(step, repeats=repeats)
    with torch.no_grad():
        return median_seconds(step, repeats=repeats)


def naive_loop(cell: sl.LSTMCell, x: torch.Tensor) -> torch.Tensor:
    """What a user writes by hand: call the cell once per step."""
    state = cell.get_initial_state(x.shape[0])
    outputs = []
    for t in range(x.shape[1]):
        out, state = cell(x[:, t], state)
        outputs.append(out)
    return torch.stack(outputs, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    rows = []
    for batch, time, features, units in SHAPES:
        shape = f"B{batch} T{time} F{features} U{units}"
        ours, ref = make_pair(features, units)
        x = torch.randn(batch, time, features)
        for backward in (False, True):
            kind = "fwd+bwd" if backward else "inference"
            xg = x.clone().requires_grad_(backward)
            base = timed(lambda: ref(xg)[0], backward, repeats)
            t_ours = timed(lambda: ours(xg), backward, repeats)
            rows.append([shape, kind, "LSTM, no mask", "torch.nn.LSTM", base * 1e3, t_ours * 1e3, t_ours / base])
            for name, mask in masks(batch, time).items():
                t_mask = timed(lambda: ours(xg, mask=mask), backward, repeats)
                rows.append([shape, kind, f"LSTM, {name}", "torch.nn.LSTM no mask", base * 1e3, t_mask * 1e3,
                             t_mask / base])
        relu = sl.LSTM(units, activation="relu", return_sequences=True)
        relu.build((None, None, features))
        with torch.no_grad():
            t_naive = median_seconds(lambda: naive_loop(relu.cell, x), repeats=repeats)
            t_generic = median_seconds(lambda: relu(x), repeats=repeats)
        rows.append([shape, "inference", "generic path (relu)", "naive per-step loop", t_naive * 1e3,
                     t_generic * 1e3, t_generic / t_naive])
    print_table(["shape", "pass", "streamlstm", "baseline", "baseline ms", "ours ms", "ratio"], rows)


if __name__ == "__main__":
    main()
