"""Imported Keras models in the stream runtime, in model files, and in ``streamlstm replay``.

Every stream fed to a :class:`~streamlstm.StreamRuntime` must give what Keras's ``predict`` gave for
that stream's whole sequence (``tests/fixtures/keras_models/``, zero-padded steps included): every row
for ``return_sequences=True`` models, the last row for ``return_sequences=False`` ones.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from test_load_keras import CASES, expected, model_path

import streamlstm as sl
from streamlstm.cli import main
from streamlstm.errors import ConfigError, KerasFileError
from streamlstm.keras_import import KerasModel

RTOL, ATOL = 1e-5, 1e-6
STREAMABLE = [c for c in CASES if "bidi" not in c and "backwards" not in c]
BACKWARDS = ["k2_masked_backwards_td", "k3_masked_backwards_td"]
COPIES = 3   # each fixture sequence feeds this many streams


def sequences(stem: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Inputs [batch, time, features] and predict's outputs, batch first also for time_major models."""
    x, ys = expected(stem)
    if "time_major" in stem:
        return x.transpose(1, 0, 2), [y.transpose(1, 0, 2) for y in ys]
    return x, ys


def interleave(batch: int, steps: int, rng: np.random.Generator, order: str) -> tuple[np.ndarray, np.ndarray]:
    """(stream, step) of each row: ``COPIES * batch`` streams of ``steps`` rows, each stream's rows in order.

    "random": streams interleaved at random; "lockstep": step 0 of every stream, then step 1, ...
    (the same keys in the same order every round: the runtime's fast path)."""
    streams = np.arange(COPIES * batch)
    if order == "lockstep":
        return np.tile(streams, steps), np.repeat(np.arange(steps), len(streams))
    owner = rng.permutation(np.repeat(streams, steps))
    step = np.zeros(len(owner), np.int64)
    for stream in streams:
        step[owner == stream] = np.arange(steps)
    return owner, step


