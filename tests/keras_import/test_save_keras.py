"""``streamlstm.save_keras``: a ``.keras`` file that ``load_keras`` (and Keras 3) read back with the same numbers.

Loading in Keras 3 itself is checked by hand with ``tests/fixtures/verify_saved_keras.py`` (Keras is not a
dependency); here the file's layout and the round trip through ``load_keras`` are checked.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import streamlstm as sl
from streamlstm.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras_models"
SINGLE_OUTPUT = ["k2_bidi_concat_ave", "k2_masked_backwards_td", "k2_options", "k2_rnn_cells", "k2_stateful",
                 "k3_bidi_sum_mul", "k3_functional", "k3_hard_sigmoid", "k3_masked_stack", "k3_legacy_hard_sigmoid"]


def source(stem: str) -> Path:
    return next(FIXTURES / f"{stem}{s}" for s in (".keras", ".h5") if (FIXTURES / f"{stem}{s}").exists())


@pytest.mark.parametrize("stem", SINGLE_OUTPUT)
def test_round_trip_keeps_keras_predictions(tmp_path, stem):
    target = tmp_path / "model.keras"
    sl.save_keras(sl.load_keras(source(stem)), target)
    with np.load(FIXTURES / f"{stem}.npz") as npz:
        x, y = npz["x"], npz["y_0"]
    np.testing.assert_allclose(sl.load_keras(target)(x).numpy(), y, rtol=1e-5, atol=1e-6)


def test_file_layout_is_keras3(tmp_path):
    target = tmp_path / "model.keras"
    sl.save_keras(sl.load_keras(source("k3_hard_sigmoid")), target)
    with zipfile.ZipFile(target) as archive:
        assert set(archive.namelist()) == {"config.json", "metadata.json", "model.weights.h5"}
        config = json.loads(archive.read("config.json"))
        assert json.loads(archive.read("metadata.json"))["keras_version"].startswith("3.")
    lstm = config["config"]["layers"][1]["config"]
    assert config["class_name"] == "Sequential" and lstm["recurrent_activation"] == "hard_sigmoid"
    assert "implementation" not in lstm and "time_major" not in lstm


def test_a_bare_lstm_layer(tmp_path):
    layer = sl.LSTM(3, return_sequences=True)
    layer.build((None, None, 2))
    x = torch.randn(2, 5, 2)
    sl.save_keras(layer, tmp_path / "lstm.keras")
    loaded = sl.load_keras(tmp_path / "lstm.keras")
    torch.testing.assert_close(loaded(x), layer(x))


@pytest.mark.parametrize(("stem", "match"), [
    ("k2_hard_sigmoid", "Keras 2's hard_sigmoid"),
    ("k2_time_major", "time_major"),
    ("k3_bidi_none", "single-output"),
])
def test_what_keras3_cannot_express_is_refused(tmp_path, stem, match):
    with pytest.raises(ConfigError, match=match):
        sl.save_keras(sl.load_keras(source(stem)), tmp_path / "model.keras")
