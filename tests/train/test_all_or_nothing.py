"""A bad batch in the middle of training changes nothing: weights, optimizer state, carries and
counters stay byte-identical, and the error names what is wrong."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from train_helpers import fixed_list, make_model, optimizer_state, same_optimizer_state, train_batch, weights

import streamlstm as sl
from streamlstm.errors import ConfigError, SchemaError, StreamError

F, U = 3, 4


def _good(rng: np.random.Generator, keys: list[int]) -> pa.RecordBatch:
    n = len(keys)
    return train_batch(keys, rng.uniform(-1, 1, (n, F)), rng.uniform(-1, 1, (n, 1)), real=rng.uniform(size=n) > 0.2,
                       reset=np.zeros(n, bool))


def _with(batch: pa.RecordBatch, name: str, column: pa.Array) -> pa.RecordBatch:
    return batch.set_column(batch.schema.get_field_index(name), name, column)


def _bad_batches(good: pa.RecordBatch) -> list[tuple[pa.RecordBatch, type, str]]:
    n = good.num_rows
    x = np.stack(good.column("x").to_numpy(zero_copy_only=False))
    y_values = np.ones((n, 1), np.float32)
    nan_x = x.copy()
    nan_x[2, 1] = np.nan
    inf_y = y_values.copy()
    inf_y[1, 0] = np.inf
    hole = pa.FixedSizeListArray.from_arrays(pa.array([1.0, None, *[1.0] * (n - 2)], pa.float32()), 1)
    return [
        (good.drop_columns(["y"]), SchemaError, "target column 'y' is missing"),
        (_with(good, "y", fixed_list(np.ones((n, 2)))), SchemaError, "must have width 1"),
        (_with(good, "y", pa.array(np.ones(n))), SchemaError, "must be FixedSizeList"),
        (_with(good, "x", fixed_list(nan_x)), StreamError, "non-finite value"),
        (_with(good, "y", fixed_list(inf_y)), StreamError, "target column 'y' has a non-finite value at row 1"),
        (_with(good, "y", hole), StreamError, "null value inside row 1"),
        (_with(good, "y", fixed_list(np.full((n, 1), 3e38))), StreamError, "loss is not finite"),
        (_with(good, "id", pa.array([f"s{i}" for i in range(n)])), SchemaError, "must be integer"),
        (_with(good, "reset", pa.array([None] * n, pa.bool_())), StreamError, "has a null at row 0"),
    ]


def _snapshot(trainer: sl.StreamTrainer) -> tuple:
    streams = trainer.runtime.export_streams()
    return weights(trainer.model), optimizer_state(trainer.optimizer), streams, trainer.stats()


def _assert_same(before: tuple, after: tuple) -> None:
    for name, value in before[0].items():
        assert np.array_equal(value, after[0][name]), name
    assert same_optimizer_state(before[1], after[1])
    assert before[2].drop_columns(["idle_seconds"]).equals(after[2].drop_columns(["idle_seconds"]))
    assert before[3] == after[3]


@pytest.mark.parametrize("case", range(9))
def test_a_bad_batch_changes_nothing(case: int) -> None:
    rng = np.random.default_rng(case)
    model = make_model(F, U)
    trainer = sl.StreamTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), key="id",
                               features="x", target="y", mask="real", reset="reset")
    for _ in range(2):
        trainer.learn(_good(rng, [1, 2, 3, 1, 2, 3]))
    good = _good(rng, [2, 3, 4, 2, 3, 4])
    batch, error, message = _bad_batches(good)[case]
    before = _snapshot(trainer)
    with pytest.raises(error, match=message):
        trainer.learn(batch)
    _assert_same(before, _snapshot(trainer))
    assert trainer.model.training is False   # the runtime serves in eval mode
    trainer.learn(good)                       # and training goes on
    assert trainer.stats()["updates"] == 3


def test_a_loss_of_the_wrong_shape_changes_nothing() -> None:
    rng = np.random.default_rng(7)
    model = make_model(F, U)
    trainer = sl.StreamTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                               lambda p, y: (p - y).square(), key="id", features="x", target="y", mask="real",
                               reset="reset")
    before = _snapshot(trainer)
    with pytest.raises(ConfigError, match=r"one value per row, shape \(\d+,\), got \(\d+, 1\)"):
        trainer.learn(_good(rng, [1, 2, 1]))
    _assert_same(before, _snapshot(trainer))


def test_configuration_errors_name_the_argument() -> None:
    model = make_model(F, U)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="`loss` must be one of"):
        sl.StreamTrainer(model, sgd, "cross", key="id", features="x", target="y")
    with pytest.raises(ConfigError, match="`target` columns must be distinct"):
        sl.StreamTrainer(model, sgd, key="id", features="x", target="x")
    with pytest.raises(ConfigError, match="`clip_grad_norm` must be a positive number"):
        sl.StreamTrainer(model, sgd, key="id", features="x", target="y", clip_grad_norm=0)
    with pytest.raises(TypeError, match="`optimizer` must be a torch.optim.Optimizer"):
        sl.StreamTrainer(model, "sgd", key="id", features="x", target="y")
    with pytest.raises(ConfigError, match="the model is not built yet"):
        sl.StreamTrainer(sl.LSTM(3), sgd, key="id", features="x", target="y")
