"""GPU check of the stream runtime: CUDA parity tests, then GPU benchmarks, in well under 5 minutes.

Run: ``python benchmarks/gpu_check.py``. Without a CUDA device it prints that it skipped and exits 0.

Parity (exit 1 on a mismatch): the same interleaved rows (masks, resets, ends, random batching) through
a CPU runtime and a ``device="cuda"`` runtime, step and chunk modes, two LSTMs and a Dense head, plus
the tf.keras golden fixture; TF32 is switched off so that the comparison is about semantics.

Benchmarks (CUDA-synchronized medians, ratios against raw torch on the same GPU):
step mode at 100,000 streams x 1 row against ``nn.LSTMCell`` on [100000, 32]; chunk mode 1,000 x 100
against ``nn.LSTM`` on [1000, 100, 32]; 1-row latency against one ``nn.LSTMCell`` call on [1, 32]; and the
host-to-device share: the pinned copy of a 100,000-row feature block against a whole ``feed``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

import streamlstm as sl

F, UNITS = 32, 64
ROOT = Path(__file__).resolve().parents[1]


def fixed_list(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(x, np.float32).reshape(-1)), x.shape[-1])


def two_lstm_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    first, second = sl.LSTM(16, return_sequences=True), sl.LSTM(8, return_sequences=True)
    first.build((None, None, F))
    second.build((None, None, 16))
    return torch.nn.Sequential(first, second, torch.nn.Linear(8, 3))


def parity() -> list[str]:
    failures = []
    rng = np.random.default_rng(0)
    n = 3000
    keys = rng.integers(0, 200, n)
    cols = {"id": pa.array(keys), "x": fixed_list(rng.normal(size=(n, F))), "m": pa.array(rng.random(n) > 0.2),
            "r": pa.array(rng.random(n) < 0.03), "e": pa.array(rng.random(n) < 0.02)}
    batch = pa.record_batch(cols)
    cuts = [0, 1, 700, 701, 1500, 2999, n]
    for mode in ("step", "chunk"):
        outputs = {}
        for device in ("cpu", "cuda"):
            rt = sl.StreamRuntime(two_lstm_model(), key="id", features="x", mask="m", reset="r", end="e", mode=mode,
                                  device=device)
            parts = [rt.feed(batch.slice(a, b - a)).column("output") for a, b in zip(cuts[:-1], cuts[1:])]
            outputs[device] = np.concatenate([p.flatten().to_numpy() for p in parts])
        error = float(np.abs(outputs["cpu"] - outputs["cuda"]).max())
        status = "ok" if error < 1e-4 else "FAILED"
        print(f"  parity {mode:5s} cpu vs cuda: max abs diff {error:.2e} {status}")
        if status != "ok":
            failures.append(f"parity {mode}")
    failures += golden()
    return failures


def golden() -> list[str]:
    sys.path.insert(0, str(ROOT / "tests" / "runtime"))
    from test_keras_golden import build, load_case  # noqa: PLC0415 - test helpers, imported on demand

    meta, arrays = load_case("two_lstm_dense")
    rt = sl.StreamRuntime(build(meta, arrays), key="id", features="x", mask="m", reset="r", device="cuda")
    out = rt.feed(pa.record_batch({"id": pa.array(arrays["keys"]), "x": fixed_list(arrays["x"]),
                                   "m": pa.array(arrays["mask"]), "r": pa.array(arrays["reset"])}))
    got = out.column("output").flatten().to_numpy().reshape(-1, meta["head_units"])
    ok = np.allclose(got, arrays["output"], rtol=1e-5, atol=1e-5)
    print(f"  tf.keras golden on cuda: {'ok' if ok else 'FAILED'}")
    return [] if ok else ["golden"]


def timed(fn, repeats: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def benchmarks() -> None:
    torch.manual_seed(0)
    layer = sl.LSTM(UNITS, return_sequences=True)
    layer.build((None, None, F))
    layer.to("cuda")
    cell = torch.nn.LSTMCell(F, UNITS).cuda()
    rng = np.random.default_rng(1)
    rows = []
    with torch.no_grad():
        n = 100_000
        batch = pa.record_batch({"id": pa.array(np.arange(n)), "x": fixed_list(rng.normal(size=(n, F)))})
        x, h, c = torch.randn(n, F, device="cuda"), torch.zeros(n, UNITS, device="cuda"), torch.zeros(n, UNITS,
                                                                                                   device="cuda")
        raw = timed(lambda: cell(x, (h, c)))
        rt = sl.StreamRuntime(layer, key="id", features="x", mode="step", device="cuda")
        ours = timed(lambda: rt.feed(batch))
        rows.append(("step, 100,000 streams x 1 row", n / ours, raw / ours))
        host = batch.column("x").flatten().to_numpy().reshape(n, F)
        copy = timed(lambda: torch.from_numpy(host).pin_memory().to("cuda", non_blocking=True))
        rows.append(("  host-to-device share of that feed", copy / ours, None))
        streams, steps = 1000, 100
        xs = rng.normal(size=(streams, steps, F)).astype(np.float32)
        replay = pa.record_batch({"id": pa.array(np.tile(np.arange(streams), steps)),
                                  "x": fixed_list(xs.transpose(1, 0, 2).reshape(-1, F))})
        ref = torch.nn.LSTM(F, UNITS, batch_first=True).cuda()
        xt = torch.from_numpy(xs).cuda()
        raw = timed(lambda: ref(xt))
        rt = sl.StreamRuntime(layer, key="id", features="x", mode="chunk", device="cuda")
        ours = timed(lambda: rt.feed(replay))
        rows.append(("chunk, 1,000 x 100", streams * steps / ours, raw / ours))
        one = pa.record_batch({"id": pa.array([7]), "x": fixed_list(rng.normal(size=(1, F)))})
        x1, h1, c1 = (torch.zeros(1, d, device="cuda") for d in (F, UNITS, UNITS))
        raw = timed(lambda: cell(x1, (h1, c1)), 200)
        rt = sl.StreamRuntime(layer, key="id", features="x", device="cuda")
        ours = timed(lambda: rt.feed(one), 200)
        rows.append(("1-row latency (us; ratio = ours / raw)", ours * 1e6, ours / raw))
    for name, value, ratio in rows:
        shown = f"{value:.1%}" if "share" in name else f"{value:,.1f}"
        print(f"  {name:42s} {shown:>14s}  {'' if ratio is None else f'{ratio:.2f} of raw'}")


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"gpu_check on {torch.cuda.get_device_name()} (torch {torch.__version__})")
    started = time.perf_counter()
    failures = parity()
    print("benchmarks:")
    benchmarks()
    verdict = "FAILED: " + ", ".join(failures) if failures else "all ok"
    print(f"done in {time.perf_counter() - started:.0f} s; {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
