"""``streamlstm.load_keras`` refuses what it cannot import, saying what and why."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import streamlstm as sl
from streamlstm.errors import KerasFileError, KerasImportError, UnsupportedKerasError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras_models"


def edited_h5(tmp_path: Path, stem: str, edit) -> Path:
    """A copy of a legacy .h5 fixture with its model_config changed by ``edit(config)``."""
    target = tmp_path / f"{stem}.h5"
    shutil.copy(FIXTURES / f"{stem}.h5", target)
    with h5py.File(target, "r+") as store:
        config = json.loads(store.attrs["model_config"])
        edit(config)
        store.attrs["model_config"] = json.dumps(config)
    return target


def edited_keras(tmp_path: Path, stem: str, edit) -> Path:
    """A copy of a .keras fixture with its config.json changed by ``edit(config)``."""
    target = tmp_path / f"{stem}.keras"
    with zipfile.ZipFile(FIXTURES / f"{stem}.keras") as source, zipfile.ZipFile(target, "w") as sink:
        for name in source.namelist():
            data = source.read(name)
            if name == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            sink.writestr(name, data)
    return target


def layer(config: dict, class_name: str) -> dict:
    return next(entry for entry in config["config"]["layers"] if entry["class_name"] == class_name)


def test_errors_are_value_errors_of_the_library():
    assert issubclass(KerasFileError, KerasImportError) and issubclass(UnsupportedKerasError, KerasImportError)
    assert issubclass(KerasImportError, sl.StreamLSTMError) and issubclass(KerasImportError, ValueError)


def test_unsupported_layer_is_named_with_the_supported_list(tmp_path):
    path = edited_h5(tmp_path, "k2_lstm_last", lambda c: layer(c, "Dense").update(class_name="Conv1D"))
    with pytest.raises(UnsupportedKerasError, match=r"'Conv1D' is not supported; supported layers: InputLayer, Mask"):
        sl.load_keras(path)


def test_unsupported_layer_in_a_keras3_file(tmp_path):
    path = edited_keras(tmp_path, "k3_lstm_last", lambda c: layer(c, "LSTM").update(class_name="GRU"))
    with pytest.raises(UnsupportedKerasError, match=r"class 'GRU' is not supported"):
        sl.load_keras(path)


def test_unsupported_option_is_named(tmp_path):
    path = edited_keras(tmp_path, "k3_lstm_last", lambda c: layer(c, "LSTM")["config"].update(flash=True))
    with pytest.raises(UnsupportedKerasError, match=r"\(LSTM\): option\(s\) 'flash' are not supported"):
        sl.load_keras(path)


def test_unsupported_cell_is_named(tmp_path):
    def edit(config):
        second_rnn = [entry for entry in config["config"]["layers"] if entry["class_name"] == "RNN"][1]
        second_rnn["config"]["cell"]["class_name"] = "GRUCell"
    path = edited_keras(tmp_path, "k3_rnn_cells", edit)
    with pytest.raises(UnsupportedKerasError, match=r"`cell` 'GRUCell' is not supported"):
        sl.load_keras(path)


def test_unsupported_dtype_policy(tmp_path):
    def edit(config):
        layer(config, "LSTM")["config"]["dtype"] = {"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}
    with pytest.raises(UnsupportedKerasError, match=r"`dtype` policy 'mixed_float16'"):
        sl.load_keras(edited_keras(tmp_path, "k3_lstm_last", edit))


def test_unsupported_activation(tmp_path):
    path = edited_h5(tmp_path, "k2_lstm_last", lambda c: layer(c, "LSTM")["config"].update(activation="my_act"))
    with pytest.raises(UnsupportedKerasError, match=r"'lstm.*\(LSTM\).*unknown activation 'my_act'"):
        sl.load_keras(path)


def test_non_linear_functional_model(tmp_path):
    def edit(config):
        config["config"]["output_layers"].append(["masking_8", 0, 0])
    with pytest.raises(UnsupportedKerasError, match="only linear models"):
        sl.load_keras(edited_h5(tmp_path, "k2_functional_state", edit))


def test_unsupported_model_class(tmp_path):
    path = edited_h5(tmp_path, "k2_lstm_last", lambda c: c.update(class_name="MyModel"))
    with pytest.raises(UnsupportedKerasError, match="model class 'MyModel' is not supported"):
        sl.load_keras(path)


def test_corrupt_keras_zip(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes((FIXTURES / "k3_lstm_last.keras").read_bytes()[:300])
    with pytest.raises(KerasFileError, match="corrupt"):
        sl.load_keras(path)


def test_corrupt_h5(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes((FIXTURES / "k2_lstm_last.h5").read_bytes()[:2000])
    with pytest.raises(KerasFileError, match="corrupt"):
        sl.load_keras(path)


def test_wrong_file_types(tmp_path):
    text = tmp_path / "model.keras"
    text.write_text("not a model")
    with pytest.raises(KerasFileError, match="not a Keras model file"):
        sl.load_keras(text)
    with pytest.raises(KerasFileError, match="is a zip but not a .keras model: missing config.json"):
        sl.load_keras(FIXTURES / "k2_lstm_last.npz")
    with pytest.raises(KerasFileError, match="is a directory"):
        sl.load_keras(tmp_path)
    with pytest.raises(KerasFileError, match="cannot read"):
        sl.load_keras(tmp_path / "missing.h5")


def test_weights_only_h5(tmp_path):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as store:
        store.attrs["layer_names"] = np.array([b"dense"])
    with pytest.raises(KerasFileError, match="without a 'model_config'.*save_weights"):
        sl.load_keras(path)


def test_weights_not_matching_the_config(tmp_path):
    path = edited_h5(tmp_path, "k2_lstm_last", lambda c: layer(c, "LSTM")["config"].update(units=6))
    with pytest.raises(KerasFileError, match=r"'lstm.*\(LSTM\): the file's weights"):
        sl.load_keras(path)


def _point_outside(store, name: str, how: str, secret: Path) -> None:
    """Replace dataset ``name`` by one whose bytes come from outside the file (``how``)."""
    shape, dtype = store[name].shape, store[name].dtype
    del store[name]
    if how == "external storage":
        store.create_dataset(name, shape=shape, dtype=dtype, external=[(str(secret), 0, secret.stat().st_size)])
    elif how == "virtual dataset":
        other = secret.with_suffix(".h5")
        with h5py.File(other, "w") as source:
            source.create_dataset("data", data=np.frombuffer(secret.read_bytes(), dtype).reshape(shape))
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(other), "data", shape=shape)
        store.create_virtual_dataset(name, layout)
    else:
        store[name] = h5py.ExternalLink(str(secret.with_suffix(".h5")), "data")


@pytest.mark.parametrize("how", ["external storage", "virtual dataset", "external link"])
def test_a_model_file_that_reads_other_files_is_refused(tmp_path, how):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(60, dtype="<f4").tobytes())   # what a crafted kernel would read
    with h5py.File(secret.with_suffix(".h5"), "w") as source:
        source.create_dataset("data", data=np.arange(60, dtype="<f4").reshape(3, 20))
    target = tmp_path / "crafted.h5"
    shutil.copy(FIXTURES / "k2_lstm_last.h5", target)
    with h5py.File(target, "r+") as store:
        _point_outside(store, "model_weights/lstm/lstm/lstm_cell/kernel:0", how, secret)
    phrase = {"external storage": "has external storage", "virtual dataset": "is virtual",
              "external link": "is an external link"}[how]
    with pytest.raises(KerasFileError, match=f"reads data from outside the model file.*kernel:0.* {phrase}"):
        sl.load_keras(target)
    sl.load_keras(FIXTURES / "k2_lstm_last.h5")   # the fixture itself loads
