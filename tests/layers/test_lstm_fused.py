"""The fused path: when it runs, that it matches torch.nn.LSTM and the generic loop for every mask."""

from __future__ import annotations

import pytest
import torch
from layer_helpers import MASK_KINDS, assert_all_close, call_both, make_lstm, make_mask, random_weights

import streamlstm as sl
from streamlstm.layers import force_generic, fused_lstm
from streamlstm.layers.fused import fused_lstm_cut
from streamlstm.layers.kernels import native_sequence


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_every_mask_takes_the_fused_path_with_generic_numbers(kind, return_sequences, zero_output_for_mask) -> None:
    layer = make_lstm(5, 3, return_sequences=return_sequences, return_state=True,
                      zero_output_for_mask=zero_output_for_mask)
    x = torch.randn(6, 9, 3)
    mask = make_mask(kind, 6, 9, seed=3)
    state = [torch.randn(6, 5), torch.randn(6, 5)]
    fused, generic = call_both(layer, x, mask=mask, initial_state=state)
    assert_all_close(fused, generic)


def test_matches_torch_nn_lstm_without_mask() -> None:
    layer = make_lstm(4, 3, return_sequences=True, return_state=True)
    kernel, recurrent_kernel, bias = (torch.from_numpy(w) for w in layer.get_weights())
    reference = torch.nn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(kernel.T)
        reference.weight_hh_l0.copy_(recurrent_kernel.T)
        reference.bias_ih_l0.copy_(bias)
        reference.bias_hh_l0.zero_()
    x, h0, c0 = torch.randn(2, 7, 3), torch.randn(2, 4), torch.randn(2, 4)
    out, h, c = layer(x, initial_state=[h0, c0])
    expected, (h_ref, c_ref) = reference(x, (h0[None], c0[None]))
    assert_all_close([out, h, c], [expected, h_ref[0], c_ref[0]])


def test_fused_lstm_function_direct() -> None:
    """The kernel adapter on its own: outputs and states equal the generic loop on one left-padded row."""
    layer = make_lstm(3, 2, return_sequences=True, return_state=True)
    x = torch.randn(2, 5, 2)
    mask = torch.tensor([[False, False, True, True, True], [True, False, True, False, False]])
    h0, c0 = torch.zeros(2, 3), torch.zeros(2, 3)
    outputs, last, (h, c) = fused_lstm(x, mask, h0, c0, layer.kernel, layer.recurrent_kernel, layer.bias)
    with force_generic():
        expected, h_ref, c_ref = layer(x, mask=mask)
    assert_all_close([outputs, last, h, c], [expected, expected[:, -1], h_ref, c_ref])


@pytest.mark.parametrize(("kwargs", "training", "path"), [
    ({}, False, "fused"),
    ({}, True, "fused"),
    ({"use_bias": False}, False, "fused"),
    ({"dropout": 0.3}, True, "fused"),                      # input dropout applied before the kernel
    ({"dropout": 0.3, "implementation": 1}, True, "generic"),  # four input masks: generic loop
    ({"dropout": 0.3, "implementation": 1}, False, "fused"),
    ({"recurrent_dropout": 0.3}, True, "generic"),
    ({"recurrent_dropout": 0.3}, False, "fused"),
    ({"unroll": True}, False, "generic"),
    ({"activation": "relu"}, False, "generic"),
    ({"recurrent_activation": "hard_sigmoid"}, False, "generic"),
    ({"activation": torch.tanh, "recurrent_activation": torch.sigmoid}, False, "fused"),
])
def test_which_path_runs(kwargs, training, path) -> None:
    layer = sl.LSTM(3, **kwargs)
    layer(torch.randn(2, 4, 2), mask=torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]], dtype=torch.bool),
          training=training)
    assert layer.last_path == path
    assert layer.fused_eligible(training) is (path == "fused")


def test_force_generic_is_scoped() -> None:
    layer = sl.LSTM(2)
    x = torch.randn(1, 3, 2)
    with force_generic():
        with force_generic():
            layer(x)
            assert layer.last_path == "generic"
        layer(x)
        assert layer.last_path == "generic"
    layer(x)
    assert layer.last_path == "fused"


