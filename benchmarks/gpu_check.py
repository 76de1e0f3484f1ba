"""GPU check: every CUDA test, CPU vs GPU parity of every path, and the GPU benchmarks, in one table.

Run on a machine with one CUDA GPU (well under 5 minutes; exit 1 when a check fails)::

    PYTHONPATH=$PWD python benchmarks/gpu_check.py

``--on-cpu`` runs the same script with ``cpu`` as the "GPU" (no CUDA tests, no CUDA graphs): it checks
the script itself on a machine without a GPU. Without a GPU and without ``--on-cpu`` it says so and
exits 0.

1. **CUDA tests**: ``pytest -m gpu`` over the test files that hold ``gpu``-marked tests.
2. **Parity at the default precision policy** (no global flag is changed; PyTorch's default
   ``torch.backends.cudnn.allow_tf32 = True`` stays): the same weights and inputs on CPU and GPU, every
   layer path (fused LSTM with each kind of mask, the generic loop, a non-tanh LSTM, stacked cells, the
   cell's ``forward`` and ``step`` kernels, the fused path's gradients) and every runtime mode (step, chunk, auto,
   1-row feeds, a time-major replay, ragged batches without mask), plus the tf.keras golden fixture.
   A TF32 kernel would differ by about 1e-3; the tolerance is ``TOL``. Then, for information only, the
   same runtime parity with TF32 opted in (``torch.set_float32_matmul_precision("high")``).
3. **Benchmarks** (CUDA-synchronized medians; the raw baselines run at the same exact float32
   precision): fused ``LSTM`` vs ``torch.nn.LSTM`` with and without masks; ``StreamRuntime.feed`` for
   10,000 streams x 1 row (step) against ``nn.LSTMCell`` (cuBLAS) and 1,000 x 100 (chunk) against
   ``nn.LSTM`` (cuDNN); the 1-row latency; the share of the pinned host-to-device copy; and the launch
   overhead a CUDA graph would remove from a raw cell step (eager vs graph replay), which decides
   whether step mode should capture graphs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

import streamlstm as sl
from streamlstm.layers import force_generic

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "layers"), str(ROOT / "tests" / "runtime")]
from layer_helpers import flatten, make_lstm, make_mask, random_weights  # test helpers, found on the path above
from runtime_helpers import F as RUNTIME_F
from runtime_helpers import make_batch, two_lstm_model

TOL = 5e-5          # max abs difference CPU vs GPU at the default (exact float32) policy
F, UNITS = 32, 64
DEVICE = "cuda"
ROWS: list[tuple[str, str, str, str]] = []   # (check, value, reference, result)


def row(check: str, value: str, reference: str = "", result: str = "") -> None:
    ROWS.append((check, value, reference, result))
    print(f"  {check}: {value} {reference} {result}", flush=True)


def compare(check: str, got: list[torch.Tensor], expected: list[torch.Tensor], tol: float = TOL) -> None:
    error = max(float((g.detach().cpu().double() - e.detach().double()).abs().max()) for g, e in zip(got, expected))
    row(check, f"{error:.1e}", f"max abs diff (tol {tol:.0e})", "ok" if error <= tol else "FAILED")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int = 20) -> float:
    """Median seconds of ``fn()``, the device synchronized around each call."""
    fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def global_precision() -> tuple:
    return (torch.get_float32_matmul_precision(), torch.backends.cudnn.rnn.fp32_precision,
            torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.enabled)


@contextlib.contextmanager
def matmul_precision(value: str) -> Iterator[None]:
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


@contextlib.contextmanager
def exact_cudnn() -> Iterator[None]:
    """For the raw baselines only: cuDNN's RNN in exact float32, as streamlstm runs it by default."""
    saved = torch.backends.cudnn.rnn.fp32_precision
    torch.backends.cudnn.rnn.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cudnn.rnn.fp32_precision = saved


# -- 1. CUDA tests ---------------------------------------------------------------------------------------

def cuda_tests() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text())
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    summary = lines[-1] if lines else done.stderr.strip()[-200:]
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:])
    row("CUDA tests (pytest -m gpu)", summary.strip("= "), ", ".join(files), "ok" if done.returncode == 0 else "FAILED")


# -- 2. parity ------------------------------------------------------------------------------------------

def on_device(value):
    if isinstance(value, (list, tuple)):
        return [on_device(v) for v in value]
    return None if value is None else value.to(DEVICE)


