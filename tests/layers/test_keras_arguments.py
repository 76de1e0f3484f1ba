"""Keras argument fidelity: what the Keras projects' own LSTM/RNN tests expect of a layer's arguments.

implementation=0, cells with an int ``state_size``, a stateful layer's ``states`` once its batch size is
known, ``set_weights([])`` before build, the common Keras constructor arguments, and the stateful
batch-size error.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from layer_helpers import make_lstm

import streamlstm as sl
from streamlstm.errors import ArgumentTypeError, ConfigError, ShapeError, StateError
from streamlstm.layers.serialization import deserialize, serialize

# -- 1. implementation=0 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [sl.LSTM, sl.LSTMCell])
def test_implementation_0_is_taken_as_1_with_a_warning(factory) -> None:
    with pytest.warns(FutureWarning, match=r"`implementation=0` is deprecated.*runs as implementation=1"):
        layer = factory(3, implementation=0, dropout=0.5)
    assert layer.implementation == 1 and layer.get_config()["implementation"] == 1
    one = factory(3, implementation=1, dropout=0.5)
    assert layer.get_config() == one.get_config()


def test_a_saved_config_with_implementation_0_loads() -> None:
    config = sl.LSTM(3, return_sequences=True).get_config()
    config["implementation"] = 0
    with pytest.warns(FutureWarning):
        layer = deserialize(json.loads(json.dumps({"class_name": "LSTM", "config": config})))
    reference = make_lstm(3, 2, return_sequences=True)
    layer.build((None, None, 2))
    layer.set_weights(reference.get_weights())
    x = torch.randn(2, 5, 2)
    torch.testing.assert_close(layer(x), reference(x))


def test_a_model_file_with_implementation_0_loads(tmp_path) -> None:
    model = torch.nn.Sequential(make_lstm(3, 2, return_sequences=True))
    sl.save_model(model, tmp_path / "m.slm")
    with pytest.warns(FutureWarning):
        edited = torch.nn.Sequential(sl.LSTM(3, return_sequences=True, implementation=0, input_shape=(None, 2)))
    edited[0].set_weights(model[0].get_weights())
    sl.save_model(edited, tmp_path / "m0.slm")   # the file stores the layer's config: implementation 1 now
    loaded = sl.load_model(tmp_path / "m0.slm")
    x = torch.randn(2, 4, 2)
    torch.testing.assert_close(loaded(x), model(x))


# -- 2. cells whose state_size is an int ----------------------------------------------------------------------


class MinimalRNNCell(torch.nn.Module):
    """The Keras documentation's example cell: one state, ``state_size`` an int."""

    def __init__(self, units: int, input_dim: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.state_size = units
        self.output_size = units
        self.kernel = torch.nn.Parameter(torch.randn(input_dim, units, generator=generator) * 0.5)
        self.recurrent_kernel = torch.nn.Parameter(torch.randn(units, units, generator=generator) * 0.5)

    def forward(self, inputs, states):
        output = torch.tanh(inputs @ self.kernel + states[0] @ self.recurrent_kernel)
        return output, [output]


def _minimal_pair(input_dim: int = 3):
    return MinimalRNNCell(4, input_dim, seed=1), MinimalRNNCell(2, 4, seed=2)


def _by_hand(cells, x: torch.Tensor) -> list[torch.Tensor]:
    """The stack run step by step: the final state of each cell."""
    states = [torch.zeros(x.shape[0], cell.state_size) for cell in cells]
    for t in range(x.shape[1]):
        inputs = x[:, t]
        for index, cell in enumerate(cells):
            inputs, (states[index],) = cell(inputs, [states[index]])
    return states


def test_stacked_int_state_cells_return_bare_tensors() -> None:
    cells = _minimal_pair()
    layer = sl.RNN(list(cells), return_state=True)
    x = torch.randn(2, 5, 3)
    out, state_a, state_b = layer(x)
    assert isinstance(state_a, torch.Tensor) and isinstance(state_b, torch.Tensor)
    expected = _by_hand(cells, x)
    torch.testing.assert_close(state_a, expected[0])
    torch.testing.assert_close(state_b, expected[1])
    torch.testing.assert_close(out, expected[1])


def test_mixed_stack_nests_lists_and_bare_tensors() -> None:
    minimal, _ = _minimal_pair()
    layer = sl.RNN([minimal, sl.LSTMCell(2)], return_state=True, stateful=True)
    out, state_a, (h, c) = layer(torch.randn(2, 5, 3))
    assert isinstance(state_a, torch.Tensor) and tuple(state_a.shape) == (2, 4)
    assert tuple(h.shape) == tuple(c.shape) == (2, 2) and torch.equal(out, h)
    assert isinstance(layer.states[0], torch.Tensor) and len(layer.states[1]) == 2
    assert layer.cell.state_size == [4, [2, 2]]
    # The same structure is accepted back as initial_state and by reset_states.
    x = torch.randn(2, 3, 3)
    given = [torch.randn(2, 4), [torch.randn(2, 2), torch.randn(2, 2)]]
    first = layer(x, initial_state=given)
    layer.reset_states(given)
    torch.testing.assert_close(layer(x), first)


def test_single_int_state_cell_returns_output_and_state() -> None:
    cell, _ = _minimal_pair()
    out, state = sl.RNN(cell, return_state=True)(torch.randn(2, 5, 3))
    assert isinstance(state, torch.Tensor) and torch.equal(out, state)


# -- 3. a stateful layer's states once the batch size is known ------------------------------------------------


@pytest.mark.parametrize("build", [
    lambda: sl.LSTM(3, stateful=True, batch_input_shape=(2, None, 5)),
    lambda: sl.LSTM(3, stateful=True, input_shape=(None, 5), batch_size=2),
    lambda: _built(sl.LSTM(3, stateful=True), (2, None, 5)),
    lambda: _built(sl.RNN([sl.LSTMCell(3), sl.LSTMCell(3)], stateful=True), (2, None, 5)),
    lambda: sl.LSTM(3, stateful=True, time_major=True, batch_input_shape=(None, 2, 5)),
])
def test_stateful_states_are_zeros_after_build_and_after_reset(build) -> None:
    layer = build()
    flat = _flat(layer.states)
    assert len(flat) in (2, 4) and all(tuple(s.shape) == (2, 3) and not s.any() for s in flat)
    x = torch.randn(4, 2, 5) if layer.time_major else torch.randn(2, 4, 5)
    first = layer(x)
    assert any(s.any() for s in _flat(layer.states))
    layer.reset_states()
    flat = _flat(layer.states)
    assert all(tuple(s.shape) == (2, 3) and not s.any() for s in flat)
    torch.testing.assert_close(layer(x), first)   # zeros stored = a fresh start


def test_stateful_states_are_none_while_the_batch_size_is_unknown() -> None:
    layer = sl.LSTM(3, stateful=True, input_shape=(None, 5))
    assert layer.states is None and layer.batch_size is None
    layer.reset_states()
    assert layer.states is None


def test_stored_zero_states_follow_to_dtype() -> None:
    layer = sl.LSTM(3, stateful=True, batch_input_shape=(2, None, 5)).double()
    assert {s.dtype for s in layer.states} == {torch.float64}


def _built(layer, shape):
    layer.build(shape)
    return layer


def _flat(states):
    return [t for s in states for t in (s if isinstance(s, list) else [s])]


# -- 4. set_weights([]) before build ----------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [lambda: sl.LSTM(3), lambda: sl.LSTMCell(3),
                                     lambda: sl.RNN([sl.LSTMCell(3), sl.LSTMCell(2)])])
