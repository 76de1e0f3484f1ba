"""RNN: any protocol cell over a sequence with Keras mask, go_backwards, stateful and return_state rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_helpers import assert_all_close, make_lstm, random_weights

import streamlstm as sl


class SumCell(torch.nn.Module):
    """A user-written cell with one state: ``h' = tanh(x @ w + h)``; no ``training`` argument."""

    state_size = 3
    output_size = 3

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64).view(2, 3))

    def forward(self, inputs, states):
        h = torch.tanh(inputs @ self.w + states[0])
        return h, [h]


class CountingCell:
    """A plain object (not a Module) with a ``call`` method: output = state + x, and it records ``training``."""

    state_size = [2]

    def __init__(self) -> None:
        self.seen_training: list[bool] = []

    def call(self, inputs, states, training=None):
        self.seen_training.append(training)
        new = states[0] + inputs
        return new, [new]


def reference_loop(cell_fn, x, state, mask=None, zero_output_for_mask=False):
    """The Keras loop written plainly, for one-state cells."""
    outputs, prev = [], torch.zeros_like(state)
    for t in range(x.shape[1]):
        out, new = cell_fn(x[:, t], state)
        if mask is None:
            prev, state = out, new
        else:
            keep = mask[:, t, None]
            prev = torch.where(keep, out, torch.zeros_like(out) if zero_output_for_mask else prev)
            state = torch.where(keep, new, state)
        outputs.append(prev)
    return torch.stack(outputs, 1), state


def test_user_module_cell_in_rnn() -> None:
    cell = SumCell()
    layer = sl.RNN(cell, return_sequences=True, return_state=True)
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out, h = layer(x, mask=mask)

    def step(x_t, h):
        new = torch.tanh(x_t @ cell.w + h)
        return new, new

    expected_out, expected_h = reference_loop(step, x, torch.zeros(3, 3, dtype=torch.float64), mask)
    assert_all_close([out, h], [expected_out, expected_h], rtol=1e-12, atol=1e-12)
    assert layer.last_path == "generic"
    # The cell's parameters belong to the layer.
    assert [name for name, _ in layer.named_parameters()] == ["cell.w"]


def test_plain_object_cell_with_call_gets_training_flag() -> None:
    cell = CountingCell()
    layer = sl.RNN(cell, return_sequences=True, return_state=True)
    x = torch.ones(2, 4, 2)
    out, state = layer(x, training=True)
    torch.testing.assert_close(out[:, -1], torch.full((2, 2), 4.0))
    torch.testing.assert_close(state, torch.full((2, 2), 4.0))
    assert cell.seen_training == [True] * 4
    layer.eval()
    layer(x)
    assert cell.seen_training[-1] is False


def test_cell_with_get_initial_state_is_used() -> None:
    class OnesStart(CountingCell):
        def get_initial_state(self, batch_size, dtype, device):
            return [torch.ones(batch_size, 2, dtype=dtype, device=device)]

    out = sl.RNN(OnesStart())(torch.ones(2, 3, 2))
    torch.testing.assert_close(out, torch.full((2, 2), 4.0))


def test_rnn_of_lstm_cell_builds_and_delegates_weights() -> None:
    layer = sl.RNN(sl.LSTMCell(4))
    assert layer.get_weights() == []
    layer.build((None, None, 3))
    assert [w.shape for w in layer.get_weights()] == [(3, 16), (4, 16), (16,)]
    weights = random_weights(layer)
    for got, expected in zip(layer.cell.get_weights(), weights):
        np.testing.assert_array_equal(got, expected)


def test_mask_semantics_by_hand() -> None:
    """Masked steps keep the states and repeat the previous output, zeros before the first real step."""
    layer = make_lstm(2, 1, return_sequences=True, return_state=True)
    x = torch.randn(1, 5, 1)
    h0, c0 = torch.full((1, 2), 0.5), torch.full((1, 2), -0.5)
    mask = torch.tensor([[False, True, False, True, False]])
    out, h, c = layer(x, mask=mask, initial_state=[h0, c0])
    real, h_real, c_real = make_lstm(2, 1, return_sequences=True, return_state=True)(
        x[:, [1, 3]], initial_state=[h0, c0])
    torch.testing.assert_close(out[:, 0], torch.zeros(1, 2))  # zeros even with a non-zero initial state
    torch.testing.assert_close(out[:, 1], real[:, 0])
    torch.testing.assert_close(out[:, 2], real[:, 0])
    torch.testing.assert_close(out[:, 3], real[:, 1])
    torch.testing.assert_close(out[:, 4], real[:, 1])
    assert_all_close([h, c], [h_real, c_real])

    layer.zero_output_for_mask = True
    out_zero, _, _ = layer(x, mask=mask, initial_state=[h0, c0])
    torch.testing.assert_close(out_zero, torch.where(mask[..., None], out, torch.zeros_like(out)))

    # The last output is the output of the last step after these rules.
    for zero_output_for_mask in (False, True):
        last = make_lstm(2, 1, zero_output_for_mask=zero_output_for_mask)
        with sl.layers.force_generic():
            generic_last = last(x, mask=mask, initial_state=[h0, c0])
        fused_last = last(x, mask=mask, initial_state=[h0, c0])
        expected = torch.zeros(1, 2) if zero_output_for_mask else real[:, 1]
        torch.testing.assert_close(fused_last, expected)
        torch.testing.assert_close(generic_last, expected)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_fully_masked_row_outputs_zeros_and_keeps_initial_state(return_sequences) -> None:
    layer = make_lstm(3, 2, return_sequences=return_sequences, return_state=True)
    x = torch.randn(2, 4, 2)
    mask = torch.tensor([[True, True, False, True], [False] * 4])
    h0, c0 = torch.randn(2, 3), torch.randn(2, 3)
    out, h, c = layer(x, mask=mask, initial_state=[h0, c0])
    assert not out[1].any()
    torch.testing.assert_close(h[1], h0[1])
    torch.testing.assert_close(c[1], c0[1])