def layer_parity() -> None:
    """Every layer path, CPU vs device, float32, the same weights."""
    torch.manual_seed(0)
    batch, steps = 16, 40
    x = torch.randn(batch, steps, 8)
    state = [torch.randn(batch, 32) for _ in range(2)]
    lstm = make_lstm(32, 8, return_sequences=True, return_state=True)
    for kind in ("none", "right_padded", "left_padded", "holes", "fully_masked_row", "all_masked"):
        mask = make_mask(kind, batch, steps, seed=2)
        gpu_layer = copy.deepcopy(lstm).to(DEVICE)
        got = gpu_layer(on_device(x), mask=on_device(mask), initial_state=on_device(state))
        compare(f"layer: LSTM fused, mask {kind} ({gpu_layer.last_path})", flatten(got),
                flatten(lstm(x, mask=mask, initial_state=state)))
    variants = {"go_backwards + zero_output_for_mask": {"go_backwards": True, "zero_output_for_mask": True},
                "time_major": {"time_major": True}}
    for name, kwargs in variants.items():
        layer = make_lstm(32, 8, return_sequences=True, return_state=True, **kwargs)
        xt = x.transpose(0, 1) if kwargs.get("time_major") else x
        mask = make_mask("holes", batch, steps, seed=3)
        mask = mask.T.contiguous() if kwargs.get("time_major") else mask
        compare(f"layer: LSTM fused, {name}", flatten(copy.deepcopy(layer).to(DEVICE)(on_device(xt),
                mask=on_device(mask))), flatten(layer(xt, mask=mask)))
    mask = make_mask("holes", batch, steps, seed=4)
    gpu_layer = copy.deepcopy(lstm).to(DEVICE)
    with force_generic():
        got = gpu_layer(on_device(x), mask=on_device(mask))
        expected = lstm(x, mask=mask)
    compare("layer: LSTM generic loop (force_generic)", flatten(got), flatten(expected))
    relu = make_lstm(32, 8, return_sequences=True, activation="relu", recurrent_activation="hard_sigmoid")
    compare("layer: LSTM relu/hard_sigmoid (generic)", [copy.deepcopy(relu).to(DEVICE)(on_device(x),
            mask=on_device(mask))], [relu(x, mask=mask)])
    stacked = sl.RNN([sl.LSTMCell(16), sl.LSTMCell(8)], return_sequences=True)
    stacked.build((None, None, 8))
    random_weights(stacked, 5)
    compare("layer: RNN of stacked LSTMCells", [copy.deepcopy(stacked).to(DEVICE)(on_device(x))], [stacked(x)])
    cell_parity(lstm.cell)
    gradient_parity(lstm, x, mask)


def cell_parity(cell: sl.LSTMCell) -> None:
    gpu_cell = copy.deepcopy(cell).to(DEVICE)
    for rows in (4, 4096):   # the native cell (small batches) and the in-place gate math (large ones)
        x, h, c = torch.randn(rows, 8), torch.randn(rows, 32), torch.randn(rows, 32)
        compare(f"cell: LSTMCell.step, {rows} rows", list(gpu_cell.step(*on_device([x, h, c]))),
                list(cell.step(x, h, c)))
    compare("cell: LSTMCell forward", flatten(gpu_cell(on_device(x), on_device([h, c]))), flatten(cell(x, [h, c])))


def gradient_parity(lstm: sl.LSTM, x: torch.Tensor, mask: torch.Tensor) -> None:
    def grads(layer: sl.LSTM, device: str) -> list[torch.Tensor]:
        leaf = x.to(device).requires_grad_()
        out, h, c = layer(leaf, mask=mask.to(device))
        (out.square().sum() + h.sum() + c.sum()).backward()
        return [leaf.grad] + [p.grad for p in layer.parameters()]

    compare("layer: LSTM fused gradients", grads(copy.deepcopy(lstm).to(DEVICE), DEVICE),
            grads(copy.deepcopy(lstm), "cpu"), tol=1e-4)


def feed_outputs(device: str, mode: str, batches: list[pa.RecordBatch], flags: bool) -> torch.Tensor:
    names = {"mask": "m", "reset": "r", "end": "e"} if flags else {}
    rt = sl.StreamRuntime(two_lstm_model(), key="id", features="x", mode=mode, device=device, **names)
    parts = [rt.feed(b).column("output").flatten().to_numpy(zero_copy_only=False) for b in batches]
    return torch.from_numpy(np.concatenate(parts))