def test_rnn_of_lstm_cell_reports_generic() -> None:
    layer = sl.RNN(sl.LSTMCell(2))
    layer(torch.randn(1, 3, 2))
    assert layer.last_path == "generic"


def test_float64_parity_is_tight() -> None:
    layer = make_lstm(6, 4, dtype=torch.float64, return_sequences=True, return_state=True)
    x = torch.randn(5, 20, 4, dtype=torch.float64)
    fused, generic = call_both(layer, x, mask=make_mask("holes", 5, 20, seed=1))
    assert_all_close(fused, generic, rtol=1e-13, atol=1e-14)


def test_input_dropout_on_the_fused_path_equals_the_generic_loop() -> None:
    """Implementation 2 with input dropout stays fused; with the same seed it draws the generic loop's mask."""
    x = torch.randn(4, 6, 3)
    mask = make_mask("holes", 4, 6, seed=2)
    results = []
    for generic in (False, True):
        layer = sl.LSTM(5, dropout=0.4, seed=11, return_sequences=True, return_state=True)
        layer.build((None, None, 3))
        random_weights(layer, seed=1)
        if generic:
            with force_generic():
                results.append(layer(x, mask=mask, training=True))
        else:
            results.append(layer(x, mask=mask, training=True))
        assert layer.last_path == ("generic" if generic else "fused")
    assert_all_close(*results)


def test_gradients_flow_through_the_fused_path_with_a_mask() -> None:
    layer = make_lstm(3, 2)
    x = torch.randn(3, 5, 2, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]], dtype=torch.bool)
    layer(x, mask=mask).sum().backward()
    assert layer.last_path == "fused"
    for param in layer.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0
    # A masked step does not touch the state, so its input gets no gradient.
    assert not x.grad[~mask].any()
    assert x.grad[mask].abs().sum(-1).min() > 0


def test_long_sequence_with_large_batch() -> None:
    layer = make_lstm(8, 4, return_sequences=True, return_state=True)
    x = torch.randn(32, 60, 4)
    fused, generic = call_both(layer, x, mask=make_mask("right_padded", 32, 60, seed=5))
    assert_all_close(fused, generic, rtol=1e-5, atol=2e-6)


