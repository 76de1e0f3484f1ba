"""``streamlstm replay`` at its edges: a changed input, a hostile or damaged checkpoint, an output over an
input, a full disk, a kill after the final rename. Each ends in one line and exit 2 (or a clean finish)."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from replay_data import make_table, read_arrow, save_model, write_ipc_file

import streamlstm as sl
from streamlstm.cli import main
from streamlstm.errors import CheckpointError, FileError, StreamError
from streamlstm.io.checksum import seal

BAD_ROW = 170   # a non-finite feature here stops a run of 50-row batches after three checkpoints
ARGS = ["--time", "time", "--batch-rows", "50", "--quiet"]
OPTIONS = {"time": "time", "batch_rows": 50, "progress": False}


def table_with_bad_row(seed: int = 0, bad_row: int | None = BAD_ROW) -> pa.Table:
    table = make_table(streams=6, steps=30, seed=seed).drop_columns(["reset"])
    if bad_row is None:
        return table
    x = table.column("x").combine_chunks().flatten().to_numpy().copy()
    x[bad_row * 3] = np.inf
    return table.set_column(2, "x", pa.FixedSizeListArray.from_arrays(pa.array(x), 3))


@pytest.fixture
def files(tmp_path):
    return write_ipc_file(table_with_bad_row(), tmp_path / "in.arrow"), save_model(tmp_path / "model.slm")


def interrupted(source: Path, model: Path, tmp_path: Path, fmt: str = "arrow") -> tuple[Path, Path]:
    """A checkpointed run stopped by the bad row: its output path and checkpoint directory."""
    out, checkpoint = tmp_path / f"out.{fmt}", tmp_path / "ck"
    with pytest.raises(StreamError):
        sl.replay_to_file(source, model, out, checkpoint=checkpoint, checkpoint_every=1, **OPTIONS)
    assert (checkpoint / "checkpoint.json").is_file()
    return out, checkpoint


def one_line_exit_2(argv: list[str], capsys, message: str) -> str:
    assert main(["replay", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamlstm replay: error: "), err
    assert re.search(message, err), err
    return err


def test_resume_refuses_an_input_rewritten_with_other_data_of_the_same_size(files, tmp_path):
    source, model = files
    out, checkpoint = interrupted(source, model, tmp_path)
    size = source.stat().st_size
    write_ipc_file(table_with_bad_row(seed=1, bad_row=None), source)
    assert source.stat().st_size == size   # what the checkpoint used to compare
    with pytest.raises(CheckpointError, match="written by a different run \\(input_files"):
        sl.replay_to_file(source, model, out, checkpoint=checkpoint, resume=True, **OPTIONS)


def _rewrite_record(checkpoint: Path, edit, sealed: bool = True) -> None:
    path = checkpoint / "checkpoint.json"
    data = path.read_bytes()
    record = json.loads(data[: data.rindex(b"\nstreamlstm-crc32 ")])
    edit(record)
    text = json.dumps(record).encode()
    path.write_bytes(seal(text) if sealed else text)


@pytest.mark.parametrize("sealed", [True, False], ids=["checksummed", "format_version 1"])
def test_a_checkpoint_cannot_name_a_file_outside_its_directory(files, tmp_path, sealed):
    source, model = files
    out, checkpoint = interrupted(source, model, tmp_path)
    victim = tmp_path / "victim.state"
    victim.write_bytes((checkpoint / json.loads(
        (checkpoint / "checkpoint.json").read_bytes().split(b"\nstreamlstm-crc32 ")[0])["runtime"]).read_bytes())

    def edit(record):
        record["runtime"] = "../victim.state"
        if not sealed:
            record["format_version"] = 1

    _rewrite_record(checkpoint, edit, sealed)
    with pytest.raises(FileError, match=r"runtime must name a state file runtime-NNNNNN\.state inside"):
        sl.replay_to_file(source, model, out, checkpoint=checkpoint, resume=True, **OPTIONS)
    assert victim.is_file()


def test_an_edited_record_is_damage_not_a_finished_run(files, tmp_path):
    source, model = files
    out, checkpoint = interrupted(source, model, tmp_path)
    record = checkpoint / "checkpoint.json"
    record.write_bytes(record.read_bytes().replace(b'"done": false', b'"done": true '))
    with pytest.raises(FileError, match="checkpoint.json is damaged: its checksum does not match"):
        sl.replay_to_file(source, model, out, checkpoint=checkpoint, resume=True, **OPTIONS)


def test_out_over_an_input_or_the_model_is_refused(files, tmp_path, capsys):
    source, model = files
    before = source.read_bytes(), model.read_bytes()
    one_line_exit_2([str(source), "--model", str(model), "--out", str(source), *ARGS], capsys,
                    "output .*in.arrow is one of the inputs")
    one_line_exit_2([str(source), "--model", str(model), "--out", str(model), "--format", "arrow", *ARGS], capsys,
                    "is one of the inputs \\(or the model file\\)")
    assert (source.read_bytes(), model.read_bytes()) == before


def test_a_partial_output_that_is_a_directory(files, tmp_path, capsys):
    source, model = files
    (tmp_path / "out.arrow.partial").mkdir()
    one_line_exit_2([str(source), "--model", str(model), "--out", str(tmp_path / "out.arrow"), *ARGS], capsys,
                    "out.arrow.partial is a directory")


@pytest.mark.parametrize("damage", ["deleted part", "truncated part", "truncated partial"])
def test_damaged_outputs_of_a_checkpoint_are_one_line(files, tmp_path, capsys, damage):
    source, model = files
    fmt = "arrow" if damage == "truncated partial" else "parquet"
    out, checkpoint = interrupted(source, model, tmp_path, fmt)
    target = Path(str(out) + ".partial") if fmt == "arrow" else checkpoint / "output" / "part-000001.arrows"
    if damage == "deleted part":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    one_line_exit_2([str(source), "--model", str(model), "--out", str(out), "--checkpoint", str(checkpoint),
                     "--resume", *ARGS], capsys, "damaged")


def test_a_directory_mixing_key_types_is_one_line(tmp_path, capsys):
    table = table_with_bad_row(bad_row=None)
    (tmp_path / "dir").mkdir()
    write_ipc_file(table.slice(0, 90), tmp_path / "dir" / "a.arrow")
    narrow = table.slice(90).set_column(0, "stream_id", table.slice(90).column("stream_id").cast(pa.int32()))
    write_ipc_file(narrow, tmp_path / "dir" / "b.arrow")
    one_line_exit_2([str(tmp_path / "dir"), "--model", str(save_model(tmp_path / "m.slm")), "--out",
                     str(tmp_path / "out.arrow"), *ARGS], capsys, "b.arrow has column 'stream_id' of type int32")
    assert not (tmp_path / "out.arrow").exists()


def test_an_error_names_the_input_row_and_file(tmp_path):
    table = table_with_bad_row()
    (tmp_path / "dir").mkdir()
    write_ipc_file(table.slice(0, 100), tmp_path / "dir" / "a.arrow")
    write_ipc_file(table.slice(100), tmp_path / "dir" / "b.arrow")
    model = save_model(tmp_path / "m.slm")
    with pytest.raises(StreamError, match=f"at input row {BAD_ROW} \\(row {BAD_ROW - 100} of .*b.arrow\\)") as info:
        sl.replay_to_file(tmp_path / "dir", model, tmp_path / "out.arrow", **OPTIONS)
    assert info.value.row == BAD_ROW
    write_ipc_file(table, tmp_path / "whole.arrow")
    with pytest.raises(StreamError, match=f"at input row {BAD_ROW} of .*whole.arrow"):
        sl.replay_to_file(tmp_path / "whole.arrow", model, tmp_path / "out.arrow", **{**OPTIONS, "batch_rows": 7})


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # then a write past the limit fails with EFBIG, like ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_500, 2_500))


@pytest.mark.parametrize("checkpointed", [False, True], ids=["direct", "checkpointed"])
def test_a_full_disk_is_one_line_and_leaves_no_output(tmp_path, checkpointed):
    source = write_ipc_file(table_with_bad_row(bad_row=None), tmp_path / "in.arrow")
    model = save_model(tmp_path / "m.slm")
    out = tmp_path / "out.arrow"
    extra = ["--checkpoint", str(tmp_path / "ck"), "--checkpoint-every", "1"] if checkpointed else []
    result = subprocess.run([sys.executable, "-m", "streamlstm", "replay", str(source), "--model", str(model),
                             "--out", str(out), *ARGS, *extra], capture_output=True, text=True, timeout=300,
                            preexec_fn=_limit_file_size, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot write" in result.stderr, result.stderr
    assert not out.exists()


def test_a_kill_between_the_final_rename_and_clearing_the_checkpoint_resumes_as_finished(files, tmp_path):
    source = write_ipc_file(table_with_bad_row(bad_row=None), tmp_path / "clean.arrow")
    model = files[1]
    out, checkpoint = tmp_path / "out.arrow", tmp_path / "ck"
    argv = [str(source), "--model", str(model), "--out", str(out), "--checkpoint", str(checkpoint), *ARGS]
    # The process dies by SIGKILL at the very moment it would clear its checkpoint.
    code = ("import os, signal, sys; from streamlstm.io.checkpoint import Checkpoint; "
            "Checkpoint.clear = lambda self: os.kill(os.getpid(), signal.SIGKILL); "
            f"from streamlstm.cli import main; sys.exit(main(['replay', *{argv!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert out.is_file() and (checkpoint / "checkpoint.json").is_file()
    written = out.read_bytes()
    summary = sl.replay_to_file(source, model, out, checkpoint=checkpoint, resume=True, **OPTIONS)
    assert summary.rows == 0 and summary.resumed_at == 180
    assert out.read_bytes() == written and not checkpoint.exists()
    assert read_arrow(out).num_rows == 180