def test_return_state_without_mask_output_is_h() -> None:
    out, h, c = make_lstm(3, 2, return_state=True)(torch.randn(2, 4, 2))
    torch.testing.assert_close(out, h)
    assert c.shape == (2, 3)


def test_go_backwards_returns_outputs_in_processing_order() -> None:
    forwards = make_lstm(3, 2, return_sequences=True)
    backwards = make_lstm(3, 2, return_sequences=True, go_backwards=True)
    x = torch.randn(2, 4, 2)
    torch.testing.assert_close(backwards(x), forwards(x.flip(1)))
    torch.testing.assert_close(make_lstm(3, 2, go_backwards=True)(x), forwards(x.flip(1))[:, -1])


def test_time_major_mask_is_time_by_batch() -> None:
    layer = make_lstm(3, 2, return_sequences=True, time_major=True)
    x = torch.randn(4, 2, 2)
    mask = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    out = layer(x, mask=mask)
    assert out.shape == (4, 2, 3)
    expected = make_lstm(3, 2, return_sequences=True)(x.transpose(0, 1), mask=mask.T)
    torch.testing.assert_close(out, expected.transpose(0, 1))


@pytest.mark.parametrize("mask", [
    np.array([[1, 0, 1], [1, 1, 0]]),
    np.array([[True, False, True], [True, True, False]]),
    torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),
    np.array([[1, 0, 1], [1, 1, 0]])[..., None],
])
def test_mask_forms(mask) -> None:
    layer = make_lstm(2, 2, return_sequences=True)
    x = torch.randn(2, 3, 2)
    expected = layer(x, mask=torch.tensor([[True, False, True], [True, True, False]]))
    torch.testing.assert_close(layer(x, mask=mask), expected)


# -- StackedRNNCells ---------------------------------------------------------------------------------

def stacked_rnn(**kwargs) -> sl.RNN:
    layer = sl.RNN([sl.LSTMCell(4), sl.LSTMCell(3)], **kwargs)
    assert isinstance(layer.cell, sl.StackedRNNCells)
    layer.build((None, None, 2))
    random_weights(layer)
    return layer


def test_stacked_cells_nest_return_state() -> None:
    layer = stacked_rnn(return_state=True)
    out, s0, s1 = layer(torch.randn(2, 5, 2))
    assert [t.shape for t in s0] == [(2, 4), (2, 4)]
    assert [t.shape for t in s1] == [(2, 3), (2, 3)]
    torch.testing.assert_close(out, s1[0])


def test_stacked_cells_equal_two_stacked_layers() -> None:
    layer = stacked_rnn(return_sequences=True, return_state=True)
    weights = layer.get_weights()
    first, second = make_lstm(4, 2, return_sequences=True, return_state=True), make_lstm(
        3, 4, return_sequences=True, return_state=True)
    first.set_weights(weights[:3])
    second.set_weights(weights[3:])
    x = torch.randn(3, 6, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 1, 0], [0] * 6], dtype=torch.bool)
    out, s0, s1 = layer(x, mask=mask)
    mid, h0, c0 = first(x, mask=mask)
    top, h1, c1 = second(mid, mask=mask)
    assert_all_close([s0, s1], [[h0, c0], [h1, c1]])
    # Per step the stack's output is the top cell's output, with the mask rules applied once.
    real = mask[..., None]
    torch.testing.assert_close(out * real, top * real)


def test_stacked_initial_state_nested_or_flat() -> None:
    layer = stacked_rnn(return_state=True)
    x = torch.randn(2, 3, 2)
    nested = [[torch.randn(2, 4), torch.randn(2, 4)], [torch.randn(2, 3), torch.randn(2, 3)]]
    flat = [t for pair in nested for t in pair]
    assert_all_close(layer(x, initial_state=nested), layer(x, initial_state=flat))


