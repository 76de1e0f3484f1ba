"""Dropout as Keras does it: inverted, drawn once per call, per-gate masks in implementation 1.

The statistics are read through the layer itself: with linear activations and weights chosen so that
``h_t`` is a product of dropped inputs (or of the previous ``h``), each output element is a mask value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_helpers import assert_all_close, make_lstm

import streamlstm as sl

BATCH, TIME, UNITS = 400, 5, 50


def probe_layer(rate: float, implementation: int, *, gates: str = "g", layer_cls=sl.LSTM, **kwargs):
    """A linear LSTM whose output is the product of the dropped inputs of ``gates`` (kernel = identity).

    With ``x = 1``, the i and o gates at 1 and f at 0: ``h_t = c_t = i * g`` where a gate listed in
    ``gates`` is ``x * its input mask`` and the others are 1.
    """
    cell_kwargs = dict(activation="linear", recurrent_activation="linear", dropout=rate,
                       implementation=implementation, **kwargs)
    if layer_cls is sl.LSTM:
        layer = sl.LSTM(UNITS, return_sequences=True, **cell_kwargs)
    else:
        layer = sl.RNN(sl.LSTMCell(UNITS, **cell_kwargs), return_sequences=True)
    layer.build((None, None, UNITS))
    eye, zero = np.eye(UNITS, dtype=np.float32), np.zeros((UNITS, UNITS), np.float32)
    blocks = {gate: (eye if gate in gates else zero) for gate in "ifgo"}
    kernel = np.concatenate([blocks[g] for g in "ifgo"], axis=1)
    bias = np.concatenate([np.full(UNITS, 0.0 if g in gates or g == "f" else 1.0, np.float32) for g in "ifgo"])
    layer.set_weights([kernel, np.zeros((UNITS, 4 * UNITS), np.float32), bias])
    return layer


def ones() -> torch.Tensor:
    return torch.ones(BATCH, TIME, UNITS)


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("rate", [0.2, 0.5])
@pytest.mark.parametrize("layer_cls", [sl.LSTM, sl.RNN])
def test_input_dropout_kept_fraction_scaling_and_constant_over_time(implementation, rate, layer_cls) -> None:
    torch.manual_seed(0)
    out = probe_layer(rate, implementation, layer_cls=layer_cls)(ones(), training=True)
    values = out[:, 0].detach()
    kept = values != 0
    assert abs(kept.float().mean().item() - (1 - rate)) < 0.01
    torch.testing.assert_close(values[kept], torch.full_like(values[kept], 1 / (1 - rate)))
    # One mask per call, reused at every time step.
    torch.testing.assert_close(out, out[:, :1].expand_as(out))


@pytest.mark.parametrize("implementation", [1, 2])
def test_per_gate_masks_are_independent_only_in_implementation_1(implementation) -> None:
    """With ``h = i * g`` and both gates dropped, shared masks keep (1 - r) and independent ones (1 - r)^2."""
    rate = 0.5
    torch.manual_seed(1)
    out = probe_layer(rate, implementation, gates="ig")(ones(), training=True)[:, 0].detach()
    kept = (out != 0).float().mean().item()
    expected = (1 - rate) ** 2 if implementation == 1 else 1 - rate
    assert abs(kept - expected) < 0.01
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 1 / (1 - rate) ** 2))


def test_implementation_1_draws_four_different_input_masks() -> None:
    cell = sl.LSTMCell(UNITS, dropout=0.5, implementation=1)
    cell.build((None, UNITS))
    with torch.no_grad():
        cell.kernel.copy_(torch.eye(UNITS).repeat(1, 4))
    z = cell.project_inputs(torch.ones(BATCH, UNITS), training=True) - cell.bias
    blocks = z.detach().chunk(4, dim=-1)
    for a in range(4):
        for b in range(a + 1, 4):
            agreement = ((blocks[a] != 0) == (blocks[b] != 0)).float().mean().item()
            assert abs(agreement - 0.5) < 0.02  # independent fair coins agree half the time


def test_recurrent_dropout_mask_is_constant_over_time() -> None:
    """``h_t = h_{t-1} * m`` (x unused): a constant mask gives ``m^t``, a redrawn one loses more units."""
    rate = 0.3
    layer = sl.LSTM(UNITS, activation="linear", recurrent_activation="linear", recurrent_dropout=rate,
                    return_sequences=True, seed=3)
    layer.build((None, None, 1))
    eye, zero = np.eye(UNITS, dtype=np.float32), np.zeros((UNITS, UNITS), np.float32)
    bias = np.concatenate([np.ones(UNITS), np.zeros(UNITS), np.zeros(UNITS), np.ones(UNITS)]).astype(np.float32)
    layer.set_weights([np.zeros((1, 4 * UNITS), np.float32), np.concatenate([zero, zero, eye, zero], 1), bias])
    h0 = torch.ones(BATCH, UNITS)
    out = layer(torch.zeros(BATCH, TIME, 1), initial_state=[h0, torch.zeros(BATCH, UNITS)], training=True)
    assert layer.last_path == "generic"
    first = out[:, 0].detach()
    kept = first != 0
    assert abs(kept.float().mean().item() - (1 - rate)) < 0.01
    for t in range(TIME):
        expected = torch.where(kept, torch.tensor((1 / (1 - rate)) ** (t + 1)), torch.tensor(0.0))
        torch.testing.assert_close(out[:, t].detach(), expected)


@pytest.mark.parametrize("kwargs", [{"dropout": 0.5}, {"recurrent_dropout": 0.5},
                                    {"dropout": 0.3, "recurrent_dropout": 0.3, "implementation": 1}])
def test_dropout_inactive_when_not_training(kwargs) -> None:
    layer = make_lstm(4, 3, return_sequences=True, **kwargs)
    plain = make_lstm(4, 3, return_sequences=True)
    x = torch.randn(3, 5, 3)
    torch.testing.assert_close(layer(x, training=False), plain(x))
    assert not torch.allclose(layer(x, training=True), plain(x))


def test_training_none_follows_module_mode() -> None:
    layer = make_lstm(4, 3, return_sequences=True, dropout=0.5, recurrent_dropout=0.5)
    plain = make_lstm(4, 3, return_sequences=True)
    x = torch.randn(3, 5, 3)
    layer.train()
    assert not torch.allclose(layer(x), plain(x))
    layer.eval()
    torch.testing.assert_close(layer(x), plain(x))
    # The cell alone follows its own mode too.
    cell = layer.cell
    state = cell.get_initial_state(3)
    cell.train()
    assert not torch.allclose(cell(x[:, 0], state)[0], plain.cell(x[:, 0], state)[0])
    cell.eval()
    torch.testing.assert_close(cell(x[:, 0], state)[0], plain.cell(x[:, 0], state)[0])


@pytest.mark.parametrize("kwargs", [{"dropout": 0.4}, {"recurrent_dropout": 0.4},
                                    {"dropout": 0.4, "implementation": 1}])
def test_seed_makes_dropout_reproducible(kwargs) -> None:
    x = torch.randn(3, 5, 2)

    def run() -> list[torch.Tensor]:
        layer = sl.LSTM(4, seed=7, return_sequences=True, **kwargs)
        return [layer(x, training=True) for _ in range(2)]

    first, second = run(), run()
    assert_all_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])  # each call draws new masks


def test_without_seed_the_global_rng_decides() -> None:
    x = torch.randn(3, 5, 2)
    layer = make_lstm(4, 2, dropout=0.5)
    torch.manual_seed(5)
    a = layer(x, training=True)
    torch.manual_seed(5)
    torch.testing.assert_close(layer(x, training=True), a)


def test_gradients_with_dropout() -> None:
    layer = make_lstm(4, 2, dropout=0.3, recurrent_dropout=0.3)
    x = torch.randn(3, 5, 2, requires_grad=True)
    layer(x, training=True).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())