def test_set_weights_of_get_weights_on_an_unbuilt_layer_is_a_no_op(factory) -> None:
    layer = factory()
    assert layer.get_weights() == []
    layer.set_weights(layer.get_weights())
    assert not layer.built and layer.get_weights() == []
    with pytest.raises(ConfigError, match=r"set_weights\(\) needs a built layer"):
        layer.set_weights([np.zeros((2, 12))])


# -- 5. common Keras constructor arguments ------------------------------------------------------------------


def test_name_shows_in_repr_and_config_and_round_trips() -> None:
    layer = sl.LSTM(4, name="encoder")
    assert layer.name == "encoder" and "name='encoder'" in repr(layer)
    assert layer.get_config()["name"] == "encoder"
    assert deserialize(serialize(layer)).name == "encoder"
    assert sl.LSTM(4).name == "lstm" and "name" not in repr(sl.LSTM(4))
    assert sl.LSTMCell(2, name="c").get_config()["name"] == "c" and "name='c'" in repr(sl.LSTMCell(2, name="c"))
    rnn = sl.RNN(sl.LSTMCell(2), name="loop")
    assert sl.RNN.from_config(rnn.get_config()).name == "loop" and "name='loop'" in repr(rnn)
    with pytest.raises(ArgumentTypeError, match=r"`name` must be a string or None, got int 3"):
        sl.LSTM(4, name=3)


