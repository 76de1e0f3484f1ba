"""Bad input: each raises a StreamLSTMError (also ValueError/TypeError) naming the argument, expected and got,
and leaves a stateful layer's carries and the weights as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_helpers import make_lstm

import streamlstm as sl
from streamlstm.errors import ArgumentTypeError, ConfigError, ShapeError, StateError, StreamLSTMError

BAD_ARGUMENTS = [
    ({"units": 0}, ConfigError, r"`units` must be a positive integer, got 0"),
    ({"units": -3}, ConfigError, r"`units` must be a positive integer, got -3"),
    ({"units": 2.5}, ArgumentTypeError, r"`units` must be a positive integer, got float 2.5"),
    ({"units": "4"}, ArgumentTypeError, r"`units` must be a positive integer, got str '4'"),
    ({"units": True}, ArgumentTypeError, r"`units` must be a positive integer, got bool"),
    ({"units": 3, "dropout": 1.0}, ConfigError, r"`dropout` must be in \[0, 1\), got 1.0"),
    ({"units": 3, "dropout": -0.1}, ConfigError, r"`dropout` must be in \[0, 1\), got -0.1"),
    ({"units": 3, "dropout": "0.1"}, ArgumentTypeError, r"`dropout` must be a float in \[0, 1\), got str"),
    ({"units": 3, "recurrent_dropout": 1.5}, ConfigError, r"`recurrent_dropout` must be in \[0, 1\), got 1.5"),
    ({"units": 3, "implementation": 3}, ConfigError, r"`implementation` must be 1 or 2, got 3"),
    ({"units": 3, "implementation": -1}, ConfigError, r"`implementation` must be 1 or 2, got -1"),
    ({"units": 3, "activation": "tanhh"}, ConfigError, r"`activation`: unknown activation 'tanhh'; expected one of"),
    ({"units": 3, "recurrent_activation": "sigmod"}, ConfigError,
     r"`recurrent_activation`: unknown activation 'sigmod'"),
    ({"units": 3, "kernel_initializer": "glorot"}, ConfigError,
     r"`kernel_initializer`: unknown initializer 'glorot'; expected one of .*glorot_uniform"),
    ({"units": 3, "recurrent_initializer": "orth"}, ConfigError, r"`recurrent_initializer`: unknown initializer"),
    ({"units": 3, "bias_initializer": 1.0}, ArgumentTypeError,
     r"`bias_initializer` must be an initializer name, .* got float"),
    ({"units": 3, "kernel_regularizer": "l3"}, ConfigError, r"`kernel_regularizer`: unknown regularizer 'l3'"),
    ({"units": 3, "bias_constraint": "positive"}, ConfigError, r"`bias_constraint`: unknown constraint"),
    ({"units": 3, "return_sequences": 1}, ArgumentTypeError, r"`return_sequences` must be True or False, got 1"),
    ({"units": 3, "stateful": "yes"}, ArgumentTypeError, r"`stateful` must be True or False, got 'yes'"),
    ({"units": 3, "dtype": "int32"}, ConfigError, r"`dtype` must be one of .*got 'int32'"),
    ({"units": 3, "seed": 1.5}, ConfigError, r"`seed` must be an integer or None, got 1.5"),
]
RNN_ARGUMENTS = {"return_sequences", "stateful"}


@pytest.mark.parametrize(("factory", "kwargs", "error", "message"), [
    (factory, *case) for factory in (sl.LSTM, sl.LSTMCell) for case in BAD_ARGUMENTS
    if factory is sl.LSTM or not case[0].keys() & RNN_ARGUMENTS
])
def test_bad_constructor_arguments(factory, kwargs, error, message) -> None:
    with pytest.raises(error, match=message) as info:
        factory(**kwargs)
    assert isinstance(info.value, StreamLSTMError)
    assert isinstance(info.value, ValueError if error is not ArgumentTypeError else TypeError)


@pytest.mark.parametrize("value", [np.float32(0.25), np.float64(0.25), np.int64(0), 0])
def test_numpy_scalars_are_accepted(value) -> None:
    layer = sl.LSTM(np.int32(3), dropout=value, recurrent_dropout=value, implementation=np.int64(1))
    assert (layer.units, layer.dropout, layer.implementation) == (3, float(value), 1)


def test_unknown_lstm_keyword() -> None:
    with pytest.raises(ArgumentTypeError, match="unexpected keyword argument.*'dropuot'"):
        sl.LSTM(3, dropuot=0.1)
    with pytest.raises(ArgumentTypeError, match="LSTM takes `units` positionally"):
        sl.LSTM(3, "tanh")


def test_bad_cells() -> None:
    with pytest.raises(ArgumentTypeError, match=r"`cell` must be a cell with a `state_size` attribute.*got object"):
        sl.RNN(object())
    with pytest.raises(ArgumentTypeError, match=r"`cells\[1\]` must be a cell.*got int"):
        sl.RNN([sl.LSTMCell(2), 3])
    with pytest.raises(ArgumentTypeError, match=r"`cells` must be a non-empty list of cells, got \[\]"):
        sl.StackedRNNCells([])


# -- bad calls on a stateful layer: the carries are untouched ---------------------------------------------

BAD_CALLS = [
    ("rank 2 inputs", {"inputs": np.zeros((2, 4), np.float32)}, ShapeError,
     r"`inputs` must be rank 3 \[batch, time, features\], got shape \(2, 4\)"),
    ("rank 4 inputs", {"inputs": np.zeros((2, 4, 3, 1), np.float32)}, ShapeError, r"`inputs` must be rank 3"),
    ("feature size changed", {"inputs": np.zeros((2, 4, 5), np.float32)}, ShapeError,
     r"`inputs` last dimension must be 3 .*got 5"),
    ("no time steps", {"inputs": np.zeros((2, 0, 3), np.float32)}, ShapeError,
     r"`inputs` must have at least one time step, got shape \(2, 0, 3\)"),
    ("string inputs", {"inputs": "abc"}, ArgumentTypeError, r"`inputs` must be a torch.Tensor or numpy array, got str"),
    ("mask too long", {"mask": np.ones((2, 5), bool)}, ShapeError,
     r"`mask` must have shape \[batch, time\] = \(2, 4\) to match `inputs`, got \(2, 5\)"),
    ("mask transposed", {"mask": np.ones((4, 2), bool)}, ShapeError,
     r"`mask` must have shape .*\(2, 4\).*got \(4, 2\)"),
    ("mask rank 1", {"mask": np.ones(8, bool)}, ShapeError, r"`mask` must have shape .*got \(8,\)"),
    ("batch mismatch", {"inputs": np.zeros((3, 4, 3), np.float32)}, StateError,
     r"`inputs` batch size must be 2 \(fixed by its first build or call; reset_states\(\) keeps it\), got 3"),
    ("one initial state", {"initial_state": [torch.zeros(2, 4)]}, ShapeError,
     r"`initial_state` must hold 2 tensors \(state_size \[4, 4\]\), got 1"),
    ("initial state shape", {"initial_state": [torch.zeros(2, 4), torch.zeros(2, 5)]}, ShapeError,
     r"`initial_state\[1\]` must have shape \(2, 4\), got \(2, 5\)"),
    ("initial state batch", {"initial_state": [torch.zeros(3, 4), torch.zeros(3, 4)]}, ShapeError,
     r"`initial_state\[0\]` must have shape \(2, 4\), got \(3, 4\)"),
    ("initial state type", {"initial_state": ["a", "b"]}, ArgumentTypeError,
     r"`initial_state\[0\]` must be a torch.Tensor or numpy array, got str"),
]


@pytest.mark.parametrize(("what", "call", "error", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_call_leaves_stateful_carries_unchanged(what, call, error, message) -> None:
    layer = make_lstm(4, 3, stateful=True, return_state=True)
    layer(torch.randn(2, 4, 3))
    before = [s.clone() for s in layer.states]
    weights = layer.get_weights()
    kwargs = {"inputs": torch.randn(2, 4, 3), **call}
    with pytest.raises(error, match=message):
        layer(kwargs.pop("inputs"), **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(layer.states, before))
    assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), weights))
    layer(torch.randn(2, 4, 3))  # still usable


def test_reset_states_with_bad_shapes_keeps_the_states() -> None:
    layer = make_lstm(4, 3, stateful=True)
    layer(torch.randn(2, 4, 3))
    before = [s.clone() for s in layer.states]
    with pytest.raises(ShapeError, match=r"`states\[0\]` must have shape \(2, 4\), got \(3, 4\)"):
        layer.reset_states([torch.zeros(3, 4), torch.zeros(3, 4)])
    with pytest.raises(ShapeError, match=r"`states` must hold 2 tensors .*got 1"):
        layer.reset_states(torch.zeros(2, 4))
    assert all(torch.equal(a, b) for a, b in zip(layer.states, before))


def test_reset_states_needs_a_stateful_layer() -> None:
    with pytest.raises(StateError, match="reset_states\\(\\) needs a stateful layer; this one has stateful=False"):
        sl.LSTM(3).reset_states()


def test_bad_cell_calls() -> None:
    cell = sl.LSTMCell(3)
    state = cell.get_initial_state(2)
    with pytest.raises(ShapeError, match=r"`inputs` must be \[batch, input_dim\] \(rank 2\), got shape \(2, 4, 1\)"):
        cell(torch.zeros(2, 4, 1), state)
    cell(torch.zeros(2, 4), state)
    with pytest.raises(ShapeError, match=r"`inputs` last dimension must be 4 .*got 5"):
        cell(torch.zeros(2, 5), state)
    with pytest.raises(ShapeError, match=r"`states` must be a list \[h, c\], got a list of 1"):
        cell(torch.zeros(2, 4), state[:1])
    with pytest.raises(ShapeError, match=r"`states` c must have shape \(2, 3\), got \(2, 2\)"):
        cell(torch.zeros(2, 4), [state[0], torch.zeros(2, 2)])
    with pytest.raises(ShapeError, match=r"`states` must hold one state list per cell \(2\), got 1"):
        sl.StackedRNNCells([sl.LSTMCell(2), sl.LSTMCell(2)])(torch.zeros(1, 2), [state])


def test_build_with_bad_shapes() -> None:
    with pytest.raises(ShapeError, match=r"`input_shape` must have 3 entries \(batch, time, features\), got \(2, 3\)"):
        sl.LSTM(3).build((2, 3))
    with pytest.raises(ConfigError, match=r"`input_shape\[-1\]` must be a positive integer, got 0"):
        sl.LSTMCell(3).build((None, 0))
    with pytest.raises(ArgumentTypeError, match=r"`input_shape\[-1\]` must be a positive integer, got NoneType"):
        sl.LSTMCell(3).build((None, None))


# -- set_weights: all or nothing ----------------------------------------------------------------------------

@pytest.mark.parametrize(("weights", "message"), [
    (lambda w: w[:2], r"`weights` must be a list of 3 arrays \(cell.kernel, cell.recurrent_kernel, cell.bias\), "
                      r"got 2 arrays"),
    (lambda w: [*w, w[2]], r"`weights` must be a list of 3 arrays .*got 4 arrays"),
    (lambda w: w[0], r"`weights` must be a list of 3 arrays .*got one array"),
    (lambda w: [w[0], w[1], w[2][:-1]], r"`weights\[2\]` \(cell.bias\) must have shape \(16,\), got \(15,\)"),
    (lambda w: [w[0].T, w[1], w[2]], r"`weights\[0\]` \(cell.kernel\) must have shape \(3, 16\), got \(16, 3\)"),
    (lambda w: [w[0], w[1][:, :8], w[2]],
     r"`weights\[1\]` \(cell.recurrent_kernel\) must have shape \(4, 16\), got \(4, 8\)"),
])
def test_set_weights_failure_leaves_weights_unchanged(weights, message) -> None:
    layer = make_lstm(4, 3)
    before = layer.get_weights()
    # New values first (so that a partial write would show), then the malformed list.
    new = [w + 1 for w in before]
    with pytest.raises(ShapeError, match=message):
        layer.set_weights(weights(new))
    for got, expected in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(got, expected)


def test_set_weights_without_bias_and_before_build() -> None:
    layer = make_lstm(4, 3, use_bias=False)
    with pytest.raises(ShapeError, match=r"list of 2 arrays \(cell.kernel, cell.recurrent_kernel\), got 3 arrays"):
        layer.set_weights([*layer.get_weights(), np.zeros(16)])
    with pytest.raises(ConfigError, match=r"LSTM.set_weights\(\) needs a built layer"):
        sl.LSTM(3).set_weights([np.zeros((2, 12))])


def test_input_on_another_device_is_named() -> None:
    layer = make_lstm(2, 2)
    meta = torch.zeros(1, 2, 2, device="meta")
    with pytest.raises(ConfigError, match=r"`inputs` is on meta but the layer's weights are on cpu"):
        layer(meta)
