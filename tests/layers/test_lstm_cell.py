"""LSTMCell: one Keras step, the cell protocol, building."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import streamlstm as sl
from streamlstm.layers import activations


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def reference_step(x, h, c, kernel, recurrent_kernel, bias, a=np.tanh, ra=_sigmoid):
    """The Keras step written out in numpy (KERAS_SEMANTICS.md, "One step")."""
    z = x @ kernel + h @ recurrent_kernel + (0.0 if bias is None else bias)
    i, f, g, o = np.split(z, 4, axis=-1)
    c_new = ra(f) * c + ra(i) * a(g)
    return ra(o) * a(c_new), c_new


def built_cell(units: int = 3, input_dim: int = 2, seed: int = 0, **kwargs) -> sl.LSTMCell:
    cell = sl.LSTMCell(units, dtype=torch.float64, **kwargs)
    cell.build((None, input_dim))
    rng = np.random.default_rng(seed)
    cell.set_weights([rng.uniform(-0.7, 0.7, w.shape) for w in cell.get_weights()])
    return cell


def test_output_is_the_new_h_object() -> None:
    cell = sl.LSTMCell(4)
    out, state = cell(torch.randn(2, 3), cell.get_initial_state(batch_size=2))
    assert out is state[0]
    assert len(state) == 2


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize(("activation", "recurrent_activation", "a", "ra"), [
    ("tanh", "sigmoid", np.tanh, _sigmoid),
    ("relu", "hard_sigmoid", lambda v: np.maximum(v, 0.0), _hard_sigmoid),
    (None, "linear", lambda v: v, lambda v: v),
])
@pytest.mark.parametrize("use_bias", [True, False])
def test_step_matches_the_keras_formula(implementation, activation, recurrent_activation, a, ra, use_bias) -> None:
    cell = built_cell(activation=activation, recurrent_activation=recurrent_activation,
                      implementation=implementation, use_bias=use_bias)
    rng = np.random.default_rng(1)
    x, h, c = rng.normal(size=(4, 2)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    out, (h_new, c_new) = cell(torch.from_numpy(x), [torch.from_numpy(h), torch.from_numpy(c)])
    weights = cell.get_weights()
    expected_h, expected_c = reference_step(x, h, c, weights[0], weights[1], weights[2] if use_bias else None, a, ra)
    np.testing.assert_allclose(h_new.detach().numpy(), expected_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c_new.detach().numpy(), expected_c, rtol=1e-12, atol=1e-12)


def test_cell_protocol_attributes() -> None:
    cell = sl.LSTMCell(5)
    assert cell.state_size == [5, 5]
    assert cell.output_size == 5
    h, c = cell.get_initial_state(batch_size=3)
    assert h.shape == c.shape == (3, 5)
    assert h.dtype == torch.float32 and not h.any() and not c.any()
    h64, _ = cell.get_initial_state(batch_size=2, dtype=torch.float64, device="cpu")
    assert h64.dtype == torch.float64 and h64.device.type == "cpu"


def test_initial_state_follows_layer_dtype() -> None:
    cell = sl.LSTMCell(2, dtype="float64")
    assert cell.get_initial_state(batch_size=1)[0].dtype == torch.float64
    cell = sl.LSTMCell(2).to(torch.float64)
    assert cell.get_initial_state(batch_size=1)[0].dtype == torch.float64


@pytest.mark.parametrize("input_shape", [7, (None, 7), (4, 7), [None, 7]])
def test_build_creates_keras_shaped_weights(input_shape) -> None:
    cell = sl.LSTMCell(3)
    assert not cell.built and cell.get_weights() == []
    cell.build(input_shape)
    assert cell.built and cell.input_dim == 7
    assert [tuple(w.shape) for w in cell.get_weights()] == [(7, 12), (3, 12), (12,)]
    assert [name for name, _ in cell.named_parameters()] == ["kernel", "recurrent_kernel", "bias"]


def test_first_call_builds_and_a_second_build_is_a_no_op() -> None:
    cell = sl.LSTMCell(3)
    cell(torch.zeros(2, 4), cell.get_initial_state(2))
    before = cell.get_weights()
    cell.build((None, 4))
    for a, b in zip(before, cell.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_implementations_give_the_same_numbers() -> None:
    one, two = built_cell(implementation=1), built_cell(implementation=2)
    x, state = torch.randn(4, 2, dtype=torch.float64), [torch.randn(4, 3, dtype=torch.float64) for _ in range(2)]
    torch.testing.assert_close(one(x, state), two(x, state), rtol=1e-12, atol=1e-12)


def test_recurrent_dropout_forces_implementation_1() -> None:
    assert sl.LSTMCell(2, recurrent_dropout=0.1, implementation=2).implementation == 1
    assert sl.LSTMCell(2, dropout=0.1, implementation=2).implementation == 2


def test_numpy_inputs_and_states() -> None:
    cell = built_cell()
    x = np.random.default_rng(0).normal(size=(2, 2))
    out, _ = cell(x, [np.zeros((2, 3)), np.zeros((2, 3))])
    expected, _ = cell(torch.from_numpy(x), cell.get_initial_state(2))
    torch.testing.assert_close(out, expected)


def test_callable_activations_are_accepted() -> None:
    cell = built_cell(activation=torch.nn.functional.relu, recurrent_activation=activations.get("hard_sigmoid"))
    reference = built_cell(activation="relu", recurrent_activation="hard_sigmoid")
    x, state = torch.randn(3, 2, dtype=torch.float64), reference.get_initial_state(3)
    torch.testing.assert_close(cell(x, state)[0], reference(x, state)[0])


def test_gradients_reach_weights_inputs_and_states() -> None:
    cell = built_cell()
    x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    h, c = (torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out, (_, c_new) = cell(x, [h, c])
    (out.sum() + c_new.sum()).backward()
    for tensor in (x, h, c, cell.kernel, cell.recurrent_kernel, cell.bias):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
