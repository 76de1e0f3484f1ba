"""CutTable: the padded input table of fused_lstm_cut reused from call to call (same numbers, nothing
handed out changes later, a new table whenever autograd could keep it)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_helpers import make_lstm

from streamlstm.layers.fused import CutTable, fused_lstm_cut

UNITS, FEATURES = 4, 3


def _cut(x, batch, h0, c0, cell, table=None):
    return fused_lstm_cut(x, batch, h0, c0, cell.kernel, cell.recurrent_kernel, cell.bias, table)


@settings(max_examples=30, deadline=None)
@given(calls=st.lists(st.tuples(st.integers(1, 30), st.sampled_from([1, 4, 5]), st.booleans()),
                      min_size=1, max_size=8))
def test_a_reused_table_gives_the_numbers_of_a_fresh_one_and_earlier_results_stay(calls) -> None:
    """Calls of any sizes through one table (same padded shape with another row count, other shapes,
    inference mode or not) equal calls without one, bit for bit; results handed out before are not
    changed by later calls."""
    torch.manual_seed(len(calls))
    cell = make_lstm(UNITS, FEATURES).cell
    table, kept = CutTable(), []
    for rows, batch, inference in calls:
        x, h0, c0 = torch.randn(rows, FEATURES), torch.randn(batch, UNITS), torch.randn(batch, UNITS)
        with torch.inference_mode(inference):
            got = _cut(x, batch, h0, c0, cell, table)
            want = _cut(x, batch, h0, c0, cell)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
        kept.append(([t.clone() for t in got], got))
    for copies, handed_out in kept:
        for a, b in zip(copies, handed_out):
            assert torch.equal(a, b)


def test_the_buffer_is_reused_while_autograd_is_off_and_rewritten_when_the_row_count_changes() -> None:
    table = CutTable()
    x = torch.arange(21.0).view(7, 3)
    with torch.no_grad():
        first = table.fill(x, 10)
        second = table.fill(x[:5] + 100, 10)   # same shape: the same buffer, rows 5..9 padding again
    assert second.data_ptr() == first.data_ptr()
    expected = torch.zeros(10, 4)
    expected[:5, :3], expected[5:, 3] = x[:5] + 100, 1
    assert torch.equal(second, expected)
    with torch.no_grad():
        third = table.fill(x, 10)
    expected[:7, :3], expected[5:7, 3] = x, 0
    assert torch.equal(third, expected)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_with_autograd_on_every_call_gets_a_new_table(requires_grad) -> None:
    """A backward may keep the kernel's inputs: a later call must not overwrite them."""
    table = CutTable()
    x = torch.randn(7, 3, requires_grad=requires_grad)
    first = table.fill(x, 10)
    second = table.fill(x, 10)
    assert first.data_ptr() != second.data_ptr()
    assert torch.equal(first, second)


def test_gradients_through_a_reused_table_equal_those_of_a_fresh_one() -> None:
    torch.manual_seed(3)
    cell = make_lstm(UNITS, FEATURES).cell
    table = CutTable()
    grads = []
    for use in (table, None):
        x = torch.randn(23, FEATURES, generator=torch.Generator().manual_seed(1)).requires_grad_()
        h0, c0 = torch.zeros(5, UNITS), torch.zeros(5, UNITS)
        out, h, c = _cut(x, 5, h0, c0, cell, use)
        _cut(torch.randn(23, FEATURES), 5, h0, c0, cell, use)   # another call before the backward
        (out.sum() + h.sum() + c.sum()).backward()
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_gradients_reach_the_inputs_of_a_cut_block() -> None:
    """x requiring grad: d(sum of outputs)/dx is nonzero on every real row (padding is not x)."""
    torch.manual_seed(4)
    cell = make_lstm(UNITS, FEATURES).cell
    x = torch.randn(23, FEATURES, requires_grad=True)
    out, _, _ = _cut(x, 5, torch.zeros(5, UNITS), torch.zeros(5, UNITS), cell, CutTable())
    out.sum().backward()
    assert (x.grad.abs().sum(dim=1) > 0).all()