def test_to_torch_lstm_gives_the_same_numbers_and_refuses_other_activations() -> None:
    layer = sl.LSTM(5, return_sequences=True, input_shape=(None, 3))
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        torch.testing.assert_close(layer.to_torch_lstm()(x)[0], layer(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(sl.errors.ConfigError, match="recurrent_activation 'sigmoid'"):
        sl.LSTM(5, activation="relu", input_shape=(None, 3)).to_torch_lstm()
    with pytest.raises(sl.errors.ConfigError, match="needs a built layer"):
        sl.LSTM(5).to_torch_lstm()


@pytest.mark.parametrize("kind", ["right-padded", "holes"])
def test_nan_at_masked_steps_never_reaches_the_numbers(kind: str) -> None:
    """Masked steps often hold NaN (missing readings); like the generic loop, the fused path ignores them."""
    torch.manual_seed(3)
    layer = sl.LSTM(5, return_sequences=True, return_state=True, input_shape=(None, 3))
    x = torch.randn(4, 8, 3)
    mask = torch.ones(4, 8, dtype=torch.bool)
    if kind == "right-padded":
        mask[0, 5:] = mask[2, 3:] = False
    else:
        mask[0, 2] = mask[1, 0] = mask[3, 4:6] = False
    mask[:, -1] = True if kind == "holes" else mask[:, -1]
    x[~mask] = float("nan")
    with torch.no_grad():
        fused = layer(x, mask=mask)
        assert layer.last_path == "fused"
        with force_generic():
            generic = layer(x, mask=mask)
    for a, b in zip(fused, generic):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize(("rows", "batch"), [(23, 5), (21, 5), (25, 5), (3, 5), (5, 5), (24, 5), (7, 1)])
def test_a_time_major_block_cut_anywhere_matches_its_sequences_run_apart(rows, batch, grad) -> None:
    """fused_lstm_cut: sequence b has the rows t * batch + b; the first ones one step more than the others
    (with gradients too: they reach the weights and the inputs through outputs and final states)."""
    torch.manual_seed(rows)
    layer = make_lstm(4, 3)
    cell = layer.cell
    x, h0, c0 = torch.randn(rows, 3, requires_grad=grad), torch.randn(batch, 4), torch.randn(batch, 4)
    with torch.set_grad_enabled(grad):
        out, h, c = fused_lstm_cut(x, batch, h0, c0, cell.kernel, cell.recurrent_kernel, cell.bias)
    if grad:
        (out.sum() + h.square().sum() + c.sum()).backward()
        assert cell.kernel.grad.abs().sum() > 0 and torch.isfinite(cell.recurrent_kernel.grad).all()
        assert x.grad is not None and x.grad.abs().sum() > 0
        out, h, c, x = out.detach(), h.detach(), c.detach(), x.detach()
    assert out.shape == (rows, 4)
    for b in range(batch):
        mine = torch.tensor(range(b, rows, batch), dtype=torch.long)
        if not len(mine):   # no step: the initial states
            assert_all_close([h[b], c[b]], [h0[b], c0[b]])
            continue
        with torch.no_grad():
            expected, h_b, c_b = native_sequence(x[mine][None], h0[b:b + 1], c0[b:b + 1], cell.kernel,
                                                 cell.recurrent_kernel, cell.bias)
        assert_all_close([out[mine], h[b], c[b]], [expected[0], h_b[0], c_b[0]])


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize(("rows", "batch"), [(23, 5), (21, 5), (25, 5), (5, 5), (24, 5), (7, 1), (1000, 7)])
def test_a_cut_blocks_finals_in_the_last_rows_order_are_its_finals_rotated(rows, batch, grad) -> None:
    """last_rows=True: row i of h_n and c_n is sequence (rows + i) % batch's, bit for bit the sequence-order
    finals; h_n is the outputs' last batch rows themselves (a view), the outputs are unchanged."""
    torch.manual_seed(rows)
    cell = make_lstm(4, 3).cell
    x, h0, c0 = torch.randn(rows, 3, requires_grad=grad), torch.randn(batch, 4), torch.randn(batch, 4)
    with torch.set_grad_enabled(grad):
        out, h, c = fused_lstm_cut(x, batch, h0, c0, cell.kernel, cell.recurrent_kernel, cell.bias)
        out_r, h_r, c_r = fused_lstm_cut(x, batch, h0, c0, cell.kernel, cell.recurrent_kernel, cell.bias, None, True)
    order = (rows + torch.arange(batch)) % batch
    assert torch.equal(out_r, out) and torch.equal(h_r, h[order]) and torch.equal(c_r, c[order])
    assert torch.equal(h_r, out_r[rows - batch:])
    if rows % batch:   # cut inside a step: the view, instead of the short sequences' rows copied into h
        assert h_r.data_ptr() == out_r[rows - batch:].data_ptr()
    if grad:
        (out_r.sum() + h_r.square().sum() + c_r.sum()).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_padding_steps_of_a_cut_block_keep_c_bit_for_bit() -> None:
    """The shorter sequences' c after the padded last step is exactly the c the kernel reached one step
    earlier (the inert feature saturates the gates to exactly 0 and 1)."""
    torch.manual_seed(1)
    layer = make_lstm(4, 3)
    cell = layer.cell
    rows, batch = 23, 5   # 5 steps; sequences 3 and 4 have 4, then a padding step
    x, h0, c0 = torch.randn(rows, 3), torch.randn(batch, 4), torch.randn(batch, 4)
    with torch.no_grad():
        _, _, c = fused_lstm_cut(x, batch, h0, c0, cell.kernel, cell.recurrent_kernel, cell.bias)
        # 19 rows: sequence 3's 4 steps end the block (sequence 4 is padded there): the same kernel math
        _, _, c_before = fused_lstm_cut(x[:19], batch, h0, c0, cell.kernel, cell.recurrent_kernel, cell.bias)
    assert torch.equal(c[3], c_before[3])
