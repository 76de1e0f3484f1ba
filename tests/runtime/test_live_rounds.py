"""Live traffic in step mode: batches of many streams, some with several rows, so that the step rounds
are large (from CELL_ROWS rows they take the gate-major cell) and then shrink (the native cell). Every
stream still equals one call of the model on its whole sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from runtime_helpers import TOL, F, feed_all, lstm, make_batch, outputs, reference, two_lstm_model

import streamlstm as sl
from streamlstm.layers.lstm_cell import CELL_ROWS


def _stacked() -> sl.RNN:
    torch.manual_seed(5)
    stacked = sl.RNN([sl.LSTMCell(6), sl.LSTMCell(4)], return_sequences=True)
    stacked.build((None, None, F))
    return stacked


@pytest.mark.parametrize("model_kind", ["lstm", "two_lstms", "stacked"])
@pytest.mark.parametrize("masked", [False, True])
def test_large_rounds_match_whole_sequences(rng, model_kind, masked):
    model = {"lstm": lambda: lstm(6), "two_lstms": two_lstm_model, "stacked": _stacked}[model_kind]()
    n, streams = 16 * CELL_ROWS, 10 * CELL_ROWS   # the last batch's first round: ~600 rows
    keys = rng.integers(0, streams, n)                   # repeats: the first round holds most streams
    x = rng.normal(size=(n, F)).astype(np.float32)
    mask = rng.random(n) > 0.2 if masked else None
    runtime = sl.StreamRuntime(model, key="id", features="x", mask="m", mode="step")
    cuts = [n // 3, n // 3 + 7]                          # a large batch, a tiny one, a large one
    got = feed_all(runtime, keys, x, cuts, mask=mask)
    np.testing.assert_allclose(got, reference(model, keys, x, mask, None, None), **TOL)


def test_recorded_states_and_final_states_of_large_rounds(rng):
    """return_state records every row's (h, c); a stream's last row's are its committed state."""
    layer = lstm(5)
    n, streams = 16 * CELL_ROWS, 10 * CELL_ROWS   # the last batch's first round: ~600 rows
    first = rng.normal(size=(streams, F)).astype(np.float32)   # every stream has carries (c != 0)
    keys = np.concatenate([np.arange(streams), rng.integers(0, streams, n)])
    x = np.concatenate([first, rng.normal(size=(n, F)).astype(np.float32)])
    runtime = sl.StreamRuntime(layer, key="id", features="x", return_state=True)
    runtime.feed(make_batch(keys[:streams], x[:streams]))
    out = runtime.feed(make_batch(keys[streams:], x[streams:]))
    np.testing.assert_allclose(outputs(out, "h_0"), outputs(out), rtol=0, atol=0)
    np.testing.assert_allclose(outputs(out), reference(layer, keys, x, None, None, None)[streams:], **TOL)
    h_rows, c_rows = outputs(out, "h_0"), outputs(out, "c_0")
    for key in np.unique(keys[streams:])[:50]:
        last = np.flatnonzero(keys[streams:] == key)[-1]
        (h, c), = runtime.state(int(key))
        np.testing.assert_array_equal(h, h_rows[last])
        np.testing.assert_array_equal(c, c_rows[last])
