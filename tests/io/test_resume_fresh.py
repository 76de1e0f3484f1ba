"""``resume`` with no checkpoint yet starts from the first row, and says so."""

from __future__ import annotations

import subprocess
import sys

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
