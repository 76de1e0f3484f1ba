"""Property tests (hypothesis): the fused and generic paths, chunked stateful calls, go_backwards.

Every property runs on random shapes and masks, including fully masked rows, left padding and holes.
The comparisons run in float64 so that "equal to float rounding" can be checked tightly.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_helpers import assert_all_close, flatten, make_lstm, make_mask

import streamlstm as sl
from streamlstm.layers import force_generic

PROPERTY = settings(max_examples=30, deadline=None)
F64 = {"rtol": 1e-10, "atol": 1e-12}


@st.composite
def masks(draw: Any, batch: int, time: int) -> torch.Tensor | None:
    """None, a structured mask, or an arbitrary one (which may have fully masked rows)."""
    kind = draw(st.sampled_from(["none", "right_padded", "left_padded", "holes", "fully_masked_row", "all_masked",
                                 "arbitrary"]))
    if kind != "arbitrary":
        return make_mask(kind, batch, time, seed=draw(st.integers(0, 2**16)))
    rows = draw(st.lists(st.lists(st.booleans(), min_size=time, max_size=time), min_size=batch, max_size=batch))
    return torch.tensor(rows, dtype=torch.bool)


@st.composite
def cases(draw: Any) -> dict[str, Any]:
    batch, time = draw(st.integers(1, 5)), draw(st.integers(1, 7))
    return {
        "batch": batch,
        "time": time,
        "features": draw(st.integers(1, 4)),
        "units": draw(st.integers(1, 5)),
        "mask": draw(masks(batch, time)),
        "seed": draw(st.integers(0, 2**16)),
        "use_bias": draw(st.booleans()),
        "go_backwards": draw(st.booleans()),
        "zero_output_for_mask": draw(st.booleans()),
        "return_sequences": draw(st.booleans()),
        "return_state": draw(st.booleans()),
        "initial_state": draw(st.booleans()),
    }


def _build(case: dict[str, Any], **overrides: Any) -> sl.LSTM:
    kwargs = {k: case[k] for k in ("use_bias", "go_backwards", "zero_output_for_mask", "return_sequences",
                                   "return_state")}
    kwargs.update(overrides)
    return make_lstm(case["units"], case["features"], weight_seed=case["seed"], dtype=torch.float64, **kwargs)


def _inputs(case: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    gen = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["batch"], case["time"], case["features"], dtype=torch.float64, generator=gen)
    state = None
    if case["initial_state"]:
        state = [torch.randn(case["batch"], case["units"], dtype=torch.float64, generator=gen) for _ in range(2)]
    return x, state


@PROPERTY
@given(cases())
def test_fused_equals_generic(case: dict[str, Any]) -> None:
    layer = _build(case)
    x, state = _inputs(case)
    fused = layer(x, mask=case["mask"], initial_state=state)
    assert layer.last_path == "fused"
    with force_generic():
        generic = layer(x, mask=case["mask"], initial_state=state)
    assert layer.last_path == "generic"
    assert_all_close(fused, generic, **F64)


@PROPERTY
@given(cases())
def test_fused_equals_rnn_of_lstm_cell(case: dict[str, Any]) -> None:
    """The LSTM layer (fused) and ``RNN(LSTMCell)`` (the cell called step by step) give the same numbers."""
    layer = _build(case)
    rnn = sl.RNN(sl.LSTMCell(case["units"], use_bias=case["use_bias"], dtype=torch.float64),
                 **{k: case[k] for k in ("go_backwards", "zero_output_for_mask", "return_sequences", "return_state")})
    rnn.build((None, None, case["features"]))
    rnn.set_weights(layer.get_weights())
    x, state = _inputs(case)
    assert_all_close(layer(x, mask=case["mask"], initial_state=state),
                     rnn(x, mask=case["mask"], initial_state=state), **F64)


@PROPERTY
@given(cases())
def test_gradients_agree_between_paths(case: dict[str, Any]) -> None:
    layer = _build(case, return_state=True)
    x, state = _inputs(case)
    state = state or [torch.zeros(case["batch"], case["units"], dtype=torch.float64) for _ in range(2)]
    gen = torch.Generator().manual_seed(case["seed"] + 1)

    def grads(generic: bool) -> list[torch.Tensor]:
        leaves = [x.clone().requires_grad_(), *(s.clone().requires_grad_() for s in state)]
        params = [p for _, p in layer.weight_list()]
        for p in params:
            p.grad = None
        if generic:
            with force_generic():
                result = layer(leaves[0], mask=case["mask"], initial_state=leaves[1:])
        else:
            result = layer(leaves[0], mask=case["mask"], initial_state=leaves[1:])
        # A fixed random projection of every returned tensor, so each element's gradient matters.
        loss = sum((t * torch.randn(t.shape, dtype=t.dtype, generator=gen.manual_seed(i))).sum()
                   for i, t in enumerate(flatten(result)))
        loss.backward()
        # Inputs that no real step uses may get no gradient at all on the fused path: that is zero.
        return [torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in leaves + params]

    fused = grads(generic=False)
    assert layer.last_path == "fused"
    assert_all_close(fused, grads(generic=True), **F64)


@PROPERTY
@given(cases(), st.booleans())
def test_go_backwards_equals_forward_on_reversed_inputs(case: dict[str, Any], generic: bool) -> None:
    backwards = _build(case, go_backwards=True)
    forwards = _build(case, go_backwards=False)
    x, state = _inputs(case)
    mask = case["mask"]
    reversed_mask = None if mask is None else mask.flip(1)
    with force_generic() if generic else contextlib.nullcontext():
        got = backwards(x, mask=mask, initial_state=state)
        expected = forwards(x.flip(1), mask=reversed_mask, initial_state=state)
    assert_all_close(got, expected, **F64)


@PROPERTY
@given(cases(), st.lists(st.integers(1, 6), min_size=1, max_size=4), st.booleans())
def test_stateful_chunks_equal_one_call(case: dict[str, Any], cuts: list[int], generic: bool) -> None:
    """Feeding a stateful layer any chunking of a sequence carries the same states as one call.

    Outputs agree at every step where the chunk has seen a real step; before a chunk's first real
    step Keras outputs zeros (the previous output starts at zeros in each call), not the last output of
    the previous call.
    """
    mask = case["mask"]
    whole = _build(case, stateful=True, return_sequences=True, return_state=True, go_backwards=False)
    chunked = _build(case, stateful=True, return_sequences=True, return_state=True, go_backwards=False)
    x, state = _inputs(case)
    if state is not None:
        whole.reset_states(state)
        chunked.reset_states(state)
    bounds = sorted({0, case["time"], *(c for c in np.cumsum(cuts) if c < case["time"])})
    with force_generic() if generic else contextlib.nullcontext():
        out, h, c = whole(x, mask=mask)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            piece_mask = None if mask is None else mask[:, start:stop]
            piece, h_piece, c_piece = chunked(x[:, start:stop], mask=piece_mask)
            seen = torch.ones(piece.shape[:2], dtype=torch.bool) if mask is None else piece_mask.cumsum(1) > 0
            if case["zero_output_for_mask"] and mask is not None:
                seen = piece_mask
            expected = torch.where(seen[..., None], out[:, start:stop], torch.zeros_like(piece))
            torch.testing.assert_close(piece, expected, **F64)
    assert_all_close([h_piece, c_piece], [h, c], **F64)
    assert_all_close(chunked.states, whole.states, **F64)


@PROPERTY
@given(cases())
def test_time_major_is_a_transpose(case: dict[str, Any]) -> None:
    batch_major = _build(case)
    time_major = _build(case, time_major=True)
    x, state = _inputs(case)
    mask = case["mask"]
    got = time_major(x.transpose(0, 1), mask=None if mask is None else mask.T, initial_state=state)
    expected = batch_major(x, mask=mask, initial_state=state)
    if case["return_sequences"]:
        if case["return_state"]:
            got[0] = got[0].transpose(0, 1)
        else:
            got = got.transpose(0, 1)
    assert_all_close(got, expected, **F64)


@PROPERTY
@given(cases())
def test_unroll_gives_the_same_numbers(case: dict[str, Any]) -> None:
    rolled, unrolled = _build(case), _build(case, unroll=True)
    x, state = _inputs(case)
    assert_all_close(unrolled(x, mask=case["mask"], initial_state=state),
                     rolled(x, mask=case["mask"], initial_state=state), **F64)
    assert unrolled.last_path == "generic"



@PROPERTY
@given(cases(), st.sampled_from([0.1, 0.5]))
def test_input_dropout_fused_equals_generic_with_the_same_seed(case: dict[str, Any], rate: float) -> None:
    """Training with input dropout (implementation 2) stays fused and draws the generic loop's mask."""
    x, state = _inputs(case)
    results = []
    for generic in (False, True):
        layer = _build(case, dropout=rate, seed=case["seed"])
        with force_generic() if generic else contextlib.nullcontext():
            results.append(layer(x, mask=case["mask"], initial_state=state, training=True))
        assert layer.last_path == ("generic" if generic else "fused")
    assert_all_close(*results, **F64)
