"""Layer benchmark: streamlstm.LSTM against torch.nn.LSTM, and the generic path against a naive loop.

One process, the same weights and data for every contender, measured round-robin (every contender once
per round) so that a busy machine slows them alike. Prints median times and ratios (streamlstm time /
baseline time; below 1 is faster). Run: ``python benchmarks/bench_layers.py``.
Shapes are (batch, time, features, units). ``--quick`` runs fewer rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import interleaved, print_table

import streamlstm as sl

SHAPES = [(64, 100, 32, 64), (256, 200, 32, 128), (1, 1000, 8, 64)]


def make_pair(features: int, units: int) -> tuple[sl.LSTM, torch.nn.LSTM]:
    ours = sl.LSTM(units, return_sequences=True, input_shape=(None, features))
    return ours, ours.to_torch_lstm()


def masks(batch: int, time: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    holes = torch.rand(batch, time, generator=gen) >= 0.2
    lengths = torch.randint(time // 2, time + 1, (batch,), generator=gen)
    right = torch.arange(time)[None, :] < lengths[:, None]
    return {"holes 20%": holes, "right-padded": right}


def naive_loop(cell: sl.LSTMCell, x: torch.Tensor) -> torch.Tensor:
    """What a user writes by hand: call the cell once per step."""
    state = cell.get_initial_state(x.shape[0])
    outputs = []
    for t in range(x.shape[1]):
        out, state = cell(x[:, t], state)
        outputs.append(out)
    return torch.stack(outputs, 1)


def shape_rows(batch: int, time: int, features: int, units: int, rounds: int) -> list[list[object]]:
    """Every contender for one shape, measured round-robin (each once per round) so drift hits all alike."""
    shape = f"B{batch} T{time} F{features} U{units}"
    ours, ref = make_pair(features, units)
    x = torch.randn(batch, time, features)
    rows = []
    for backward in (False, True):
        xg = x.clone().requires_grad_(backward)
        contenders = {"torch.nn.LSTM": lambda: ref(xg)[0], "LSTM, no mask": lambda: ours(xg)}
        for name, mask in masks(batch, time).items():
            contenders[f"LSTM, {name}"] = lambda mask=mask: ours(xg, mask=mask)
        if backward:
            contenders = {name: lambda fn=fn: fn().sum().backward() for name, fn in contenders.items()}
            times = interleaved(contenders, rounds, 1)
        else:
            with torch.no_grad():
                times = interleaved(contenders, rounds, 1)
        base = times.pop("torch.nn.LSTM")[0]
        kind = "fwd+bwd" if backward else "inference"
        for name, (wall, _) in times.items():
            baseline = "torch.nn.LSTM" + ("" if name == "LSTM, no mask" else " no mask")
            rows.append([shape, kind, name, baseline, base * 1e3, wall * 1e3, wall / base])
    relu = sl.LSTM(units, activation="relu", return_sequences=True, input_shape=(None, features))
    with torch.no_grad():
        times = interleaved({"naive": lambda: naive_loop(relu.cell, x), "generic": lambda: relu(x)}, rounds, 1)
    t_naive, t_generic = times["naive"][0], times["generic"][0]
    rows.append([shape, "inference", "generic path (relu)", "naive per-step loop", t_naive * 1e3,
                 t_generic * 1e3, t_generic / t_naive])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke run)")
    args = parser.parse_args()
    rounds = 5 if args.quick else 15
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    rows = [row for shape in SHAPES for row in shape_rows(*shape, rounds)]
    print_table(["shape", "pass", "streamlstm", "baseline", "baseline ms", "ours ms", "ratio"], rows)


if __name__ == "__main__":
    main()
