"""StreamTrainer against recorded tf.keras 2 ``stateful=True`` training (see
tests/fixtures/generate_keras_training_golden.py): the weights and the LSTM's carries after every
batch equal Keras's, for rows fed in any order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import make_model, train_batch

import streamlstm as sl

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "keras_training_golden"
CASES = sorted(path.stem for path in GOLDEN.glob("*.json"))


def _load(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    with np.load(GOLDEN / f"{name}.npz") as data:
        return meta, {key: data[key] for key in data.files}


def _torch_weights(model: torch.nn.Sequential) -> list[np.ndarray]:
    """The model's weights in Keras ``get_weights()`` order (Dense kernel = Linear weight transposed)."""
    dense = model[1]
    return [*model[0].get_weights(), dense.weight.detach().numpy().T, dense.bias.detach().numpy()]


def _trainer(meta: dict, arrays: dict[str, np.ndarray]) -> sl.StreamTrainer:
    model = make_model(meta["F"], meta["U"])
    if "activity" in meta:   # Keras adds reg(outputs) / batch size to each batch's loss
        model[0].activity_regularizer = sl.layers.regularizers.L1L2(**meta["activity"])
    model[0].set_weights([arrays["w0_0"], arrays["w0_1"], arrays["w0_2"]])
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(arrays["w0_3"].T))
        model[1].bias.copy_(torch.from_numpy(arrays["w0_4"]))
    opt = meta["optimizer"]
    optimizer = torch.optim.SGD(model.parameters(), lr=opt["learning_rate"], momentum=opt["momentum"])
    return sl.StreamTrainer(model, optimizer, "mse", key="id", features="x", target="y", mask="real")


@pytest.mark.parametrize("order", ["time_major", "stream_major", "shuffled"])
@pytest.mark.parametrize("name", CASES)
def test_weights_and_carries_after_every_batch_equal_keras(name: str, order: str) -> None:
    meta, arrays = _load(name)
    n, k = meta["N"], meta["K"]
    x, y, real = arrays["series_x"], arrays["series_y"], arrays["real"]
    trainer = _trainer(meta, arrays)
    rng = np.random.default_rng(0)
    for b in range(meta["batches"]):
        streams, steps = np.meshgrid(np.arange(n), np.arange(b * k, (b + 1) * k), indexing="ij")
        streams, steps = streams.reshape(-1), steps.reshape(-1)
        rows = {"stream_major": np.arange(n * k), "time_major": np.arange(n * k).reshape(n, k).T.reshape(-1),
                "shuffled": np.lexsort((rng.permutation(n * k), steps))}[order]
        s, t = streams[rows], steps[rows]
        trainer.learn(train_batch(s + 100, x[s, t], y[s, t], real=real[s, t]))
        got = _torch_weights(trainer.model)
        for i, expected in enumerate(arrays[f"w{b + 1}_{i}"] for i in range(5)):
            np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=2e-6, err_msg=f"batch {b}, weight {i}")
        for j in range(n):
            (h, c), = trainer.runtime.state(100 + j)
            np.testing.assert_allclose(h, arrays[f"h{b + 1}"][j], rtol=1e-5, atol=2e-6, err_msg=f"h, stream {j}")
            np.testing.assert_allclose(c, arrays[f"c{b + 1}"][j], rtol=1e-5, atol=2e-6, err_msg=f"c, stream {j}")


def test_the_golden_cases_are_there() -> None:
    assert {"sgd", "sgd_momentum", "sgd_masked", "sgd_momentum_masked", "sgd_activity",
            "sgd_momentum_activity_masked"} <= set(CASES)
