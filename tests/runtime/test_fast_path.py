"""Repeated batches (the plan cached for a repeated key column) give the numbers of a fresh plan, also
after the weights change in place."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

import streamlstm as sl


def one_row(values: np.ndarray) -> pa.RecordBatch:
    x = pa.FixedSizeListArray.from_arrays(pa.array(values.astype(np.float32)), len(values))
    return pa.record_batch({"id": pa.array([7], pa.int64()), "x": x})


def test_repeated_batches_follow_in_place_weight_updates() -> None:
    torch.manual_seed(0)
    layer = sl.LSTM(4, input_shape=(None, 3))
    runtime = sl.StreamRuntime(layer, key="id", features="x")
    values = np.array([0.3, -0.2, 0.5])
    for _ in range(3):   # the second and later batches reuse the first one's plan
        runtime.feed(one_row(values))
    (h, c), = runtime.state(7)
    with torch.no_grad():
        layer.cell.kernel.mul_(-1.5)   # e.g. an optimizer step between feeds
        expected, _ = layer.cell(torch.tensor(values[None], dtype=torch.float32),
                                 [torch.from_numpy(h)[None], torch.from_numpy(c)[None]], training=False)
    out = runtime.feed(one_row(values)).column("output").to_numpy(zero_copy_only=False)[0]
    np.testing.assert_allclose(out, expected[0].numpy(), rtol=1e-5, atol=1e-6)


def test_repeated_batches_refuse_non_finite_features() -> None:
    runtime = sl.StreamRuntime(sl.LSTM(4, input_shape=(None, 3)), key="id", features="x")
    for _ in range(3):
        runtime.feed(one_row(np.array([0.1, 0.2, 0.3])))
    before = runtime.state(7)
    try:
        runtime.feed(one_row(np.array([0.1, np.inf, 0.3])))
    except sl.errors.StreamError as exc:
        assert "x" in str(exc)
    else:
        raise AssertionError("an Inf feature was accepted")
    after = runtime.state(7)
    assert all(np.array_equal(a, b) for pa_, pb in zip(before, after) for a, b in zip(pa_, pb))