def test_stacked_get_initial_state_and_weights_order() -> None:
    stack = sl.StackedRNNCells([sl.LSTMCell(4), sl.LSTMCell(3)])
    assert stack.state_size == [[4, 4], [3, 3]]
    assert stack.output_size == 3
    state = stack.get_initial_state(batch_size=2)
    assert [[tuple(t.shape) for t in cell] for cell in state] == [[(2, 4), (2, 4)], [(2, 3), (2, 3)]]
    stack.build((None, 5))
    assert [w.shape for w in stack.get_weights()] == [(5, 16), (4, 16), (16,), (4, 12), (3, 12), (12,)]
    out, new = stack(torch.randn(2, 5), state)
    assert out is new[1][0]


def test_stacked_cells_accept_a_user_cell() -> None:
    layer = sl.RNN([sl.LSTMCell(2), SumCell().float()], return_state=True)
    out, (h, c), s = layer(torch.randn(2, 4, 2))   # an int state_size: a bare tensor, as Keras
    assert out.shape == (2, 3) and h.shape == (2, 2) and s.shape == (2, 3)


# -- stateful ------------------------------------------------------------------------------------------

def test_stateful_carries_states_and_resets() -> None:
    layer = make_lstm(3, 2, stateful=True, return_state=True)
    reference = make_lstm(3, 2, return_state=True)
    x1, x2 = torch.randn(2, 3, 2), torch.randn(2, 4, 2)
    assert layer.states is None   # built without a batch size
    _, h1, c1 = layer(x1)
    assert_all_close(layer.states, [h1, c1])
    assert not any(s.requires_grad for s in layer.states)
    assert_all_close(layer(x2), reference(x2, initial_state=[h1, c1]))

    layer.reset_states()
    assert_all_close(layer(x1), reference(x1))

    h, c = torch.randn(2, 3), torch.randn(2, 3)
    layer.reset_states([h, c])
    assert_all_close(layer.states, [h, c])
    assert_all_close(layer(x1), reference(x1, initial_state=[h, c]))


def test_stateful_explicit_initial_state_wins() -> None:
    """Keras 3 rule (documented): an explicit initial_state overrides the stored state."""
    layer = make_lstm(3, 2, stateful=True, return_state=True)
    reference = make_lstm(3, 2, return_state=True)
    x = torch.randn(2, 3, 2)
    layer(x)
    start = [torch.randn(2, 3), torch.randn(2, 3)]
    result = layer(x, initial_state=start)
    assert_all_close(result, reference(x, initial_state=start))
    assert_all_close(layer.states, result[1:])


def test_stateful_batch_size_fixed_by_build() -> None:
    layer = sl.LSTM(3, stateful=True)
    layer.build((4, None, 2))
    with pytest.raises(sl.errors.StateError, match="batch size must be 4.*got 2"):
        layer(torch.randn(2, 3, 2))
    layer(torch.randn(4, 3, 2))


def test_stateful_go_backwards_reverses_each_chunk() -> None:
    layer = make_lstm(3, 2, stateful=True, go_backwards=True, return_state=True)
    reference = make_lstm(3, 2, return_state=True)
    x1, x2 = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    _, h, c = layer(x1)
    assert_all_close(layer(x2), reference(x2.flip(1), initial_state=[h, c]))


def test_stacked_stateful_states_are_nested() -> None:
    layer = sl.RNN([sl.LSTMCell(4), sl.LSTMCell(3)], stateful=True)
    layer(torch.randn(2, 3, 2))
    assert [[tuple(t.shape) for t in cell] for cell in layer.states] == [[(2, 4), (2, 4)], [(2, 3), (2, 3)]]
    layer.reset_states([[torch.ones(2, 4), torch.ones(2, 4)], [torch.ones(2, 3), torch.ones(2, 3)]])
    assert all(bool((t == 1).all()) for cell in layer.states for t in cell)


def test_run_sequences_initial_output_replaces_leading_zeros() -> None:
    """The stream runtime's entry point: masked steps before the first real one repeat initial_output."""
    layer = make_lstm(3, 2, return_sequences=True)
    x = torch.randn(2, 4, 2)
    mask = torch.tensor([[False, False, True, True], [False, False, False, False]])
    start = [torch.zeros(2, 3), torch.zeros(2, 3)]
    initial_output = torch.randn(2, 3)
    fused, fused_last, _ = layer.run_sequences(x, mask, start, initial_output=initial_output)
    with sl.layers.force_generic():
        generic, generic_last, _ = layer.run_sequences(x, mask, start, initial_output=initial_output)
    assert_all_close([fused, fused_last], [generic, generic_last])
    torch.testing.assert_close(fused[:, 0], initial_output)
    torch.testing.assert_close(fused[1], initial_output[1].expand(4, 3))
