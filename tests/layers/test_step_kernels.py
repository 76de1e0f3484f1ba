"""The inference step's kernels (streamlstm/layers/kernels.py): the gate-major cell and torch's native cell
give the Keras numbers, LSTMCell.step's choice between them is invisible, and the cached weights follow
every way a parameter can change."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from test_lstm_cell import built_cell, reference_step

import streamlstm as sl
from streamlstm.layers import kernels
from streamlstm.layers.lstm_cell import CELL_ROWS


def _inputs(rows: int, input_dim: int, units: int, seed: int, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.normal(size=shape)).to(dtype) for shape in
            ((rows, input_dim), (rows, units), (rows, units))]


def _expected(cell: sl.LSTMCell, x, h, c):
    weights = cell.get_weights()
    bias = weights[2] if cell.use_bias else None
    return reference_step(x.double().numpy(), h.double().numpy(), c.double().numpy(), weights[0], weights[1], bias)


@pytest.mark.parametrize("rows", [0, 1, 2, 7, CELL_ROWS - 1, CELL_ROWS, 300])
@pytest.mark.parametrize("use_bias", [True, False])
def test_gate_major_cell_is_the_keras_step(rows, use_bias) -> None:
    """The one-GEMM cell over [x | h] (what a lone step of CELL_ROWS rows or more takes)."""
    cell = built_cell(units=5, input_dim=3, seed=rows + 7, use_bias=use_bias)
    x, h, c = _inputs(rows, 3, 5, seed=rows + 2)
    h_before, c_before = h.clone(), c.clone()
    out_h, out_c = kernels.gate_major_cell(x, h, c, cell.gate_major_weights())
    expected_h, expected_c = _expected(cell, x, h, c)
    np.testing.assert_allclose(out_h.numpy(), expected_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out_c.numpy(), expected_c, rtol=1e-12, atol=1e-12)
    assert torch.equal(h, h_before) and torch.equal(c, c_before)   # its inputs are only read


@pytest.mark.parametrize("seed", range(6))
def test_step_kernels_agree_in_float32(seed) -> None:
    """Random shapes, 0 and 1 row included: the gate-major cell equals torch.lstm_cell to 1e-6."""
    rng = np.random.default_rng(seed)
    rows = int(rng.choice([0, 1, int(rng.integers(2, 40)), int(rng.integers(CELL_ROWS, 2 * CELL_ROWS))]))
    units, input_dim = int(rng.integers(1, 40)), int(rng.integers(1, 20))
    cell = sl.LSTMCell(units)
    cell.build((None, input_dim))
    x, h, c = _inputs(rows, input_dim, units, seed, torch.float32)
    native = kernels.native_cell(x, h, c, *cell.torch_weights(), cell.bias.detach())
    one_gemm = kernels.gate_major_cell(x, h, c, cell.gate_major_weights())
    for got, want in zip(one_gemm, native):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_the_kernel_choice_is_invisible() -> None:
    """Rows stepped together (the gate-major cell from CELL_ROWS) and in small groups (native cell)
    give the same numbers."""
    rows = 2 * CELL_ROWS + 3
    cell = sl.LSTMCell(16)
    cell.build((None, 6))
    x, h, c = _inputs(rows, 6, 16, seed=3, dtype=torch.float32)
    with torch.no_grad():
        together = cell.step(x, h, c)
        parts = [cell.step(x[i:i + 10], h[i:i + 10], c[i:i + 10]) for i in range(0, rows, 10)]
    for k in range(2):
        small = torch.cat([p[k] for p in parts])
        torch.testing.assert_close(together[k], small, rtol=1e-6, atol=1e-6)
    expected_h, _ = _expected(cell, x, h, c)
    np.testing.assert_allclose(together[0].double().numpy(), expected_h, rtol=1e-5, atol=1e-6)


def _change_in_place(cell: sl.LSTMCell) -> None:
    with torch.no_grad():
        cell.recurrent_kernel.mul_(0.5)


def _load_state_dict(cell: sl.LSTMCell) -> None:
    state = {name: value * 0.5 for name, value in cell.state_dict().items()}
    cell.load_state_dict(state)


def _replace_parameter(cell: sl.LSTMCell) -> None:
    cell.kernel = torch.nn.Parameter(cell.kernel.detach() * 0.5)


def _set_data(cell: sl.LSTMCell) -> None:
    cell.bias.data = cell.bias.detach() + 0.25


def _set_weights(cell: sl.LSTMCell) -> None:
    cell.set_weights([w * 0.5 for w in cell.get_weights()])


@pytest.mark.parametrize("change", [_change_in_place, _load_state_dict, _replace_parameter, _set_data, _set_weights])
@pytest.mark.parametrize("rows", [3, CELL_ROWS + 1])   # the native cell's weights, the gate-major ones
def test_cached_weights_follow_parameter_changes(change, rows) -> None:
    cell = built_cell(units=4, input_dim=3, seed=2)
    x, h, c = _inputs(rows, 3, 4, seed=5)
    with torch.no_grad():
        before = cell.step(x, h, c)
        change(cell)
        after = cell.step(x, h, c)
    expected_h, expected_c = _expected(cell, x, h, c)
    assert not np.allclose(before[0].numpy(), expected_h), "the change must change the step"
    np.testing.assert_allclose(after[0].numpy(), expected_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(after[1].numpy(), expected_c, rtol=1e-12, atol=1e-12)


def test_runtime_follows_weights_changed_between_feeds() -> None:
    """A runtime serving a model whose weights change in place between feeds (training) computes with
    the new weights, in both kernels: compared with the layer's own sequence path, which reads the
    parameters directly."""
    layer = sl.LSTM(8)
    layer.build((None, None, 3))
    runtime = sl.StreamRuntime(layer, key="id", features="x")
    for rows in (5, CELL_ROWS + 5):
        x = np.random.default_rng(rows).normal(size=(rows, 3)).astype(np.float32)
        features = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3)
        runtime.feed(pa.record_batch({"id": np.arange(rows) + 10_000 * rows, "x": features}))
        with torch.no_grad():
            layer.cell.kernel.mul_(-1.0)
        got = runtime.feed(pa.record_batch({"id": np.arange(rows) + 10_000 * rows + 5_000, "x": features}))
        with torch.no_grad():
            want = layer(torch.from_numpy(x)[:, None, :])   # new streams: one step from zeros
        np.testing.assert_allclose(got.column("output").flatten().to_numpy().reshape(rows, 8), want.numpy(),
                                   rtol=1e-5, atol=1e-6)



def test_the_gate_major_cells_shared_ones_column_serves_every_mode_dtype_and_shape() -> None:
    """The ``1`` column of ``[x | h | 1]`` is made once per rows, dtype and device and shared: steps of
    one shape in inference mode, in no_grad mode and in float32 and float64 all give the Keras step,
    and a step of another shape in between changes nothing."""
    cell = built_cell(units=4, input_dim=3, seed=4)
    for rows in (CELL_ROWS + 3, CELL_ROWS + 9, CELL_ROWS + 3):
        for dtype in (torch.float64, torch.float32):
            x, h, c = _inputs(rows, 3, 4, seed=rows, dtype=dtype)
            expected_h, expected_c = _expected(cell, x, h, c)
            parameters = (cell.kernel, cell.recurrent_kernel, cell.bias)
            weights = kernels.gate_major_weights(*(w.to(dtype) for w in parameters))
            tolerance = 1e-12 if dtype == torch.float64 else 1e-5
            with torch.inference_mode():
                first = kernels.gate_major_cell(x, h, c, weights)
            with torch.no_grad():
                second = kernels.gate_major_cell(x, h, c, weights)
            assert not second[0].is_inference()
            for got in (first, second):
                np.testing.assert_allclose(got[0].double().numpy(), expected_h, rtol=tolerance, atol=tolerance)
                np.testing.assert_allclose(got[1].double().numpy(), expected_c, rtol=tolerance, atol=tolerance)
