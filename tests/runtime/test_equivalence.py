"""Each stream equals one call of the model on that stream's whole sequence, however rows are batched."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from runtime_helpers import F, feed_all, lstm, make_batch, outputs, reference, two_lstm_model

import streamlstm as sl

MODES = ["step", "chunk", "auto"]


def random_rows(rng: np.random.Generator, n: int, streams: int, flags: bool = True):
    keys = rng.integers(0, streams, n) * 7 + 3          # sparse, unsorted key values
    x = rng.normal(size=(n, F)).astype(np.float32)
    mask = rng.random(n) > 0.25
    reset = (rng.random(n) < 0.08) if flags else None
    end = (rng.random(n) < 0.05) if flags else None
    return keys, x, mask, reset, end


def random_cuts(rng: np.random.Generator, n: int) -> list[int]:
    return sorted(rng.choice(np.arange(1, n), size=rng.integers(0, 8), replace=False).tolist())


def runtime(model, mode, **kwargs):
    return sl.StreamRuntime(model, key="id", features="x", mask="m", reset="r", end="e", mode=mode, **kwargs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key_type", ["int", "str", "dict"])
def test_single_lstm_matches_whole_sequence(rng, mode, key_type):
    layer = lstm(6)
    keys, x, mask, reset, end = random_rows(rng, 300, 12)
    got = feed_all(runtime(layer, mode), keys, x, random_cuts(rng, 300), key_type, mask=mask, reset=reset, end=end)
    np.testing.assert_allclose(got, reference(layer, keys, x, mask, reset, end), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_sequential_two_lstms_and_dense(rng, mode):
    model = two_lstm_model()
    keys, x, mask, reset, end = random_rows(rng, 400, 20)
    got = feed_all(runtime(model, mode), keys, x, random_cuts(rng, 400), mask=mask, reset=reset, end=end)
    assert got.shape == (400, 2)
    np.testing.assert_allclose(got, reference(model, keys, x, mask, reset, end), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["step", "chunk"])
def test_stacked_cells_and_zero_output_for_mask(rng, mode):
    torch.manual_seed(3)
    stacked = sl.RNN([sl.LSTMCell(4), sl.LSTMCell(3, activation="relu")], return_sequences=True)
    stacked.build((None, None, F))
    model = torch.nn.Sequential(stacked, lstm(5, 3, seed=4, zero_output_for_mask=True))
    keys, x, mask, reset, end = random_rows(rng, 250, 9)
    got = feed_all(runtime(model, mode), keys, x, random_cuts(rng, 250), mask=mask, reset=reset, end=end)
    np.testing.assert_allclose(got, reference(model, keys, x, mask, reset, end), rtol=1e-5, atol=1e-6)


def test_non_tanh_activation_takes_the_generic_path(rng):
    layer = lstm(4, activation="relu", recurrent_activation="hard_sigmoid")
    keys, x, mask, _, _ = random_rows(rng, 120, 5, flags=False)
    for mode in ("step", "chunk"):
        rt = sl.StreamRuntime(layer, key="id", features="x", mask="m", mode=mode)
        got = feed_all(rt, keys, x, random_cuts(rng, 120), mask=mask)
        np.testing.assert_allclose(got, reference(layer, keys, x, mask, None, None), rtol=1e-5, atol=1e-6)


def test_unbuilt_model_is_built_by_the_first_batch(rng):
    model = torch.nn.Sequential(sl.LSTM(4, return_sequences=True), torch.nn.Linear(4, 2))
    rt = sl.StreamRuntime(model, key="id", features="x")
    keys, x, *_ = random_rows(rng, 30, 3, flags=False)
    got = feed_all(rt, keys, x, [10])
    np.testing.assert_allclose(got, reference(model, keys, x, None, None, None), rtol=1e-5, atol=1e-6)


def test_an_empty_first_batch_builds_the_model_from_its_declared_width(rng):
    # pyarrow cannot make a FixedSizeList of width 0, so the output's width must be the model's.
    model = torch.nn.Sequential(sl.LSTM(4, return_sequences=True), torch.nn.Linear(4, 2))
    rt = sl.StreamRuntime(model, key="id", features="x", time="t")
    x = pa.FixedSizeListArray.from_arrays(pa.array([], pa.float32()), 3)
    empty = rt.feed(pa.record_batch({"id": pa.array([], pa.int64()), "x": x, "t": pa.array([], pa.int64())}))
    assert empty.num_rows == 0 and empty.schema.names == ["id", "t", "output"]
    assert empty.schema.field("output").type == pa.list_(pa.float32(), 2)
    assert len(rt) == 0 and rt.stats()["batches"] == 0
    keys, x, *_ = random_rows(rng, 30, 3, flags=False)
    got = outputs(rt.feed(make_batch(keys, x, time=np.arange(30))))
    np.testing.assert_allclose(got, reference(model, keys, x, None, None, None), rtol=1e-5, atol=1e-6)


def test_masked_rows_repeat_previous_output_across_batches():
    layer = lstm(3)
    rt = runtime(layer, "chunk")
    first = outputs(rt.feed(make_batch([1, 1], np.ones((2, F)), mask=[False, True])))
    assert not first[0].any(), "masked before the first real step: zeros"
    again = outputs(rt.feed(make_batch([1, 1], np.ones((2, F)), mask=[False, False])))
    np.testing.assert_array_equal(again, np.repeat(first[1:], 2, axis=0))
    after_reset = outputs(rt.feed(make_batch([1], np.ones((1, F)), mask=[False], reset=[True])))
    assert not after_reset.any(), "a reset zeroes the previous output too"


def test_end_releases_after_the_row_and_key_restarts():
    layer = lstm(3)
    rt = runtime(layer, "auto")
    x = np.ones((3, F))
    got = outputs(rt.feed(make_batch([5, 5, 5], x, end=[False, True, False])))
    np.testing.assert_allclose(got[2], got[0], rtol=1e-6)   # the third row starts a new stream
    assert 5 in rt and rt.stats()["streams_ended"] == 1
    rt.feed(make_batch([5], x[:1], end=[True]))
    assert 5 not in rt and len(rt) == 0


@pytest.mark.parametrize("mode", ["step", "chunk"])
def test_go_backwards_is_one_stateful_call_per_feed(rng, mode):
    layer = lstm(4, go_backwards=True)
    reference_layer = lstm(4, go_backwards=True, stateful=True)
    reference_layer.set_weights(layer.get_weights())
    rt = sl.StreamRuntime(layer, key="id", features="x", mask="m", mode=mode)
    streams = {}
    for _ in range(4):
        keys = rng.integers(0, 3, 12)
        x = rng.normal(size=(12, F)).astype(np.float32)
        mask = rng.random(12) > 0.3
        for key in np.unique(keys):   # the last row of each stream (processed first) is real
            mask[np.flatnonzero(keys == key)[-1]] = True
        got = outputs(rt.feed(make_batch(keys, x, mask=mask)))
        for key in np.unique(keys):
            rows = np.flatnonzero(keys == key)
            state = streams.get(key)
            with torch.no_grad():
                reference_layer.reset_states(state)
                out = reference_layer(x[rows][None], mask=mask[rows][None])[0].numpy()[::-1]
                streams[key] = [s.clone() for s in reference_layer.states]
            np.testing.assert_allclose(got[rows], out, rtol=1e-5, atol=1e-6)


def test_float64_model_and_scalar_feature_columns(rng):
    torch.manual_seed(0)
    layer = sl.LSTM(3, return_sequences=True, dtype="float64")
    layer.build((None, None, 2))
    rt = sl.StreamRuntime(layer, key="id", features=["a", "b"])
    import pyarrow as pa
    x = rng.normal(size=(8, 2))
    keys = np.array([1, 2] * 4)
    out = outputs(rt.feed(pa.record_batch({"id": keys, "a": x[:, 0], "b": x[:, 1].astype(np.float32)})))
    expected = reference(layer, keys, np.stack([x[:, 0], x[:, 1].astype(np.float32)], 1), None, None, None)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
