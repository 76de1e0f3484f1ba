"""sl.replay / replay_table / replay_to_file: same rows as feeding the runtime, files, checkpoints."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from replay_data import (
    feed_directly,
    make_model,
    make_table,
    outputs,
    read_arrow,
    save_model,
    write_ipc_file,
    write_parquet,
)

import streamlstm as sl
from streamlstm.errors import CheckpointError, ConfigError, FileError, SchemaError, SourceError
from streamlstm.io.sources import Source

OPTIONS = {"time": "time", "reset": "reset", "batch_rows": 64, "progress": False}


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_table(streams=12, steps=30)


@pytest.fixture
def files(table, tmp_path):
    return {"arrow": write_ipc_file(table, tmp_path / "in.arrow"), "model": save_model(tmp_path / "m.slm"),
            "parquet": write_parquet(table, tmp_path / "in.parquet")}


def test_replay_equals_feeding_the_runtime_directly(table, files):
    expected = feed_directly(table.select(["stream_id", "time", "x", "reset"]), make_model(), 64,
                             time="time", reset="reset")
    batches = list(sl.replay(files["arrow"], files["model"], **OPTIONS))
    assert [b.num_rows for b in batches] == [64] * 5 + [40]
    got = pa.Table.from_batches(batches)
    assert got.schema.names == ["stream_id", "time", "output"]
    np.testing.assert_array_equal(outputs(got), outputs(expected))
    assert got.select(["stream_id", "time"]).equals(table.select(["stream_id", "time"]))


def test_every_input_and_a_model_object_give_the_same_table(table, files):
    reference = sl.replay_table(files["arrow"], files["model"], **OPTIONS)
    assert sl.replay_table(files["parquet"], files["model"], **OPTIONS).equals(reference)
    assert sl.replay_table(table, make_model(), **OPTIONS).equals(reference)


def test_replay_to_file_arrow_and_parquet_equal_the_table(files, tmp_path):
    reference = sl.replay_table(files["arrow"], files["model"], **OPTIONS)
    summary = sl.replay_to_file(files["arrow"], files["model"], tmp_path / "out.arrow", **OPTIONS)
    assert (summary.rows, summary.streams) == (360, 12) and "360 rows of 12 streams" in str(summary)
    assert read_arrow(tmp_path / "out.arrow").equals(reference)
    sl.replay_to_file(files["arrow"], files["model"], tmp_path / "out.bin", format="parquet", **OPTIONS)
    assert pq.read_table(tmp_path / "out.bin").equals(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.arrow", "in.parquet", "m.slm", "out.arrow", "out.bin"]


def test_checkpointed_run_equals_plain_run_and_cleans_up(files, tmp_path):
    reference = sl.replay_table(files["arrow"], files["model"], **OPTIONS)
    checkpoint = tmp_path / "ckpt"
    sl.replay_to_file(files["arrow"], files["model"], tmp_path / "out.parquet", checkpoint=checkpoint,
                      checkpoint_every=2, **OPTIONS)
    assert pq.read_table(tmp_path / "out.parquet").equals(reference)
    assert not checkpoint.exists()


def _interrupt_after(monkeypatch, batches: int) -> None:
    """The next replay's source raises KeyboardInterrupt after ``batches`` batches."""
    original = Source.batches

    def interrupted(self, *args, **kwargs):
        for index, batch in enumerate(original(self, *args, **kwargs)):
            if index == batches:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(Source, "batches", interrupted)


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_interrupted_run_resumes_to_the_same_output(files, tmp_path, monkeypatch, fmt):
    reference = sl.replay_table(files["arrow"], files["model"], **OPTIONS)
    out, checkpoint = tmp_path / f"out.{fmt}", tmp_path / "ckpt"
    args = (files["arrow"], files["model"], out)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            sl.replay_to_file(*args, checkpoint=checkpoint, checkpoint_every=2, **OPTIONS)
    # Nothing looks finished; Arrow output keeps its synced rows in out.arrow.partial for the resume.
    assert not out.exists() and out.with_name(out.name + ".partial").exists() == (fmt == "arrow")
    assert (checkpoint / "checkpoint.json").exists()
    with pytest.raises(CheckpointError, match=r"--resume \(resume=True\) to continue it, or delete .* start over"):
        sl.replay_to_file(*args, checkpoint=checkpoint, **OPTIONS)
    with pytest.raises(CheckpointError, match="different run .*batch_rows: 64 then, 32 now"):
        sl.replay_to_file(*args, checkpoint=checkpoint, resume=True, **{**OPTIONS, "batch_rows": 32})
    summary = sl.replay_to_file(*args, checkpoint=checkpoint, resume=True, **OPTIONS)
    assert summary.resumed_at == 128 and summary.rows == 360 - 128
    got = read_arrow(out) if fmt == "arrow" else pq.read_table(out)
    assert got.equals(reference)
    assert not checkpoint.exists() and not out.with_name(out.name + ".partial").exists()


def test_resume_without_a_checkpoint_starts_from_the_first_row(files, tmp_path):
    summary = sl.replay_to_file(files["arrow"], files["model"], tmp_path / "out.arrow", checkpoint=tmp_path / "c",
                                resume=True, **OPTIONS)
    assert summary.resumed_at == 0 and summary.rows == 360


def test_empty_input_writes_an_empty_file_with_the_output_schema(table, tmp_path):
    path = write_ipc_file(table.slice(0, 0), tmp_path / "empty.arrow")
    sl.replay_to_file(path, make_model(), tmp_path / "out.arrow", **OPTIONS)
    got = read_arrow(tmp_path / "out.arrow")
    assert got.num_rows == 0 and got.schema.names == ["stream_id", "time", "output"]


@pytest.mark.parametrize("case, error, message", [
    ("width", SchemaError, "width 5 .*got 3"),
    ("column", SchemaError, "no column 'sensor'"),
    ("model", SourceError, "model file .* does not exist"),
    ("not_a_model", FileError, "model file .*in.parquet is not a readable Arrow IPC file"),
    ("extension", SourceError, "cannot tell the output format"),
    ("resume", ConfigError, "`resume` needs the `checkpoint` directory"),
])
def test_errors_leave_no_file_behind(case, error, message, files, tmp_path):
    out, model, kwargs = tmp_path / "out.arrow", files["model"], dict(OPTIONS)
    if case == "width":
        model = save_model(tmp_path / "wide.slm", width=5)
    elif case == "column":
        kwargs["key"] = "sensor"
    elif case == "model":
        model = tmp_path / "nope.slm"
    elif case == "not_a_model":
        model = files["parquet"]
    elif case == "extension":
        out = tmp_path / "out.csv"
    elif case == "resume":
        kwargs["resume"] = True
    before = sorted(tmp_path.iterdir())
    with pytest.raises(error, match=message):
        sl.replay_to_file(files["arrow"], model, out, checkpoint=None if case == "resume" else tmp_path / "ck",
                          **kwargs)
    assert sorted(tmp_path.iterdir()) == before
