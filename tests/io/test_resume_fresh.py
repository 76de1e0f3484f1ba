"""``resume`` with no checkpoint yet starts from the first row, and says so; loading saved state (a
runtime file, a checkpoint to resume) emits no warning (torch's "NumPy array is not writable" was one)."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from replay_data import make_table, save_model, write_ipc_file

import streamlstm as sl


def test_replay_resume_without_a_checkpoint_says_it_started_fresh(tmp_path) -> None:
    write_ipc_file(make_table(streams=3, steps=4), tmp_path / "in.arrow")
    save_model(tmp_path / "m.slm")
    summary = sl.replay_to_file(tmp_path / "in.arrow", tmp_path / "m.slm", tmp_path / "a.arrow", key="stream_id",
                                features="x", checkpoint=tmp_path / "ck", resume=True, progress=False)
    assert summary.fresh_start and summary.resumed_at == 0 and summary.rows == 12
    assert "--resume: no checkpoint yet, started from the first row" in str(summary)
    plain = sl.replay_to_file(tmp_path / "in.arrow", tmp_path / "m.slm", tmp_path / "b.arrow", key="stream_id",
                              features="x", checkpoint=tmp_path / "ck2", progress=False)
    assert not plain.fresh_start and "no checkpoint" not in str(plain)
    result = subprocess.run([sys.executable, "-m", "streamlstm", "replay", str(tmp_path / "in.arrow"), "--model",
                             str(tmp_path / "m.slm"), "--out", str(tmp_path / "c.arrow"), "--key", "stream_id",
                             "--checkpoint", str(tmp_path / "ck3"), "--resume"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no checkpoint yet, started from the first row" in result.stdout


def _interrupted_checkpoint(tmp_path: Path) -> list[str]:
    """A replay killed (SIGKILL) once its first checkpoint exists; returns the command to resume it."""
    write_ipc_file(make_table(streams=20, steps=200), tmp_path / "in.arrow")
    save_model(tmp_path / "m.slm")
    command = [sys.executable, "-m", "streamlstm", "replay", str(tmp_path / "in.arrow"), "--model",
               str(tmp_path / "m.slm"), "--out", str(tmp_path / "o.arrow"), "--key", "stream_id", "--checkpoint",
               str(tmp_path / "ck"), "--checkpoint-every", "1", "--batch-rows", "40", "--quiet"]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "ck").glob("runtime-*.state")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    process.kill()
    process.wait(60)
    if not list((tmp_path / "ck").glob("runtime-*.state")):
        pytest.skip("the replay finished before it could be killed")
    return command


def test_loading_state_emits_no_warning(tmp_path) -> None:
    command = _interrupted_checkpoint(tmp_path)
    state = sorted((tmp_path / "ck").glob("runtime-*.state"))[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtime = sl.load_runtime(state)
        sl.load_model(tmp_path / "m.slm")
    assert len(runtime) > 0
    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "not writable" not in result.stderr, result.stderr