def runtime_cases() -> dict[str, tuple[list[str], list[pa.RecordBatch], bool]]:
    rng = np.random.default_rng(0)
    n = 3000
    keys, x = rng.integers(0, 200, n), rng.normal(size=(n, RUNTIME_F)).astype(np.float32)
    flags = {"mask": rng.random(n) > 0.2, "reset": rng.random(n) < 0.03, "end": rng.random(n) < 0.02}
    cuts = [0, 1, 700, 701, 1500, 2999, n]
    spans = list(zip(cuts[:-1], cuts[1:]))
    interleaved = [make_batch(keys[a:b], x[a:b], **{k: v[a:b] for k, v in flags.items()}) for a, b in spans]
    ragged = [make_batch(keys[a:b], x[a:b]) for a, b in spans]
    streams, steps = 100, 50
    replay = make_batch(np.tile(np.arange(streams), steps),
                        rng.normal(size=(streams * steps, RUNTIME_F)).astype(np.float32))
    one_row = [make_batch(keys[i:i + 1], x[i:i + 1], **{k: v[i:i + 1] for k, v in flags.items()}) for i in range(50)]
    return {"interleaved, mask/reset/end": (["step", "chunk", "auto"], interleaved, True),
            "ragged, no mask": (["step", "chunk"], ragged, False),
            "time-major replay 100 x 50": (["step", "chunk"], [replay], False),
            "1-row feeds": (["auto"], one_row, True)}


def runtime_parity(label: str = "runtime", tol: float = TOL) -> None:
    for name, (modes, batches, flags) in runtime_cases().items():
        for mode in modes:
            compare(f"{label}: {mode}, {name}", [feed_outputs(DEVICE, mode, batches, flags)],
                    [feed_outputs("cpu", mode, batches, flags)], tol)


def golden() -> None:
    from test_keras_golden import build, load_case  # a test helper, imported on demand

    meta, arrays = load_case("two_lstm_dense")
    rt = sl.StreamRuntime(build(meta, arrays), key="id", features="x", mask="m", reset="r", device=DEVICE)
    out = rt.feed(make_batch(arrays["keys"], arrays["x"].astype(np.float32), mask=arrays["mask"],
                             reset=arrays["reset"]))
    got = torch.from_numpy(out.column("output").flatten().to_numpy().reshape(-1, meta["head_units"]))
    compare("runtime: tf.keras golden fixture", [got], [torch.from_numpy(arrays["output"])], 1e-5)


def parity() -> None:
    before = global_precision()
    layer_parity()
    runtime_parity()
    golden()
    after = global_precision()
    row("global precision settings after the checks", str(after), f"before: {before}",
        "ok" if after == before else "FAILED")
    with matmul_precision("high"):   # opt-in TF32: for information (it differs from the CPU on TF32 GPUs)
        for mode in ("step", "chunk"):
            _, batches, flags = runtime_cases()["interleaved, mask/reset/end"]
            error = float((feed_outputs(DEVICE, mode, batches, flags)
                           - feed_outputs("cpu", mode, batches, flags)).abs().max())
            row(f"opt-in TF32 ('high'): runtime {mode}", f"{error:.1e}", "max abs diff vs CPU", "info")


# -- 3. benchmarks --------------------------------------------------------------------------------------

def ratio_row(check: str, ours: float, raw: float, baseline: str, rows: int | None = None) -> None:
    value = f"{rows / ours:,.0f} rows/s" if rows else f"{ours * 1e6:,.1f} us"
    row(check, value, f"{raw / ours:.0%} of {baseline}'s speed" if rows else f"{ours / raw:.2f}x {baseline}")


def layer_benchmarks() -> None:
    batch, steps, units = 256, 100, 128
    ours = sl.LSTM(units, return_sequences=True)
    ours.build((None, None, F))
    ours.to(DEVICE)
    ref = ours.to_torch_lstm()
    x = torch.randn(batch, steps, F, device=DEVICE)
    with torch.no_grad(), exact_cudnn():
        raw = timed(lambda: ref(x))
    with torch.no_grad():
        for kind in ("none", "right_padded", "holes"):
            mask = on_device(make_mask(kind, batch, steps, seed=1))
            t = timed(lambda mask=mask: ours(x, mask=mask))
            ratio_row(f"bench: LSTM B{batch} T{steps} U{units}, mask {kind}", t, raw, "nn.LSTM (no mask)",
                      batch * steps)


