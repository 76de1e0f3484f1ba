"""Training benchmark: ``fit_streams`` against a hand-written dense torch loop, ratios in one run (issue 14).

1,000 streams x 1,000 rows (time-major in an Arrow IPC file), F=8, model ``LSTM(64) -> Linear(1)``,
windows of 50 rows (20 batches of 50,000 rows per epoch), SGD, mse. Contenders, interleaved round after
round so that a busy machine slows them alike; each figure is the median over rounds of one epoch:

- ``fit_streams``: the whole public path: reads the file, arranges the windows, learns every batch
  (key lookup, carries gathered and committed, prequential outputs and per-row losses returned);
- ``torch loop``: ``torch.nn.LSTM`` + ``Linear`` on the same data already in one dense tensor
  [streams, rows, F], carries detached between windows: the floor for this training (goal:
  fit_streams >= 70% of its rows/s);
- ``tf.keras stateful fit`` (optional, ``--keras-python PATH``: an interpreter with tensorflow and
  tf-keras, run in a subprocess on the same data): ``model.fit(x, y, batch_size=streams, shuffle=False)``
  on a ``stateful=True`` model (goal: fit_streams >= 3x its rows/s).

Run: ``python benchmarks/bench_train.py`` (``--quick``: 100 streams x 200 rows, 1 round, to check the
script; ``--rounds N``; ``--threads N``: torch threads, default all; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import print_table

import streamlstm as sl

F, U, LR = 8, 64, 0.01

_KERAS = """
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import numpy as np
import tf_keras as keras
streams, rows, window, rounds = (int(v) for v in sys.argv[1:5])
data = np.load(sys.argv[5])
x, y = data["x"], data["y"]                                  # [streams, rows, F], [streams, rows, 1]
def windows(a):
    b = rows // window
    return a.reshape(streams, b, window, a.shape[2]).swapaxes(0, 1).reshape(b * streams, window, a.shape[2])
model = keras.Sequential([keras.layers.InputLayer(batch_input_shape=(streams, window, x.shape[2])),
                          keras.layers.LSTM(64, stateful=True, return_sequences=True), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
xw, yw = windows(x), windows(y)
times = []
for _ in range(rounds + 1):                                  # the first epoch builds the graph: not counted
    model.reset_states()
    started = time.perf_counter()
    model.fit(xw, yw, batch_size=streams, shuffle=False, epochs=1, verbose=0)
    times.append(time.perf_counter() - started)
print(sorted(times[1:])[len(times[1:]) // 2])
"""


def make_data(streams: int, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((streams, rows, F)).astype(np.float32)
    y = np.sin(np.cumsum(x[..., :1], axis=1) / 10).astype(np.float32)
    return x, y


def write_file(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    streams, rows = x.shape[:2]
    keys = np.tile(np.arange(streams, dtype=np.int64), rows)          # time-major: a live recording
    table = pa.table({"id": keys,
                      "x": pa.FixedSizeListArray.from_arrays(pa.array(x.swapaxes(0, 1).reshape(-1)), F),
                      "y": pa.FixedSizeListArray.from_arrays(pa.array(y.swapaxes(0, 1).reshape(-1)), 1)})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=65536)


def streamlstm_model(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    lstm = sl.LSTM(U, return_sequences=True)
    lstm.build((None, None, F))
    return torch.nn.Sequential(lstm, torch.nn.Linear(U, 1))


def fit_epoch(path: Path, window: int) -> float:
    model = streamlstm_model(0)
    started = time.perf_counter()
    sl.fit_streams(model, path, key="id", features="x", target="y", window=window, epochs=1,
                   optimizer=torch.optim.SGD(model.parameters(), lr=LR), progress=False)
    return time.perf_counter() - started


def torch_epoch(x: torch.Tensor, y: torch.Tensor, window: int) -> float:
    torch.manual_seed(0)
    lstm, dense = torch.nn.LSTM(F, U, batch_first=True), torch.nn.Linear(U, 1)
    optimizer = torch.optim.SGD([*lstm.parameters(), *dense.parameters()], lr=LR)
    streams, rows = x.shape[:2]
    state = (torch.zeros(1, streams, U), torch.zeros(1, streams, U))
    started = time.perf_counter()
    for lo in range(0, rows, window):
        out, state = lstm(x[:, lo:lo + window], state)
        loss = torch.nn.functional.mse_loss(dense(out), y[:, lo:lo + window])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        state = (state[0].detach(), state[1].detach())
    return time.perf_counter() - started


def keras_epoch(python: str, x: np.ndarray, y: np.ndarray, window: int, rounds: int, workdir: Path) -> float:
    np.savez(workdir / "data.npz", x=x, y=y)
    streams, rows = x.shape[:2]
    result = subprocess.run([python, "-c", _KERAS, str(streams), str(rows), str(window), str(rounds),
                             str(workdir / "data.npz")], capture_output=True, text=True, timeout=3600)
    if result.returncode:
        raise RuntimeError(f"the tf.keras run failed: {result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 streams x 200 rows, 1 round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--keras-python", default=None, metavar="PATH",
                        help="a Python with tensorflow + tf-keras: also time tf.keras stateful fit")
    parser.add_argument("--json", default=None, metavar="PATH", help="write every figure to PATH")
    args = parser.parse_args(argv)
    streams, rows, window = (100, 200, 50) if args.quick else (1000, 1000, 50)
    rounds = args.rounds or (1 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = make_data(streams, rows)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(tmp)
        write_file(x, y, workdir / "series.arrow")
        dense_x, dense_y = torch.from_numpy(x), torch.from_numpy(y)
        fit_epoch(workdir / "series.arrow", window)     # warm-up
        torch_epoch(dense_x, dense_y, window)
        samples: dict[str, list[float]] = {"fit_streams": [], "torch loop": []}
        for _ in range(rounds):
            samples["fit_streams"].append(fit_epoch(workdir / "series.arrow", window))
            samples["torch loop"].append(torch_epoch(dense_x, dense_y, window))
        seconds = {name: statistics.median(values) for name, values in samples.items()}
        if args.keras_python:
            seconds["tf.keras stateful fit"] = keras_epoch(args.keras_python, x, y, window, rounds, workdir)
    total = streams * rows
    figures = {name: {"seconds_per_epoch": s, "rows_per_second": total / s} for name, s in seconds.items()}
    ratio = seconds["torch loop"] / seconds["fit_streams"]
    table = [[name, f"{f['seconds_per_epoch']:.3f}", f"{f['rows_per_second']:,.0f}"] for name, f in figures.items()]
    print(f"training: {streams:,} streams x {rows:,} rows, F={F}, LSTM({U}) -> Linear(1), window {window}, SGD, "
          f"{torch.get_num_threads()} torch threads, median of {rounds} epochs")
    print_table(["contender", "s / epoch", "rows/s"], table)
    goals = [f"fit_streams / torch loop: {ratio:.0%} (goal >= 70%: {'met' if ratio >= 0.7 else 'MISSED'})"]
    if "tf.keras stateful fit" in seconds:
        speedup = seconds["tf.keras stateful fit"] / seconds["fit_streams"]
        goals.append(f"fit_streams / tf.keras: {speedup:.1f}x (goal >= 3x: {'met' if speedup >= 3 else 'MISSED'})")
        figures["speedup_vs_keras"] = speedup
    figures["ratio_vs_torch"] = ratio
    print("\n".join(goals))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
