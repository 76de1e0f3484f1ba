"""``streamlstm replay`` and ``streamlstm demo`` end to end, on files the demo's generator writes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import streamlstm as sl
from streamlstm.cli import main
from streamlstm.demo.data import make_dataset

ARGS = ["--key", "sensor", "--time", "time", "--batch-rows", "1000", "--quiet"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Sensor readings (dictionary-encoded string keys, timestamps) in every input form, and a model."""
    root = tmp_path_factory.mktemp("replay")
    table = make_dataset(sensors=10, days=1).table
    with pa.ipc.new_file(str(root / "in.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=700)
    with pa.ipc.new_stream(str(root / "in.arrows"), table.schema) as writer:
        writer.write_table(table, max_chunksize=300)
    pq.write_table(table, str(root / "in.parquet"), row_group_size=400)
    (root / "dir").mkdir()
    for index, start in enumerate(range(0, table.num_rows, 1100)):
        pq.write_table(table.slice(start, 1100), str(root / "dir" / f"day-{index:02d}.parquet"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(sl.LSTM(6, return_sequences=True), torch.nn.Linear(6, 1))
    model[0].build((None, None, 4))
    sl.save_model(model, root / "model.slm")
    expected = sl.replay_table(table, model, key="sensor", time="time", batch_rows=1000, progress=False)
    runtime = sl.StreamRuntime(model, key="sensor", time="time")
    direct = pa.Table.from_batches([runtime.feed(table.slice(s, 1000)) for s in range(0, table.num_rows, 1000)])
    assert direct.equals(expected)
    return root, expected


def _read(path):
    if str(path).endswith(".parquet"):
        return pq.read_table(path)
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


@pytest.mark.parametrize("source, out", [("in.arrow", "out.arrow"), ("in.parquet", "out.parquet"),
                                         ("dir", "out.arrow"), ("in.arrows", "out.parquet")])
def test_replay_of_each_input_equals_the_python_api_and_the_runtime(inputs, source, out, tmp_path, capsys):
    root, expected = inputs
    assert main(["replay", str(root / source), "--model", str(root / "model.slm"), "--out", str(tmp_path / out),
                 *ARGS[:-1]]) == 0
    summary = capsys.readouterr().out
    assert f"replayed {expected.num_rows:,} rows of 10 streams" in summary and "rows/s" in summary
    # Parquet has no timestamp[s]: its time column comes back in ms, the values are the same.
    assert _read(tmp_path / out).cast(expected.schema).equals(expected)


def test_replay_from_stdin_as_users_run_it(inputs, tmp_path):
    root, expected = inputs
    with open(root / "in.arrows", "rb") as stdin:
        result = subprocess.run([sys.executable, "-m", "streamlstm", "replay", "-", "--model", str(root / "model.slm"),
                                 "--out", str(tmp_path / "out.arrow"), "--checkpoint", str(tmp_path / "ck"), *ARGS],
                                stdin=stdin, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""  # --quiet: no bar, no summary
    assert _read(tmp_path / "out.arrow").equals(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.arrow"]


def _error_case(case, root, tmp_path):
    args = {"input": str(root / "in.arrow"), "--model": str(root / "model.slm"), "--out": str(tmp_path / "out.arrow")}
    extra = list(ARGS)
    if case == "missing input":
        args["input"] = str(tmp_path / "nope.arrow")
    elif case == "not arrow":
        (tmp_path / "in.csv").write_text("sensor,time\n1,2\n")
        args["input"] = str(tmp_path / "in.csv")
    elif case == "unreadable":
        path = tmp_path / "locked.arrow"
        path.write_bytes((root / "in.arrow").read_bytes())
        path.chmod(0)
        args["input"] = str(path)
    elif case == "missing column":
        extra = ["--key", "device", *ARGS[2:]]
    elif case == "width":
        model = torch.nn.Sequential(sl.LSTM(3, return_sequences=True))
        model[0].build((None, None, 7))
        sl.save_model(model, tmp_path / "wide.slm")
        args["--model"] = str(tmp_path / "wide.slm")
    elif case == "checkpoint":
        (tmp_path / "ck").mkdir()
        (tmp_path / "ck" / "checkpoint.json").write_text("{}")
        extra += ["--checkpoint", str(tmp_path / "ck")]
    return [args.pop("input"), *[v for item in args.items() for v in item], *extra]


@pytest.mark.parametrize("case, message", [
    ("missing input", "does not exist"),
    ("not arrow", "not an Arrow IPC file or stream nor a Parquet file"),
    ("unreadable", "cannot read input|Permission denied"),
    ("missing column", "no column 'device'"),
    ("width", "must have width 7 .*got 4"),
    ("checkpoint", "--resume"),
])
def test_each_error_is_one_line_exit_2_and_leaves_no_output(inputs, case, message, tmp_path, capsys):
    root, _ = inputs
    if case == "unreadable" and _is_root():
        pytest.skip("running as root: file permissions do not stop reading")
    argv = _error_case(case, root, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["replay", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamlstm replay: error: ")
    assert __import__("re").search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.slow
def test_demo_runs_small_and_names_its_outputs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "streamlstm", "demo", "--size", "small", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("sensors.arrow", "forecaster.slm", "forecasts.arrow", "forecasts.png"):
        assert str(tmp_path / name) in result.stdout
        assert (tmp_path / name).stat().st_size > 0
    assert "last value (naive)" in result.stdout and "same time yesterday (naive)" in result.stdout
    assert "RNN(LSTMCell(4), return_sequences, return_state)" in result.stdout  # the layers showcase first
    assert np.isfinite(float(result.stdout.split("LSTM forecaster")[1].split()[0]))
