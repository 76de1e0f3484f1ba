"""fit_streams: Keras's stateful recipe over a file (windows of K rows of every stream per batch),
equal to Keras's weights on the recorded golden run; streams of any lengths; checkpoint and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from train_helpers import fixed_list, make_model, weights

import streamlstm as sl
from streamlstm.errors import CheckpointError, StreamError
from streamlstm.train.fit import Windows

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "keras_training_golden"


def _series_table(x: np.ndarray, y: np.ndarray, real: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Rows of every stream (key 10 + j), interleaved at random but each stream's in order."""
    streams, steps = x.shape[:2]
    keys = np.repeat(np.arange(streams), steps)
    step = np.tile(np.arange(steps), streams)
    order = np.lexsort((rng.permutation(len(keys)), step))
    return pa.table({"id": pa.array(10 + keys[order]), "x": fixed_list(x.reshape(-1, x.shape[2])[order]),
                     "y": fixed_list(y.reshape(-1, y.shape[2])[order]), "real": pa.array(real.reshape(-1)[order])})


@pytest.mark.parametrize("name", ["sgd", "sgd_momentum_masked"])
def test_fit_streams_on_a_file_equals_keras_stateful_fit(tmp_path: Path, name: str) -> None:
    meta = json.loads((GOLDEN / f"{name}.json").read_text())
    with np.load(GOLDEN / f"{name}.npz") as data:
        arrays = {key: data[key] for key in data.files}
    path = tmp_path / "series.arrow"
    table = _series_table(arrays["series_x"], arrays["series_y"], arrays["real"], np.random.default_rng(1))
    with pa.ipc.new_file(path, table.schema) as writer:
        writer.write_table(table, max_chunksize=7)
    model, sgd = _golden_model(meta, arrays)
    trainer = sl.fit_streams(model, path, key="id", features="x", target="y", mask="real", window=meta["K"],
                             optimizer=sgd, progress=False)
    assert trainer.stats()["batches"] == meta["batches"]
    _assert_keras_weights(model, meta, arrays)


def _golden_model(meta: dict, arrays: dict) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = make_model(meta["F"], meta["U"])
    model[0].set_weights([arrays["w0_0"], arrays["w0_1"], arrays["w0_2"]])
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(arrays["w0_3"].T))
        model[1].bias.copy_(torch.from_numpy(arrays["w0_4"]))
    opt = meta["optimizer"]
    return model, torch.optim.SGD(model.parameters(), lr=opt["learning_rate"], momentum=opt["momentum"])


def _assert_keras_weights(model: torch.nn.Module, meta: dict, arrays: dict) -> None:
    got = [*model[0].get_weights(), model[1].weight.detach().numpy().T, model[1].bias.detach().numpy()]
    for i, value in enumerate(got):
        np.testing.assert_allclose(value, arrays[f"w{meta['batches']}_{i}"], rtol=1e-5, atol=2e-6)


def _timed_table(arrays: dict, rng: np.random.Generator) -> pa.Table:
    """Every row of every stream (key 10 + j) in random order, with its step as a timestamp ``t``."""
    x, y = arrays["series_x"], arrays["series_y"]
    streams, steps = x.shape[:2]
    order = rng.permutation(streams * steps)
    keys, step = np.repeat(np.arange(streams), steps)[order], np.tile(np.arange(steps), streams)[order]
    return pa.table({"id": pa.array(10 + keys), "x": fixed_list(x.reshape(-1, x.shape[2])[order]),
                     "y": fixed_list(y.reshape(-1, 1)[order]),
                     "t": pa.array(1_700_000_000_000 + 250 * step, pa.timestamp("ms"))})


