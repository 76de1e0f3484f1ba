"""Weights (get/set_weights, state_dict), configs and serialization, losses, constraints, repr."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from layer_helpers import assert_all_close, make_lstm, random_weights

import streamlstm as sl
from streamlstm.layers import constraints, deserialize, initializers, regularizers, serialization, serialize


@pytest.mark.parametrize("layer_factory", [lambda **k: sl.LSTM(4, **k), lambda **k: sl.RNN(sl.LSTMCell(4, **k))])
def test_get_weights_shapes_and_order(layer_factory) -> None:
    layer = layer_factory()
    layer.build((None, None, 3))
    weights = layer.get_weights()
    assert [w.shape for w in weights] == [(3, 16), (4, 16), (16,)]
    assert all(w.dtype == np.float32 for w in weights)
    assert [name for name, _ in layer.named_parameters()] == ["cell.kernel", "cell.recurrent_kernel", "cell.bias"]
    no_bias = layer_factory(use_bias=False)
    no_bias.build((None, None, 3))
    assert [w.shape for w in no_bias.get_weights()] == [(3, 16), (4, 16)]


def test_get_weights_are_copies_and_set_weights_round_trips() -> None:
    layer = make_lstm(4, 3)
    weights = layer.get_weights()
    weights[0][:] = 0
    assert layer.get_weights()[0].any()
    new = [np.random.default_rng(1).normal(size=w.shape) for w in weights]  # float64 arrays are cast
    layer.set_weights(new)
    for got, expected in zip(layer.get_weights(), new):
        np.testing.assert_allclose(got, expected.astype(np.float32))
    layer.set_weights([torch.from_numpy(w) for w in new])  # tensors work too
    torch.testing.assert_close(layer.cell.kernel, torch.from_numpy(new[0]).float())


def test_set_weights_uses_the_torch_layout() -> None:
    """kernel = weight_ih.T, recurrent_kernel = weight_hh.T: weights from torch.nn.LSTM give its numbers."""
    reference = torch.nn.LSTM(3, 4, batch_first=True)
    layer = sl.LSTM(4, return_sequences=True)
    layer.build((None, None, 3))
    layer.set_weights([reference.weight_ih_l0.detach().T.numpy(), reference.weight_hh_l0.detach().T.numpy(),
                       (reference.bias_ih_l0 + reference.bias_hh_l0).detach().numpy()])
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(layer(x), reference(x)[0])


@pytest.mark.parametrize("kwargs", [{}, {"use_bias": False}])
def test_state_dict_round_trip_into_a_fresh_unbuilt_layer(kwargs) -> None:
    layer = make_lstm(4, 3, return_sequences=True, **kwargs)
    state = layer.state_dict()
    assert list(state) == ["cell.kernel", "cell.recurrent_kernel"] + (["cell.bias"] if not kwargs else [])
    fresh = sl.LSTM(4, return_sequences=True, **kwargs)
    assert not fresh.cell.built
    fresh.load_state_dict(state)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(fresh(x), layer(x))
    assert_all_close([torch.from_numpy(w) for w in fresh.get_weights()],
                     [torch.from_numpy(w) for w in layer.get_weights()], rtol=0, atol=0)


def test_state_dict_of_stacked_cells() -> None:
    layer = sl.RNN([sl.LSTMCell(4), sl.LSTMCell(3)])
    layer.build((None, None, 2))
    random_weights(layer)
    assert list(layer.state_dict()) == [f"cell.cells.{i}.{name}" for i in (0, 1)
                                        for name in ("kernel", "recurrent_kernel", "bias")]
    fresh = sl.RNN([sl.LSTMCell(4), sl.LSTMCell(3)])
    fresh.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 2)
    torch.testing.assert_close(fresh(x), layer(x))


def test_unit_forget_bias() -> None:
    cell = sl.LSTMCell(3, bias_initializer="ones")
    cell.build(2)
    np.testing.assert_array_equal(cell.bias.detach().numpy(), np.ones(12))
    cell = sl.LSTMCell(3)
    cell.build(2)
    np.testing.assert_array_equal(cell.bias.detach().numpy(), np.r_[np.zeros(3), np.ones(3), np.zeros(6)])
    cell = sl.LSTMCell(3, unit_forget_bias=False)
    cell.build(2)
    assert not cell.bias.any()
    cell = sl.LSTMCell(3, bias_initializer={"class_name": "Constant", "config": {"value": 0.5}})
    cell.build(2)
    np.testing.assert_array_equal(cell.bias.detach().numpy(), np.r_[np.full(3, 0.5), np.ones(3), np.full(6, 0.5)])


def test_default_initializers() -> None:
    cell = sl.LSTMCell(8, seed=0)
    cell.build(5)
    recurrent = cell.recurrent_kernel.detach().double()
    torch.testing.assert_close(recurrent @ recurrent.T, torch.eye(8, dtype=torch.float64), atol=1e-5, rtol=0)
    assert cell.kernel.abs().max() <= (6 / (5 + 32)) ** 0.5


def test_seed_makes_initial_weights_reproducible() -> None:
    a, b, c = sl.LSTM(4, seed=1), sl.LSTM(4, seed=1), sl.LSTM(4, seed=2)
    for layer in (a, b, c):
        layer.build((None, None, 3))
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


# -- configs -----------------------------------------------------------------------------------------------

NON_DEFAULT = {
    "activation": "relu", "recurrent_activation": "hard_sigmoid", "use_bias": False,
    "kernel_initializer": {"class_name": "RandomUniform", "config": {"minval": -0.2, "maxval": 0.2, "seed": 3}},
    "recurrent_initializer": {"class_name": "Orthogonal", "config": {"gain": 0.5, "seed": None}},
    "bias_initializer": "ones", "unit_forget_bias": False, "kernel_regularizer": "l2",
    "recurrent_regularizer": {"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.0}}, "bias_regularizer": "l1",
    "kernel_constraint": "max_norm", "recurrent_constraint": "non_neg", "bias_constraint": "unit_norm",
    "dropout": 0.1, "recurrent_dropout": 0.2, "implementation": 1, "seed": 5,
}
RNN_FLAGS = {"return_sequences": True, "return_state": True, "go_backwards": True, "stateful": True, "unroll": True,
             "time_major": True, "zero_output_for_mask": True, "activity_regularizer": "l2"}


def _equivalent(a, b) -> None:
    assert type(a) is type(b)
    config_a, config_b = a.get_config(), b.get_config()
    assert config_a == config_b
    json.dumps(config_a)  # plain JSON


@pytest.mark.parametrize("build", [
    lambda: sl.LSTMCell(3),
    lambda: sl.LSTMCell(3, **NON_DEFAULT),
    lambda: sl.LSTM(3),
    lambda: sl.LSTM(3, **NON_DEFAULT, **RNN_FLAGS),
    lambda: sl.RNN(sl.LSTMCell(3, dropout=0.5), return_sequences=True),
    lambda: sl.RNN([sl.LSTMCell(3), sl.LSTMCell(2, activation="relu")], go_backwards=True),
    lambda: sl.StackedRNNCells([sl.LSTMCell(3), sl.LSTMCell(2)]),
])
def test_config_and_serialize_round_trips(build) -> None:
    layer = build()
    _equivalent(layer, deserialize(serialize(layer)))
    _equivalent(layer, deserialize(json.loads(json.dumps(serialize(layer)))))
    _equivalent(layer, type(layer).from_config(layer.get_config()))


def test_lstm_config_has_every_keras_argument() -> None:
    config = sl.LSTM(3).get_config()
    assert set(NON_DEFAULT) | set(RNN_FLAGS) | {"units", "name", "trainable"} == set(config)
    assert config["kernel_initializer"] == {"class_name": "GlorotUniform", "config": {"seed": None}}


def test_from_config_gives_the_same_numbers() -> None:
    layer = make_lstm(3, 2, activation="relu", return_sequences=True)
    copy = sl.LSTM.from_config(layer.get_config())
    copy.build((None, None, 2))
    copy.set_weights(layer.get_weights())
    x = torch.randn(2, 4, 2)
    torch.testing.assert_close(copy(x), layer(x))


def test_deserialize_unknown_class() -> None:
    with pytest.raises(sl.errors.ConfigError, match="unknown layer class 'GRU'; supported: LSTM, LSTMCell"):
        deserialize({"class_name": "GRU", "config": {}})
    with pytest.raises(sl.errors.ConfigError, match="cannot serialize Linear"):
        serialize(torch.nn.Linear(2, 2))


def test_layer_classes_register_themselves_by_name() -> None:
    for cls in (sl.LSTM, sl.LSTMCell, sl.RNN, sl.StackedRNNCells):
        assert serialization.register(cls) is cls   # again: harmless

    class LSTM(torch.nn.Module):
        pass

    with pytest.raises(sl.errors.ConfigError, match="'LSTM' is registered already, by streamlstm.layers.lstm.LSTM"):
        serialization.register(LSTM)
    assert type(deserialize(serialize(sl.LSTM(2)))) is sl.LSTM


def test_repr_shows_non_default_settings() -> None:
    assert repr(sl.LSTMCell(4)) == "LSTMCell(4)"
    assert repr(sl.LSTM(4)) == "LSTM(4)"  # one line, like torch.nn.LSTM; the cell is a detail
    assert "(cell): LSTMCell(3)" in repr(sl.RNN(sl.LSTMCell(3)))
    text = repr(sl.LSTM(4, activation="relu", dropout=0.25, return_sequences=True))
    assert "activation='relu'" in text and "dropout=0.25" in text and "return_sequences=True" in text
    assert "recurrent_activation" not in text and "go_backwards" not in text
    layer = sl.LSTM(4)
    layer.build((None, None, 3))
    assert "input_dim=3" in repr(layer)


def test_input_shape_builds_the_weights_at_construction() -> None:
    layer = sl.LSTM(4, input_shape=(None, 3))
    assert [p.shape for p in layer.parameters()] == [(3, 16), (4, 16), (16,)]
    with pytest.raises(sl.errors.ShapeError, match=r"`input_shape` must be \(time, features\)"):
        sl.LSTM(4, input_shape=(2, None, 3))


# -- losses ------------------------------------------------------------------------------------------------

def test_weight_regularizer_losses_follow_the_current_weights() -> None:
    layer = make_lstm(3, 2, kernel_regularizer="l2", recurrent_regularizer=regularizers.L1L2(l1=0.1, l2=0.2),
                      bias_regularizer="l1")
    kernel, recurrent, bias = (torch.from_numpy(w) for w in layer.get_weights())
    expected = [0.01 * kernel.square().sum(), 0.1 * recurrent.abs().sum() + 0.2 * recurrent.square().sum(),
                0.01 * bias.abs().sum()]
    assert_all_close(layer.losses, expected)
    layer.set_weights([w * 2 for w in layer.get_weights()])
    assert layer.losses[0].item() == pytest.approx(4 * expected[0].item(), rel=1e-5)
    # The penalty is differentiable with respect to the weights.
    sum(layer.losses).backward()
    assert layer.cell.kernel.grad is not None


def test_no_regularizers_no_losses() -> None:
    layer = make_lstm(3, 2)
    layer(torch.randn(2, 3, 2))
    assert layer.losses == []


@pytest.mark.parametrize(("return_sequences", "return_state"), [(False, False), (True, False), (False, True)])
def test_activity_regularizer_per_output_divided_by_batch(return_sequences, return_state) -> None:
    layer = make_lstm(3, 2, activity_regularizer="l2", return_sequences=return_sequences,
                      return_state=return_state)
    result = layer(torch.randn(5, 4, 2))
    outputs = result if return_state else [result]
    expected = [0.01 * t.square().sum() / 5 for t in outputs]
    assert_all_close(layer.losses, expected)
    layer(torch.randn(5, 4, 2))
    assert len(layer.losses) == len(expected)  # replaced by each call, not accumulated


def test_losses_of_a_model_collect_sub_layers() -> None:
    model = torch.nn.Sequential()
    lstm = make_lstm(3, 2, kernel_regularizer="l1")
    model.append(lstm)
    assert len(lstm.losses) == 1
    stacked = sl.RNN([sl.LSTMCell(3, kernel_regularizer="l2"), sl.LSTMCell(2, bias_regularizer="l2")])
    stacked.build((None, None, 2))
    assert len(stacked.losses) == 2


# -- constraints -------------------------------------------------------------------------------------------

def test_apply_constraints_projects_every_constrained_weight() -> None:
    layer = make_lstm(3, 2, kernel_constraint=constraints.MaxNorm(0.1), recurrent_constraint="non_neg",
                      bias_constraint="unit_norm")
    kernel_before = layer.get_weights()[0]
    x = torch.randn(2, 3, 2)
    out_before = layer(x)
    torch.testing.assert_close(layer(x), out_before)  # never applied in the forward pass
    assert np.array_equal(layer.get_weights()[0], kernel_before)
    layer.apply_constraints()
    kernel, recurrent, bias = layer.get_weights()
    assert np.linalg.norm(kernel, axis=0).max() <= 0.1 + 1e-6
    assert (recurrent >= 0).all()
    assert np.linalg.norm(bias) == pytest.approx(1.0, abs=1e-5)


def test_initializer_objects_are_accepted() -> None:
    cell = sl.LSTMCell(2, kernel_initializer=initializers.Constant(0.3), recurrent_initializer=initializers.Zeros)
    cell.build(2)
    assert bool((cell.kernel == 0.3).all()) and not cell.recurrent_kernel.any()