def runtime_benchmarks(repeats: int) -> None:
    torch.manual_seed(0)
    layer = sl.LSTM(UNITS, return_sequences=True)
    layer.build((None, None, F))
    layer.to(DEVICE)
    cell = torch.nn.LSTMCell(F, UNITS).to(DEVICE)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        n = 10_000
        batch = make_batch(np.arange(n), rng.normal(size=(n, F)).astype(np.float32))
        x, h, c = torch.randn(n, F, device=DEVICE), torch.zeros(n, UNITS, device=DEVICE), torch.zeros(
            n, UNITS, device=DEVICE)
        raw = timed(lambda: cell(x, (h, c)), repeats)
        rt = sl.StreamRuntime(layer, key="id", features="x", mode="step", device=DEVICE)
        ours = timed(lambda: rt.feed(batch), repeats)
        ratio_row("bench: runtime step, 10,000 streams x 1 row", ours, raw, "nn.LSTMCell", n)
        if DEVICE == "cuda":
            host = torch.from_numpy(batch.column("x").flatten().to_numpy().reshape(n, F))
            copy_time = timed(lambda: host.pin_memory().to(DEVICE, non_blocking=True), repeats)
            row("bench:   pinned host-to-device copy of that batch", f"{copy_time / ours:.1%}", "of the feed")
        streams, steps = 1000, 100
        xs = rng.normal(size=(streams, steps, F)).astype(np.float32)
        replay = make_batch(np.tile(np.arange(streams), steps), xs.transpose(1, 0, 2).reshape(-1, F))
        ref = torch.nn.LSTM(F, UNITS, batch_first=True).to(DEVICE)
        xt = torch.from_numpy(xs).to(DEVICE)
        with exact_cudnn():
            raw = timed(lambda: ref(xt), repeats)
        rt = sl.StreamRuntime(layer, key="id", features="x", mode="chunk", device=DEVICE)
        ours = timed(lambda: rt.feed(replay), repeats)
        ratio_row("bench: runtime chunk, 1,000 streams x 100 rows", ours, raw, "nn.LSTM", streams * steps)
        one = make_batch([7], rng.normal(size=(1, F)).astype(np.float32))
        x1, h1, c1 = (torch.zeros(1, d, device=DEVICE) for d in (F, UNITS, UNITS))
        raw = timed(lambda: cell(x1, (h1, c1)), 10 * repeats)
        rt = sl.StreamRuntime(layer, key="id", features="x", device=DEVICE)
        ours = timed(lambda: rt.feed(one), 10 * repeats)
        ratio_row("bench: 1-row feed latency (median)", ours, raw, "one nn.LSTMCell call")
        if DEVICE == "cuda":
            launch_overhead(cell, repeats)


def launch_overhead(cell: torch.nn.LSTMCell, repeats: int) -> None:
    """A raw cell step eager vs replayed from a CUDA graph: the most a graph-captured step could save."""
    for rows in (1, 10_000):
        x, h, c = (torch.zeros(rows, d, device="cuda") for d in (F, UNITS, UNITS))
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                cell(x, (h, c))
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            static_h, _ = cell(x, (h, c))
        graph.replay()
        sync()
        eager_h, _ = cell(x, (h, c))
        ok = torch.allclose(static_h, eager_h, rtol=1e-5, atol=1e-6)
        eager, replay = timed(lambda x=x, h=h, c=c: cell(x, (h, c)), repeats), timed(graph.replay, repeats)
        row(f"bench: nn.LSTMCell step on {rows} rows, CUDA graph replay", f"{replay * 1e6:,.1f} us",
            f"eager {eager * 1e6:,.1f} us", "ok" if ok else "FAILED (replay != eager)")


def benchmarks(repeats: int) -> None:
    layer_benchmarks()
    runtime_benchmarks(repeats)


# -- main -----------------------------------------------------------------------------------------------

def print_table() -> None:
    headers = ("check", "value", "reference", "result")
    widths = [max(len(r[i]) for r in [headers, *ROWS]) for i in range(4)]
    print()
    for index, values in enumerate([headers, *ROWS]):
        print(" | ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip())
        if index == 0:
            print("-|-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    global DEVICE   # the one switch of --on-cpu
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--on-cpu", action="store_true", help="check this script with cpu as the 'GPU'")
    args = parser.parse_args(argv)
    if args.on_cpu:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA device (torch.cuda.is_available() is False); --on-cpu checks the script")
        return 0
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (--on-cpu)"
    print(f"gpu_check on {name}, torch {torch.__version__}, policy: float32 matmul precision "
          f"{torch.get_float32_matmul_precision()!r}, cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}")
    started = time.perf_counter()
    if DEVICE == "cuda":
        cuda_tests()
    parity()
    benchmarks(repeats=20 if DEVICE == "cuda" else 3)
    print_table()
    failed = [r[0] for r in ROWS if r[3].startswith("FAILED")]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "all ok"
    print(f"\ndone in {time.perf_counter() - started:.0f} s; {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
