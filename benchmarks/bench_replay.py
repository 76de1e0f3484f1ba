"""Replay benchmark: ``streamlstm replay`` of a memory-mapped Arrow file against torch.nn.LSTM.

1,000,000 rows = 10,000 streams x 100 rows, F=8, units=32, rows interleaved as recorded live (row r is
step r // 10,000 of stream r % 10,000). The baseline is ``torch.nn.LSTM`` (same weights) on the same data
already in a [10000, 100, 8] tensor, the raw rate replay can approach. Replay reads the file, feeds the
StreamRuntime batch by batch and (for the file rows) writes the output file; checkpointing every 10
batches is compared with the same run without. Prints median times and rows/s ratios.
Run: ``python benchmarks/bench_replay.py`` (``--quick``: fewer repeats).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_seconds, print_table

import streamlstm as sl

STREAMS, STEPS, FEATURES, UNITS = 10_000, 100, 8, 32
ROWS = STREAMS * STEPS


def write_input(path: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS, STREAMS, FEATURES)).astype(np.float32)  # time-major: rows interleaved
    schema = pa.schema([("stream_id", pa.int64()), ("x", pa.list_(pa.float32(), FEATURES))])
    keys = np.arange(STREAMS, dtype=np.int64)
    with pa.ipc.new_file(path, schema) as writer:
        for step in range(0, STEPS, 10):  # record batches of 100,000 rows
            block = x[step:step + 10].reshape(-1)
            writer.write_batch(pa.record_batch([pa.array(np.tile(keys, 10)),
                                                pa.FixedSizeListArray.from_arrays(pa.array(block), FEATURES)],
                                               schema=schema))
    return x.transpose(1, 0, 2).copy()  # [streams, steps, features]


def make_models() -> tuple[sl.LSTM, torch.nn.LSTM]:
    torch.manual_seed(0)
    ours = sl.LSTM(UNITS, return_sequences=True, input_shape=(None, FEATURES))
    return ours, ours.to_torch_lstm().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    work = tempfile.mkdtemp(prefix="bench_replay_")
    try:
        path = os.path.join(work, "in.arrow")
        dense = torch.from_numpy(write_input(path))
        ours, ref = make_models()
        model_path = os.path.join(work, "model.slm")
        sl.save_model(ours, model_path)

        def raw():
            with torch.inference_mode():
                ref(dense)

        def iterate(batch_rows):
            for _ in sl.replay(path, model_path, batch_rows=batch_rows, progress=False):
                pass

        def to_file(batch_rows, checkpoint):
            out = os.path.join(work, "out.arrow")
            ck = os.path.join(work, "ck") if checkpoint else None
            sl.replay_to_file(path, model_path, out, batch_rows=batch_rows, checkpoint=ck, checkpoint_every=10,
                              progress=False)

        raw_s = median_seconds(raw, repeats=repeats, warmup=1)
        rows = [("torch.nn.LSTM on [10000, 100, 8] (raw)", raw_s, ROWS / raw_s, 1.0)]
        cases = [(f"replay, iterate, batch_rows={b:,}", lambda b=b: iterate(b)) for b in (65_536, 100_000, 1_000_000)]
        for b in (100_000, 10_000):
            cases.append((f"replay -> out.arrow, batch_rows={b:,}", lambda b=b: to_file(b, False)))
            cases.append((f"  same + checkpoint every 10 batches ({b:,})", lambda b=b: to_file(b, True)))
        timed = {}
        for name, fn in cases:
            seconds = median_seconds(fn, repeats=repeats, warmup=1)
            timed[name] = seconds
            rows.append((name, seconds, ROWS / seconds, raw_s / seconds))
        print(f"replay of {ROWS:,} rows ({STREAMS:,} streams x {STEPS} rows, F={FEATURES}, units={UNITS}); "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}")
        print_table(["case", "seconds", "rows/s", "vs raw"], rows)
        names = list(timed)
        for plain, checkpointed in ((names[3], names[4]), (names[5], names[6])):
            print(f"checkpoint overhead ({plain.split(', ')[-1]}): {timed[checkpointed] / timed[plain] - 1:+.1%} time")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
