"""The runtime reproduces tf.keras 2 stateful models stream by stream (recorded golden outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_helpers import feed_all

import streamlstm as sl

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "runtime_golden"


def load_case(name: str):
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    with np.load(GOLDEN / f"{name}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays


def build(meta, arrays) -> torch.nn.Sequential:
    u1, u2 = meta["units"]
    first, second = sl.LSTM(u1, return_sequences=True), sl.LSTM(u2, return_sequences=True)
    first.build((None, None, meta["input_dim"]))
    second.build((None, None, u1))
    first.set_weights([arrays[k] for k in meta["weights"][:3]])
    second.set_weights([arrays[k] for k in meta["weights"][3:6]])
    head = torch.nn.Linear(u2, meta["head_units"])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(arrays["head_kernel"].T))
        head.bias.copy_(torch.from_numpy(arrays["head_bias"]))
    return torch.nn.Sequential(first, second, head)


@pytest.mark.parametrize("mode", ["step", "chunk", "auto"])
@pytest.mark.parametrize("cuts", [[], [1, 2, 3, 40], list(range(1, 90)), [17, 18, 60]])
def test_two_lstm_dense_matches_keras(mode, cuts):
    meta, arrays = load_case("two_lstm_dense")
    runtime = sl.StreamRuntime(build(meta, arrays), key="id", features="x", mask="m", reset="r", mode=mode)
    got = feed_all(runtime, arrays["keys"], arrays["x"], cuts, mask=arrays["mask"], reset=arrays["reset"])
    np.testing.assert_allclose(got, arrays["output"], rtol=1e-5, atol=1e-6)


def test_fixture_exercises_masks_and_resets():
    _, arrays = load_case("two_lstm_dense")
    assert (~arrays["mask"]).sum() >= 10 and arrays["reset"].sum() >= 3
    assert len(np.unique(arrays["keys"])) == 5
