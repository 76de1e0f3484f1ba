"""save_model / load_model: JSON config plus raw tensors in an Arrow IPC file."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch

import streamlstm as sl
from streamlstm.errors import ConfigError, FileError
from streamlstm.io.checksum import TRAILER_SIZE


def built(layer, input_dim):
    layer.build((None, None, input_dim))
    return layer


def test_round_trip_sequential(tmp_path):
    torch.manual_seed(0)
    stacked = built(sl.RNN([sl.LSTMCell(4), sl.LSTMCell(3, activation="relu")], return_sequences=True), 2)
    model = torch.nn.Sequential(built(sl.LSTM(5, return_sequences=True, go_backwards=True), 3),
                                torch.nn.Linear(5, 2), torch.nn.GELU(approximate="tanh"), stacked,
                                torch.nn.LayerNorm(3), torch.nn.Dropout(0.1))
    path = tmp_path / "model.slm"
    sl.save_model(model, path)
    loaded = sl.load_model(path)
    assert not loaded.training and loaded[0].go_backwards and loaded[2].approximate == "tanh"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(2, 6, 3)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_float64_and_bfloat16_tensors_keep_their_dtype(tmp_path):
    layer = built(sl.LSTM(3, dtype="float64"), 2)
    sl.save_model(layer, tmp_path / "m")
    assert sl.load_model(tmp_path / "m").cell.kernel.dtype == torch.float64
    head = torch.nn.Sequential(built(sl.LSTM(3), 2), torch.nn.Linear(3, 1)).to(torch.bfloat16)
    sl.save_model(head, tmp_path / "b")
    assert torch.equal(sl.load_model(tmp_path / "b")[1].weight, head[1].weight)


def test_format_is_documented_arrow_with_version(tmp_path):
    sl.save_model(built(sl.LSTM(2), 2), tmp_path / "m")
    path = tmp_path / "m"
    reader = pa.ipc.open_file(str(path), footer_offset=path.stat().st_size - TRAILER_SIZE)  # then the checksum
    meta = reader.schema.metadata
    assert meta[b"streamlstm.format"] == b"model" and meta[b"streamlstm.format_version"] == b"2"
    assert json.loads(meta[b"streamlstm.model_config"])["class_name"] == "LSTM"
    assert reader.read_all().column("name").to_pylist() == ["cell.kernel", "cell.recurrent_kernel", "cell.bias"]


def test_unsupported_modules_and_files(tmp_path):
    class Custom(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ConfigError, match="cannot save a model containing .*Custom"):
        sl.save_model(torch.nn.Sequential(sl.LSTM(2), Custom()), tmp_path / "m")
    assert not (tmp_path / "m").exists()
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(FileError, match="model file .*junk is not a readable Arrow IPC file"):
        sl.load_model(tmp_path / "junk")
