"""Parity with tf.keras 2: streamlstm's LSTM, LSTMCell and RNN against recorded golden outputs.

The goldens in ``tests/fixtures/keras_golden/`` were recorded from real tf.keras 2 (``tf-keras``) by
``tests/fixtures/generate_keras_golden.py``; their format is described in the README beside them.
Every LSTM case also runs a second time with the generic loop forced, so both paths meet the goldens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import streamlstm as sl

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "keras_golden"
CASE_FILES = sorted(GOLDEN.glob("*.json"))
LSTM_FILES = [p for p in CASE_FILES if json.loads(p.read_text())["kind"] == "lstm"]


def load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta = json.loads(path.read_text())
    with np.load(path.with_suffix(".npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays


def flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten(item)]
    return [value]


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def assert_close(ours: Any, expected: np.ndarray, what: str) -> None:
    got = to_numpy(ours)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, Keras {expected.shape}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, Keras {expected.dtype}"
    if expected.dtype == np.float64:
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=what)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=what)


def fused_eligible(layer_kwargs: dict[str, Any], training: bool) -> bool:
    """The issue's rule: tanh, sigmoid, no active recurrent dropout and no unroll take the fused kernel.

    Recurrent dropout does nothing unless training, so an inference call may take the fused kernel.
    """
    return (
        layer_kwargs.get("activation", "tanh") == "tanh"
        and layer_kwargs.get("recurrent_activation", "sigmoid") == "sigmoid"
        and (layer_kwargs.get("recurrent_dropout", 0.0) == 0.0 or not training)
        and not layer_kwargs.get("unroll", False)
    )


def make(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """Construct and build our object as the case describes, check the built bias, set the weights."""
    kind, layer_kwargs, input_dim = meta["kind"], meta["layer"], meta["input_dim"]
    if kind == "lstm":
        obj = sl.LSTM(**layer_kwargs)
    else:
        cells = [sl.LSTMCell(**kwargs) for kwargs in meta["cells"]]
        if kind == "cell_step":
            obj = cells[0]
        else:
            obj = sl.RNN(cells if kind == "stacked_rnn" else cells[0], **layer_kwargs)
    if kind == "cell_step":
        obj.build((None, input_dim))
    else:
        batch = None
        time_major = layer_kwargs.get("time_major", False)
        if layer_kwargs.get("stateful", False):
            first_x = arrays[next(op["x"] for op in meta["calls"] if op["op"] == "call")]
            batch = first_x.shape[1] if time_major else first_x.shape[0]
        obj.build((None, batch, input_dim) if time_major else (batch, None, input_dim))
    if meta["init_bias"] is not None:
        assert_close(obj.get_weights()[2], arrays[meta["init_bias"]], "bias as initialised")
    weights = [arrays[k] for k in meta["weights"]]
    obj.set_weights(weights)
    for i, (ours, theirs) in enumerate(zip(obj.get_weights(), weights, strict=True)):
        assert_close(ours, theirs, f"get_weights()[{i}]")
    return obj


def call(obj: Any, meta: dict[str, Any], op: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[Any]:
    kind = meta["kind"]
    states = None
    if op["initial_state"] is not None:
        states = [torch.from_numpy(arrays[k]) for k in op["initial_state"]]
    if kind == "cell_step":
        out, new_states = obj(torch.from_numpy(arrays[op["x"]]), states, training=op["training"])
        assert out is new_states[0], "LSTMCell must return the new h itself as its output"
        return [out, *new_states]
    if states is not None and kind == "stacked_rnn":
        # Keras 2 takes a stacked RNN's initial state nested per cell: [[h0, c0], [h1, c1], ...].
        states = [states[i : i + 2] for i in range(0, len(states), 2)]
    mask = arrays[op["mask"]] if op["mask"] is not None else None
    result = obj(arrays[op["x"]], mask=mask, training=op["training"], initial_state=states)
    return flatten(result)


def run_case(meta: dict[str, Any], arrays: dict[str, np.ndarray], force_generic: bool = False) -> None:
    obj = make(meta, arrays)
    for n, op in enumerate(meta["calls"]):
        if op["op"] == "reset_states":
            if "states" in op:
                obj.reset_states([arrays[k] for k in op["states"]])
            else:
                obj.reset_states()
            continue
        got = call(obj, meta, op, arrays)
        assert len(got) == len(op["outputs"]), f"call {n}: {len(got)} outputs, Keras {len(op['outputs'])}"
        for k, (ours, key) in enumerate(zip(got, op["outputs"], strict=True)):
            assert_close(ours, arrays[key], f"{meta['name']} call {n} output {k}")
        if meta["kind"] == "lstm":
            fused = not force_generic and fused_eligible(meta["layer"], op["training"])
            expect = "fused" if fused else "generic"
            assert obj.last_path == expect, f"call {n} took the {obj.last_path} path, expected {expect}"
    total = sum(float(to_numpy(loss)) for loss in obj.losses)
    if meta["losses"] is None:
        assert total == 0.0, f"no regularizer configured, yet losses sum to {total}"
    else:
        np.testing.assert_allclose(total, float(arrays[meta["losses"]]), rtol=1e-5, err_msg="losses")


def test_fixtures_present() -> None:
    assert len(CASE_FILES) >= 60, f"expected the recorded golden cases, found {len(CASE_FILES)}"
    assert all(p.with_suffix(".npz").is_file() for p in CASE_FILES)
    kinds = {json.loads(p.read_text())["kind"] for p in CASE_FILES}
    assert kinds == {"lstm", "rnn", "cell_step", "stacked_rnn"}


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_keras_parity(path: Path) -> None:
    run_case(*load(path))


@pytest.mark.parametrize("path", LSTM_FILES, ids=[p.stem for p in LSTM_FILES])
def test_keras_parity_generic_path(path: Path) -> None:
    with sl.layers.force_generic():
        run_case(*load(path), force_generic=True)