def fixed_list(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def feed_rows(runtime: sl.StreamRuntime, keys: np.ndarray, x: np.ndarray, cuts: list[int], column: str = "output",
              mask: np.ndarray | None = None) -> np.ndarray:
    """Feed the rows in batches cut at ``cuts``; ``column`` of every output row, in row order."""
    bounds = [0, *cuts, len(keys)]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        columns = {"id": pa.array(keys[lo:hi]), "x": fixed_list(x[lo:hi])}
        if mask is not None:
            columns["m"] = pa.array(mask[lo:hi])
        array = runtime.feed(pa.record_batch(columns)).column(column)
        out.append(array.flatten().to_numpy().reshape(len(array), array.type.list_size))
    return np.concatenate(out)


def random_cuts(n: int, rng: np.random.Generator) -> list[int]:
    return sorted(rng.choice(np.arange(1, n), size=rng.integers(1, 8), replace=False).tolist())


def per_stream(got: np.ndarray, owner: np.ndarray, step: np.ndarray, streams: int, steps: int) -> np.ndarray:
    """Outputs by row -> [streams, steps, out]."""
    result = np.empty((streams, steps, got.shape[1]), got.dtype)
    result[owner, step] = got
    return result


@pytest.mark.parametrize("mode, order", [("step", "random"), ("chunk", "random"), ("auto", "lockstep")])
@pytest.mark.parametrize("stem", STREAMABLE)
def test_per_stream_outputs_equal_predict(stem, mode, order):
    x, ys = sequences(stem)
    batch, steps, _ = x.shape
    rng = np.random.default_rng(len(stem) * 7 + len(mode))
    owner, step = interleave(batch, steps, rng, order)
    keys = [f"s{k}" for k in owner] if mode == "chunk" else owner   # string keys too
    runtime = sl.StreamRuntime(sl.load_model(model_path(stem)), key="id", features="x", mode=mode)
    rounds = list(range(COPIES * batch, len(owner), COPIES * batch))
    cuts = random_cuts(len(owner), rng) if order == "random" else rounds
    got = per_stream(feed_rows(runtime, np.asarray(keys), x[owner % batch, step], cuts), owner, step,
                     COPIES * batch, steps)
    y = np.concatenate([ys[0]] * COPIES)
    if y.ndim == 3:   # return_sequences=True: every row
        np.testing.assert_allclose(got, y, rtol=RTOL, atol=ATOL)
    else:             # return_sequences=False: the last row is predict's output
        np.testing.assert_allclose(got[:, -1], y, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("stem", ["k2_masked_stack", "k3_functional", "k3_rnn_cells"])
def test_every_row_of_a_last_output_model_is_the_output_of_its_prefix(stem):
    x, _ = sequences(stem)
    model = sl.load_keras(model_path(stem))
    got = sl.StreamRuntime(model, key="id", features="x").feed(pa.record_batch({
        "id": np.repeat(np.arange(len(x)), x.shape[1]), "x": fixed_list(x.reshape(-1, x.shape[2]))}))
    got = got.column("output").flatten().to_numpy().reshape(len(x), x.shape[1], -1)
    for t in range(x.shape[1]):   # the imported model equals predict (test_load_keras), on any prefix
        np.testing.assert_allclose(got[:, t], model(x[:, :t + 1]).numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["step", "chunk"])
@pytest.mark.parametrize("stem", BACKWARDS)
def test_go_backwards_equals_predict_when_a_feed_holds_whole_streams(stem, mode):
    """One Keras stateful call per feed: a stream's rows of one feed are processed last to first.
    Keras returns a go_backwards sequence in processing order, the runtime in row order."""
    x, (y,) = sequences(stem)
    batch, steps, _ = x.shape
    rng = np.random.default_rng(3)
    runtime = sl.StreamRuntime(sl.load_keras(model_path(stem)), key="id", features="x", mode=mode)
    for first in (0, 2):   # two feeds, each with two whole streams interleaved
        owner = rng.permutation(np.repeat([first, first + 1], steps))
        step = np.zeros(len(owner), np.int64)
        for stream in (first, first + 1):
            step[owner == stream] = np.arange(steps)
        got = per_stream(feed_rows(runtime, owner, x[owner, step], []), owner - first, step, 2, steps)
        np.testing.assert_allclose(got, y[first:first + 2, ::-1], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["step", "chunk"])
@pytest.mark.parametrize("stem", ["k3_masked_stack", "k2_options", "k3_masked_backwards_td"])
def test_mask_column_and_masking_layer_combine(stem, mode):
    """A row is real only when the mask column says so and some feature differs from mask_value:
    masking a row by the column equals setting its features to mask_value."""
    x, _ = sequences(stem)
    model = sl.load_keras(model_path(stem))
    batch, steps, features = x.shape
    rng = np.random.default_rng(5)
    mask = rng.random((batch, steps)) > 0.3
    masked_x = np.where(mask[..., None], x, np.float32(model.mask_value))
    reference = model(masked_x).numpy()
    runtime = sl.StreamRuntime(model, key="id", features="x", mask="m", mode=mode)
    keys = np.repeat(np.arange(batch), steps)
    got = feed_rows(runtime, keys, x.reshape(-1, features), [], mask=mask.reshape(-1)).reshape(batch, steps, -1)
    if "backwards" in stem:
        got = got[:, ::-1]
    np.testing.assert_allclose(got if reference.ndim == 3 else got[:, -1], reference, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("stem", ["k2_functional_state", "k3_functional_state"])
def test_return_state_columns_hold_the_final_state(stem):
    x, (_, h, c) = sequences(stem)
    runtime = sl.StreamRuntime(sl.load_keras(model_path(stem)), key="id", features="x", return_state=True)
    keys = np.tile(np.arange(len(x)), x.shape[1])   # lockstep
    rows = x.transpose(1, 0, 2).reshape(-1, x.shape[2])
    last = slice(len(keys) - len(x), len(keys))
    np.testing.assert_allclose(feed_rows(runtime, keys, rows, [], column="h_0")[last], h, rtol=RTOL, atol=ATOL)
    assert runtime.state(0)[0][1] == pytest.approx(c[0], rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("stem", ["k2_bidi_concat_ave", "k3_bidi_sum_mul", "k3_bidi_none"])
def test_bidirectional_is_refused_with_the_reason(stem):
    model = sl.load_keras(model_path(stem))
    with pytest.raises(ConfigError, match=r"layer 1 \(KerasBidirectional\).*needs each whole sequence.*offline"):
        sl.StreamRuntime(model)
    with pytest.raises(ConfigError, match=r"member 0 \(KerasBidirectional\).*reads the future"):
        sl.StreamRuntime(torch.nn.Sequential(model.layers[1]))


def test_masking_rows_fed_one_row_per_stream_match_predict():
    x, (y,) = sequences("k3_masked_stack")
    runtime = sl.StreamRuntime(sl.load_keras(model_path("k3_masked_stack")), key="id", features="x")
    keys = np.arange(2)   # stream 0 is never padded, stream 1 from step 4 on
    outs = [feed_rows(runtime, keys, x[:2, t], []) for t in range(x.shape[1])]
    np.testing.assert_allclose(outs[-1], y[:2], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("stem", ["k2_masked_stack", "k3_rnn_cells"])
def test_runtime_save_load_mid_stream_continues_exactly(stem, tmp_path):
    x, (y,) = sequences(stem)
    batch, steps, _ = x.shape
    owner, step = interleave(batch, steps, np.random.default_rng(11), "random")
    keys, rows = owner, x[owner % batch, step]
    half = len(keys) // 2
    first = sl.StreamRuntime(sl.load_model(model_path(stem)), key="id", features="x", mode="chunk")
    feed_rows(first, keys[:half], rows[:half], [half // 3])
    sl.save_runtime(first, tmp_path / "runtime.arrow")
    loaded = sl.load_runtime(tmp_path / "runtime.arrow")
    assert isinstance(loaded.model, KerasModel) and loaded.model.mask_value == 0.0
    rest = feed_rows(loaded, keys[half:], rows[half:], [])
    np.testing.assert_allclose(rest, feed_rows(first, keys[half:], rows[half:], []), rtol=0, atol=0)
    last = {k: i for i, k in enumerate(keys[half:])}
    for stream, row in last.items():
        np.testing.assert_allclose(rest[row], y[stream % batch], rtol=RTOL, atol=ATOL)


def test_load_model_reads_keras_files_by_name_and_by_content(tmp_path):
    assert isinstance(sl.load_model(model_path("k3_lstm_last")), KerasModel)
    assert isinstance(sl.load_model(model_path("k2_lstm_last")), KerasModel)
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(model_path("k2_lstm_last").read_bytes())
    x, (y,) = sequences("k2_lstm_last")
    np.testing.assert_allclose(sl.load_model(renamed)(x).numpy(), y, rtol=RTOL, atol=ATOL)
    bogus = tmp_path / "bogus.keras"
    bogus.write_text("not a model")
    with pytest.raises(KerasFileError, match="is not a Keras model file"):
        sl.load_model(bogus)


@pytest.mark.parametrize("stem", CASES)
def test_save_model_round_trips_an_imported_model(stem, tmp_path):
    model = sl.load_model(model_path(stem))
    sl.save_model(model, tmp_path / "model.slm")
    loaded = sl.load_model(tmp_path / "model.slm")
    assert isinstance(loaded, KerasModel) and repr(loaded) == repr(model)
    x, _ = expected(stem)
    before, after = model(x), loaded(x)
    for a, b in zip(*(v if isinstance(v, list) else [v] for v in (before, after))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("stem", ["k3_masked_stack", "k2_masked_stack", "k3_options"])
def test_replay_cli_with_a_keras_model_file(stem, tmp_path):
    x, (y,) = sequences(stem)
    batch, steps, _ = x.shape
    owner, step = interleave(batch, steps, np.random.default_rng(2), "random")
    table = pa.table({"stream_id": pa.array(owner), "x": fixed_list(x[owner % batch, step])})
    with pa.ipc.new_file(str(tmp_path / "in.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=17)
    path = model_path(stem)
    assert main(["replay", str(tmp_path / "in.arrow"), "--model", str(path), "--out", str(tmp_path / "out.arrow"),
                 "--batch-rows", "5", "--quiet"]) == 0
    with pa.memory_map(str(tmp_path / "out.arrow")) as source:
        out = pa.ipc.open_file(source).read_all()
    assert out.column("stream_id").to_pylist() == owner.tolist()
    rows = out.column("output").combine_chunks()
    got = per_stream(rows.flatten().to_numpy().reshape(len(rows), -1), owner, step, COPIES * batch, steps)
    y = np.concatenate([y] * COPIES)
    np.testing.assert_allclose(got if y.ndim == 3 else got[:, -1], y, rtol=RTOL, atol=ATOL)


def test_a_flight_server_runs_a_keras_h5_model():
    """What ``streamlstm serve --model m.h5`` builds: the model file through load_model_file."""
    pytest.importorskip("pyarrow.flight")
    from streamlstm.io.replay import load_model_file

    x, (y,) = sequences("k2_masked_stack")
    runtime = sl.StreamRuntime(load_model_file(model_path("k2_masked_stack")), key="id", features="x")
    server = sl.flight.StreamServer(runtime, "grpc://127.0.0.1:0")
    try:
        client = sl.flight.Client(f"grpc://127.0.0.1:{server.port}")
        for t in range(x.shape[1]):
            out = client.feed(pa.record_batch({"id": pa.array(np.arange(len(x))), "x": fixed_list(x[:, t])}))
        client.close()
    finally:
        server.shutdown()
    got = out.column("output").flatten().to_numpy().reshape(len(x), -1)
    np.testing.assert_allclose(got, y, rtol=RTOL, atol=ATOL)
