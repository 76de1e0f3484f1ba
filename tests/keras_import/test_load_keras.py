"""``streamlstm.load_keras`` against Keras's own predictions, recorded in ``tests/fixtures/keras_models/``.

The fixtures come from tf-keras 2 (``k2_*.h5``) and Keras 3 (``k3_*.keras``, ``k3_legacy_*.h5``); see the
README there and ``tests/fixtures/generate_keras_models.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import streamlstm as sl
from streamlstm.keras_import import KerasBidirectional, KerasDense, KerasMasking, KerasModel
from streamlstm.layers import activations

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras_models"
CASES = sorted(p.stem for p in FIXTURES.glob("*.npz"))


def model_path(stem: str) -> Path:
    for suffix in (".keras", ".h5"):
        if (FIXTURES / f"{stem}{suffix}").exists():
            return FIXTURES / f"{stem}{suffix}"
    raise FileNotFoundError(stem)


def expected(stem: str) -> tuple[np.ndarray, list[np.ndarray]]:
    with np.load(FIXTURES / f"{stem}.npz") as npz:
        outputs = [npz[f"y_{i}"] for i in range(sum(k.startswith("y_") for k in npz.files))]
        return npz["x"], outputs


def test_every_kind_has_fixtures_from_both_versions():
    assert len(CASES) >= 20
    for name in ("lstm_last", "masked_stack", "rnn_cells", "bidi_none", "functional_state", "hard_sigmoid"):
        assert f"k2_{name}" in CASES and f"k3_{name}" in CASES


@pytest.mark.parametrize("stem", CASES)
def test_matches_keras_predict(stem):
    x, outputs = expected(stem)
    model = sl.load_keras(model_path(stem))
    assert isinstance(model, KerasModel) and not model.training
    result = model(x)
    got = result if len(outputs) > 1 else [result]
    assert isinstance(result, list) == (len(outputs) > 1)
    for index, (ours, theirs) in enumerate(zip(got, outputs, strict=True)):
        assert isinstance(ours, torch.Tensor)
        assert tuple(ours.shape) == theirs.shape and ours.dtype == torch.float32
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-6, err_msg=f"{stem} output {index}")


def test_torch_inputs_and_str_paths_work():
    x, (y,) = expected("k3_masked_stack")
    model = sl.load_keras(str(model_path("k3_masked_stack")))
    np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("stem", "rule"), [
    ("k2_hard_sigmoid", activations.hard_sigmoid),
    ("k3_hard_sigmoid", activations.keras3_hard_sigmoid),
    ("k3_legacy_hard_sigmoid", activations.keras3_hard_sigmoid),  # the version decides, not the format
])
def test_hard_sigmoid_follows_the_files_keras_version(stem, rule):
    model = sl.load_keras(model_path(stem))
    assert model.layers[0].cell.recurrent_activation is rule
    assert model.layers[-1].activation is rule


@pytest.mark.parametrize("stem", ["k2_hard_sigmoid", "k3_hard_sigmoid"])
def test_the_other_versions_hard_sigmoid_would_not_match(stem):
    x, (y,) = expected(stem)
    model = sl.load_keras(model_path(stem))
    other = activations.keras3_hard_sigmoid if stem.startswith("k2") else activations.hard_sigmoid
    model.layers[0].cell.recurrent_activation = other
    model.layers[-1].activation = other
    assert np.abs(model(x).numpy() - y).max() > 1e-3


def test_structure_for_the_stream_runtime():
    model = sl.load_keras(model_path("k3_masked_backwards_td"))
    assert model.mask_value == -1.0
    assert isinstance(model.layers[0], KerasMasking)
    assert [type(layer).__name__ for layer in model.recurrent_layers] == ["LSTM"]
    assert all(layer.per_step for layer in model.layers if layer not in model.recurrent_layers)
    model.check_streamable()   # go_backwards streams: one Keras stateful call per feed
    stack = sl.load_keras(model_path("k2_masked_stack"))
    stack.check_streamable()
    assert stack.mask_value == 0.0 and isinstance(stack.layers[-1], KerasDense)
    assert sl.load_keras(model_path("k2_lstm_last")).mask_value is None
    bidi = sl.load_keras(model_path("k2_bidi_sum_mul"))
    assert isinstance(bidi.layers[1], KerasBidirectional)
    with pytest.raises(sl.errors.ConfigError, match="Bidirectional"):
        bidi.check_streamable()


def test_repr_names_the_layers():
    text = repr(sl.load_keras(model_path("k2_options")))
    assert "KerasModel(" in text and "keras_version='2." in text
    assert "activation='softsign'" in text and "zero_output_for_mask=True" in text


def test_lstm_arguments_come_through():
    lstm = sl.load_keras(model_path("k2_options")).layers[1]
    assert (lstm.units, lstm.use_bias, lstm.unit_forget_bias, lstm.unroll) == (4, False, False, True)
    assert (lstm.dropout, lstm.recurrent_dropout, lstm.implementation) == (pytest.approx(0.3), pytest.approx(0.2), 1)
    assert lstm.kernel_constraint is not None and lstm.kernel_regularizer is not None
    assert sl.load_keras(model_path("k3_options")).layers[2].seed == 3
    assert sl.load_keras(model_path("k2_stateful")).layers[0].stateful