@pytest.mark.parametrize("build", [
    lambda: sl.LSTM(4, batch_input_shape=(8, 10, 3)),
    lambda: sl.LSTM(4, input_shape=(10, 3), batch_size=8),
])
def test_batch_input_shape_and_batch_size_build_at_once(build) -> None:
    layer = build()
    assert layer.built and layer.cell.input_dim == 3
    assert layer(torch.randn(5, 10, 3)).shape == (5, 4)   # not stateful: any batch size


def test_batch_input_shape_fixes_a_stateful_batch() -> None:
    layer = sl.LSTM(4, stateful=True, batch_input_shape=(8, None, 3))
    assert layer.batch_size == 8
    with pytest.raises(StateError, match="batch size must be 8"):
        layer(torch.randn(5, 10, 3))


def test_bad_shape_arguments_are_named() -> None:
    with pytest.raises(ConfigError, match=r"pass either `batch_input_shape` or `input_shape`"):
        sl.LSTM(4, batch_input_shape=(8, 10, 3), input_shape=(10, 3))
    with pytest.raises(ConfigError, match=r"`batch_size` needs `input_shape` \(time, features\)"):
        sl.LSTM(4, batch_size=8)
    with pytest.raises(ShapeError, match=r"`batch_input_shape` must be \(batch, time, features\), got \(10, 3\)"):
        sl.LSTM(4, batch_input_shape=(10, 3))


def test_dtype_keras_name() -> None:
    assert sl.LSTM(2, dtype="float64", input_shape=(None, 3)).cell.kernel.dtype == torch.float64


def test_trainable_false_freezes_the_weights_before_or_after_build() -> None:
    for layer in (sl.LSTM(3, trainable=False), sl.LSTM(3, trainable=False, input_shape=(None, 2)),
                  sl.RNN([sl.LSTMCell(3), sl.LSTMCell(2)], trainable=False)):
        layer(torch.randn(2, 4, 2))
        params = list(layer.parameters())
        assert params and not any(p.requires_grad for p in params)
        assert layer.get_config()["trainable"] is False and "trainable=False" in repr(layer)
        layer.trainable = True
        assert all(p.requires_grad for p in layer.parameters())
    frozen = sl.LSTM.from_config(sl.LSTM(3, trainable=False).get_config())
    frozen.build((None, None, 2))
    assert not frozen.trainable and not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ArgumentTypeError, match=r"`trainable` must be True or False, got 'no'"):
        sl.LSTM(3, trainable="no")


@pytest.mark.parametrize(("factory", "argument", "alternative"), [
    (sl.LSTM, {"input_dim": 3}, r"input_shape=\(None, input_dim\)"),
    (sl.LSTM, {"input_length": 5}, r"input_shape=\(input_length, features\)"),
    (sl.LSTM, {"weights": []}, r"set_weights\(weights\)"),
    (sl.LSTM, {"use_cudnn": False}, r"force_generic"),
    (lambda **kw: sl.RNN(sl.LSTMCell(2), **kw), {"input_dim": 3}, r"input_shape=\(None, input_dim\)"),
])
def test_refused_keras_arguments_name_the_alternative(factory, argument, alternative) -> None:
    with pytest.raises(ArgumentTypeError, match=rf"does not take the Keras argument `{next(iter(argument))}`: .*"
                                                rf"{alternative}"):
        factory(4, **argument) if factory is sl.LSTM else factory(**argument)


def test_unknown_arguments_of_rnn_are_named() -> None:
    with pytest.raises(ArgumentTypeError, match=r"RNN got unexpected keyword argument\(s\) 'retrun_state'"):
        sl.RNN(sl.LSTMCell(2), retrun_state=True)


# -- 6. the stateful batch-size error suggests something that works ---------------------------------------


def test_stateful_batch_size_error_suggests_what_works() -> None:
    layer = make_lstm(3, 2, stateful=True)
    layer(torch.randn(4, 5, 2))
    layer.reset_states()
    x = torch.randn(6, 5, 2)
    with pytest.raises(StateError, match=r"must be 4 .*reset_states\(\) keeps it.*got 6") as info:
        layer(x)
    assert "call reset_states() on a new layer" not in str(info.value)
    # What the message suggests works:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = type(layer).from_config(layer.get_config())
        fresh.build((None, None, 2))
        fresh.set_weights(layer.get_weights())
    assert fresh(x).shape == (6, 3)