def test_fit_streams_with_time_takes_each_streams_rows_in_time_order() -> None:
    meta = json.loads((GOLDEN / "sgd.json").read_text())
    with np.load(GOLDEN / "sgd.npz") as data:
        arrays = {key: data[key] for key in data.files}
    table = _timed_table(arrays, np.random.default_rng(2))
    model, sgd = _golden_model(meta, arrays)
    trainer = sl.fit_streams(model, table, key="id", features="x", target="y", time="t", window=meta["K"],
                             optimizer=sgd, progress=False)
    _assert_keras_weights(model, meta, arrays)
    last = max(table.column("t").to_pylist())
    assert trainer.runtime.export_streams().column("last_time").to_pylist() == [last] * 4

    # More epochs: each starts the streams over, their times too; the same as the rows already in order.
    in_order = table.sort_by([("t", "ascending")]).drop_columns(["t"])
    runs = []
    for source, time in ((table, "t"), (in_order, None)):
        model, _ = _golden_model(meta, arrays)
        sl.fit_streams(model, source, key="id", features="x", target="y", time=time, window=3, epochs=3,
                       optimizer="sgd", lr=0.1, progress=False)
        runs.append(weights(model))
    for name, value in runs[0].items():
        np.testing.assert_array_equal(value, runs[1][name], err_msg=name)


def test_fit_streams_refuses_a_repeated_time() -> None:
    with np.load(GOLDEN / "sgd.npz") as data:
        arrays = {key: data[key] for key in data.files}
    table = _timed_table(arrays, np.random.default_rng(3))
    times = table.column("t").to_pylist()
    twin = next(i for i in range(1, len(times)) if table.column("id")[i] == table.column("id")[0])
    times[twin] = times[0]
    table = table.set_column(3, "t", pa.array(times, pa.timestamp("ms")))
    with pytest.raises(StreamError, match="time column 't' must increase strictly per stream"):
        sl.fit_streams(make_model(3, 8), table, key="id", features="x", target="y", time="t", window=4,
                       progress=False)


def test_windows_hold_window_b_of_every_stream_long_enough() -> None:
    keys = np.array([5, 7, 5, 9, 5, 7, 5, 5, 9, 9, 9, 9])      # stream 5: 5 rows, 7: 2 rows, 9: 5 rows
    table = pa.table({"id": keys, "row": np.arange(len(keys))})
    windows = Windows(table, "id", 2)
    batches = [windows.batch(b).to_pydict() for b in range(len(windows))]
    assert len(windows) == 3
    assert batches[0] == {"id": [5, 5, 7, 7, 9, 9], "row": [0, 2, 1, 5, 3, 8]}
    assert batches[1] == {"id": [5, 5, 9, 9], "row": [4, 6, 9, 10]}
    assert batches[2] == {"id": [5, 9], "row": [7, 11]}


def _data(streams: int = 6, steps: int = 23, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, steps, streams)
    keys = np.repeat([f"s{i}" for i in range(streams)], lengths)
    rng.shuffle(keys)
    x = rng.uniform(-1, 1, (len(keys), 3))
    return pa.table({"id": pa.array(keys), "x": fixed_list(x), "y": fixed_list(np.sin(x[:, :1] * 3))})


class _Interrupted(Exception):
    pass


def test_checkpoint_then_resume_after_an_interruption_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    table = _data()

    def mse(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (p - y).square().mean(dim=-1)

    def run(model: torch.nn.Module, fail_at: int | None = None, **options) -> sl.StreamTrainer:
        calls = []

        def loss(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            if len(calls) == fail_at:
                raise _Interrupted
            return mse(p, y)

        return sl.fit_streams(model, table, key="id", features="x", target="y", window=4, epochs=3,
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5), loss=loss,
                              progress=False, **options)

    reference = run(make_model(3, 5, seed=2))
    with pytest.raises(_Interrupted):
        run(make_model(3, 5, seed=2), fail_at=9, checkpoint=tmp_path / "ck", checkpoint_every=3)
    with pytest.raises(CheckpointError, match="pass resume=True"):
        run(make_model(3, 5, seed=2), checkpoint=tmp_path / "ck")
    resumed = run(make_model(3, 5, seed=9), checkpoint=tmp_path / "ck", checkpoint_every=3, resume=True)
    assert resumed.stats()["batches"] == reference.stats()["batches"] == 3 * len(Windows(table, "id", 4))
    mine, theirs = weights(resumed.model), weights(reference.model)
    assert all(np.array_equal(mine[k], theirs[k]) for k in mine)
