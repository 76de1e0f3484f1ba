"""Memory stays flat: replaying a file twice as large does not raise peak resident memory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from replay_data import save_model

_MEASURE = """
import resource, sys
from streamlstm.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
sys.exit(code)
"""


def _write(path, rows: int, width: int = 8, streams: int = 1000) -> None:
    """``rows`` rows in record batches of 50,000, written batch by batch (the test itself stays small)."""
    rng = np.random.default_rng(0)
    schema = pa.schema([("stream_id", pa.int64()), ("x", pa.list_(pa.float32(), width))])
    with pa.ipc.new_file(str(path), schema) as writer:
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            x = rng.standard_normal(n * width).astype(np.float32)
            writer.write_batch(pa.record_batch([pa.array(np.arange(start, start + n) % streams),
                                                pa.FixedSizeListArray.from_arrays(pa.array(x), width)], schema=schema))


def _peak_kib(tmp_path, name: str) -> int:
    result = subprocess.run([sys.executable, "-c", _MEASURE, "replay", str(tmp_path / name), "--model",
                             str(tmp_path / "m.slm"), "--out", str(tmp_path / f"{name}.out.arrow"), "--quiet",
                             "--batch-rows", "20000"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


@pytest.mark.slow
def test_twice_the_rows_do_not_raise_peak_rss(tmp_path):
    rows = 1_000_000  # 40 MB of input and 64 MB of output (units 16) per million rows
    _write(tmp_path / "one.arrow", rows)
    _write(tmp_path / "two.arrow", 2 * rows)
    save_model(tmp_path / "m.slm", width=8, units=16, head=False)
    one, two = _peak_kib(tmp_path, "one.arrow"), _peak_kib(tmp_path, "two.arrow")
    grown_mib = (two - one) / 1024
    print(f"peak RSS: {one / 1024:.0f} MiB for {rows:,} rows, {two / 1024:.0f} MiB for {2 * rows:,}")
    # Holding either file or its output would add ~100 MB; streaming keeps the growth to noise.
    assert grown_mib < 25, f"peak RSS {one / 1024:.0f} MiB -> {two / 1024:.0f} MiB"
