"""``streamlstm train``: a real subprocess on a real file writes the model fit_streams trains; bad
input exits 2 with one line naming the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from train_helpers import fixed_list, make_model, weights

import streamlstm as sl


def _files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 8, 400)
    x = rng.uniform(-1, 1, (len(keys), 3))
    table = pa.table({"sensor": keys, "x": fixed_list(x), "y": fixed_list(np.cos(2 * x[:, 1:2]))})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=64)
    sl.save_model(make_model(3, 6, seed=4), tmp_path / "m.slm")
    return tmp_path / "in.parquet", tmp_path / "m.slm"


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamlstm", "train", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_train_writes_the_model_fit_streams_trains(tmp_path: Path) -> None:
    data, model = _files(tmp_path)
    result = _train(str(data), "--model", str(model), "--out", str(tmp_path / "out.slm"), "--key", "sensor",
                    "--target", "y", "--window", "5", "--epochs", "2", "--optimizer", "adam", "--lr", "0.01")
    assert result.returncode == 0, result.stderr
    assert "trained" in result.stdout and "out.slm" in result.stdout
    expected = sl.fit_streams(sl.load_model(model), data, key="sensor", target="y", window=5, epochs=2,
                              optimizer="adam", lr=0.01, progress=False)
    got, want = weights(sl.load_model(tmp_path / "out.slm")), weights(expected.model)
    assert got.keys() == want.keys()
    for name in got:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
    assert not np.array_equal(got["1.weight"], weights(sl.load_model(model))["1.weight"])


@pytest.mark.slow
def test_train_time_trains_each_streams_rows_in_time_order(tmp_path: Path) -> None:
    data, model = _files(tmp_path)
    table = pq.read_table(data)
    rng = np.random.default_rng(6)
    table = table.append_column("t", pa.array(rng.permutation(table.num_rows) * 1.5))   # rows not in time order
    pq.write_table(table, data)
    result = _train(str(data), "--model", str(model), "--out", str(tmp_path / "out.slm"), "--key", "sensor",
                    "--time", "t", "--window", "4", "--quiet")
    assert result.returncode == 0, result.stderr
    expected = sl.fit_streams(sl.load_model(model), table.sort_by("t"), key="sensor", window=4, progress=False)
    got, want = weights(sl.load_model(tmp_path / "out.slm")), weights(expected.model)
    for name in got:
        np.testing.assert_array_equal(got[name], want[name])


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    data, model = _files(tmp_path)
    result = _train(str(data), "--model", str(model), "--out", str(tmp_path / "out.slm"), "--key", "sensor",
                    "--target", "label")
    assert result.returncode == 2
    assert result.stderr.strip() == ("streamlstm train: error: input " + str(data) + " has no column 'label'; "
                                     "its columns are ['sensor', 'x', 'y']")
    assert not (tmp_path / "out.slm").exists()
