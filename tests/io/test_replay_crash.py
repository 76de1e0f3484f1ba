"""kill -9 during a checkpointed ``streamlstm replay``, several times, then --resume: the exact output."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from replay_data import assert_same_output, make_table, read_arrow, save_model, write_ipc_file


def _command(tmp_path, out, *extra):
    return [sys.executable, "-m", "streamlstm", "replay", str(tmp_path / "in.arrow"), "--model",
            str(tmp_path / "m.slm"), "--out", str(tmp_path / out), "--time", "time", "--reset", "reset",
            "--batch-rows", "1500", "--quiet", *extra]


def _kill_during_run(command, checkpoint, rng) -> bool:
    """Start ``command``, kill -9 it at a random moment after its first checkpoint; False if it finished."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (checkpoint / "checkpoint.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.6))
    if process.poll() is not None:
        assert process.returncode == 0, process.stderr.read()
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return True


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_kill_9_then_resume_gives_the_uninterrupted_output(tmp_path, fmt):
    table = make_table(streams=400, steps=250, width=8)
    write_ipc_file(table, tmp_path / "in.arrow", chunk=4096)
    save_model(tmp_path / "m.slm", width=8, units=32)
    reference = subprocess.run(_command(tmp_path, "reference.arrow"), capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    out, checkpoint = f"out.{fmt}", tmp_path / "ck"
    command = _command(tmp_path, out, "--checkpoint", str(checkpoint), "--checkpoint-every", "3", "--resume")
    rng = random.Random(fmt)
    kills = sum(_kill_during_run(command, checkpoint, rng) for _ in range(3))
    assert kills >= 1
    assert not (tmp_path / out).exists() or kills < 3
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    if fmt == "arrow":
        got = read_arrow(tmp_path / out)
    else:
        import pyarrow.parquet as pq

        got = pq.read_table(tmp_path / out)
    expected = read_arrow(tmp_path / "reference.arrow")
    assert got.num_rows == table.num_rows
    assert_same_output(got, expected)
    assert not checkpoint.exists()
    assert not (tmp_path / (out + ".partial")).exists()
    assert isinstance(got, pa.Table)
