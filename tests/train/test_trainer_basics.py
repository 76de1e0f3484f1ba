"""StreamTrainer basics: the output batch, null targets, end rows, lazy building, string keys, the
runtime serving from the trained carries, and (with CUDA) the same numbers on the GPU."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pyarrow as pa
import pytest
import torch
from train_helpers import fixed_list, make_model, train_batch, weights

import streamlstm as sl

F, U = 3, 4


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1)


def test_null_targets_count_for_state_but_not_for_the_loss() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, F)).astype(np.float32)
    y = pa.FixedSizeListArray.from_arrays(pa.array([0.5, 0.1, 0.2, 0.3], pa.float32()), 1,
                                          mask=pa.array([False, True, False, False]))
    batch = pa.record_batch({"id": [1, 1, 2, 2], "x": fixed_list(x), "y": y})
    model = make_model(F, U)
    before = copy.deepcopy(model)
    out = sl.StreamTrainer(model, _sgd(model), key="id", features="x", target="y").learn(batch)
    assert out.schema.names == ["id", "output", "loss"] and out.schema.field("loss").type == pa.float32()
    assert out.column("loss").is_null().to_pylist() == [False, True, False, False]
    with torch.no_grad():
        predictions = before(torch.from_numpy(x).view(2, 2, F)).view(4)   # before the update: prequential
    np.testing.assert_allclose(np.stack(out.column("output").to_numpy(zero_copy_only=False))[:, 0], predictions,
                               rtol=1e-6, atol=1e-6)
    expected = (predictions.numpy() - np.array([0.5, 0, 0.2, 0.3])) ** 2
    np.testing.assert_allclose(np.array(out.column("loss").to_pylist(), dtype=float)[[0, 2, 3]], expected[[0, 2, 3]],
                               rtol=1e-5)


def test_an_end_row_releases_the_stream_and_the_next_row_starts_fresh() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, (3, F)), rng.uniform(-1, 1, (3, 1))
    model = make_model(F, U)
    trainer = sl.StreamTrainer(model, torch.optim.SGD(model.parameters(), lr=0.0), key="id", features="x",
                               target="y", end="end")
    out = trainer.learn(train_batch([7, 7, 7], x, y, end=[False, True, False]))
    fresh = sl.StreamTrainer(copy.deepcopy(model), torch.optim.SGD(model.parameters(), lr=0.0), key="id",
                             features="x", target="y", end="end")
    alone = fresh.learn(train_batch([7], x[2:], y[2:], end=[False]))
    assert out.column("output")[2] == alone.column("output")[0]
    assert len(trainer.runtime) == 1


def test_an_unbuilt_model_is_built_by_the_first_batch_and_string_keys_work() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(sl.LSTM(U, return_sequences=True), torch.nn.Linear(U, 1))
    trainer = sl.StreamTrainer(model, lambda p: torch.optim.Adam(p, lr=0.01), key="id", features="x", target="y")
    rng = np.random.default_rng(2)
    batch = pa.record_batch({"id": pa.array(["a", "b", "a"]), "x": fixed_list(rng.uniform(size=(3, F))),
                             "y": fixed_list(rng.uniform(size=(3, 1)))})
    assert set(weights(model)) == {"1.weight", "1.bias"}
    empty = trainer.learn(batch.slice(0, 0))   # tells the input width: builds the model, learns nothing
    assert empty.num_rows == 0 and empty.schema.field("output").type == pa.list_(pa.float32(), 1)
    before = weights(model)
    assert set(before) == {"0.cell.kernel", "0.cell.recurrent_kernel", "0.cell.bias", "1.weight", "1.bias"}
    trainer.learn(batch)
    after = weights(model)
    assert not any(np.array_equal(before[name], after[name]) for name in before)
    assert sorted(trainer.runtime.keys()) == ["a", "b"]
    assert len(trainer.optimizer.param_groups[0]["params"]) == 5


def test_the_runtime_serves_from_the_trained_carries() -> None:
    rng = np.random.default_rng(3)
    model = make_model(F, U)
    trainer = sl.StreamTrainer(model, _sgd(model), key="id", features="x", target="y", mask="real",
                               reset="reset")
    for resets in ([False] * 6, [True, False, False, False, False, False]):
        batch = train_batch([1, 2, 1, 2, 1, 2], rng.uniform(-1, 1, (6, F)), rng.uniform(-1, 1, (6, 1)),
                            real=[True, False, True, False, True, True], reset=resets)
        trainer.learn(batch)
        reference = sl.StreamRuntime(copy.deepcopy(model), key="id", features="x", mask="real", reset="reset")
        for key in (1, 2):
            reference.set_state(key, trainer.runtime.state(key))
        served = trainer.runtime.feed(batch.drop_columns(["y"]))
        trainer.runtime.load_state_dict(trainer.runtime.state_dict())   # replaces the store: learn asks again
        assert np.allclose(np.stack(served.column("output").to_numpy(zero_copy_only=False))[[0, 2, 4]],
                           np.stack(reference.feed(batch.drop_columns(["y"])).column("output")
                                    .to_numpy(zero_copy_only=False))[[0, 2, 4]], atol=1e-6)


@pytest.mark.gpu
def test_training_on_cuda_gives_the_cpu_numbers() -> None:
    rng = np.random.default_rng(4)
    batches = [train_batch([1, 2, 3] * 4, rng.uniform(-1, 1, (12, F)), rng.uniform(-1, 1, (12, 1)),
                           real=rng.uniform(size=12) > 0.2) for _ in range(4)]
    results = []
    for device in ("cpu", "cuda"):
        model = make_model(F, U, seed=5).to(device)
        trainer = sl.StreamTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), key="id",
                                   features="x", target="y", mask="real", device=device)
        outputs = [np.stack(trainer.learn(b).column("output").to_numpy(zero_copy_only=False)) for b in batches]
        results.append((outputs, weights(model), trainer.runtime.state(2)))
    (cpu_out, cpu_w, cpu_state), (gpu_out, gpu_w, gpu_state) = results
    for a, b in zip(cpu_out, gpu_out):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for name in cpu_w:
        np.testing.assert_allclose(cpu_w[name], gpu_w[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cpu_state[0][0], gpu_state[0][0], rtol=1e-4, atol=1e-5)


def test_go_backwards_trains_like_a_stateful_keras_layer_on_each_window() -> None:
    """Each learn call runs a stream's rows last to first (one Keras stateful call per window); outputs
    come back in row order, so Keras's fit pairs them with targets reversed within each window."""
    rng = np.random.default_rng(6)
    streams, k, batches = 3, 4, 3
    x = rng.uniform(-1, 1, (streams, k * batches, F)).astype(np.float32)
    y = rng.uniform(-1, 1, (streams, k * batches, 1)).astype(np.float32)
    torch.manual_seed(6)
    lstm = sl.LSTM(U, return_sequences=True, go_backwards=True)
    lstm.build((None, None, F))
    model = torch.nn.Sequential(lstm, torch.nn.Linear(U, 1))
    keras_like = copy.deepcopy(model)
    keras_like[0].stateful = True
    trainer = sl.StreamTrainer(model, torch.optim.SGD(model.parameters(), lr=0.3), key="id", features="x", target="y")
    reference = torch.optim.SGD(keras_like.parameters(), lr=0.3)
    for b in range(batches):
        window = slice(b * k, (b + 1) * k)
        keys = np.repeat(np.arange(streams), k)
        trainer.learn(train_batch(keys, x[:, window].reshape(-1, F), y[:, window].reshape(-1, 1)))
        out = keras_like(torch.from_numpy(x[:, window]))                      # processing order
        loss = (out - torch.from_numpy(y[:, window][:, ::-1].copy())).square().mean()
        loss.backward()
        reference.step()
        reference.zero_grad()
        mine, theirs = weights(model), weights(keras_like)
        for name in mine:
            np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_learn_waits_for_the_runtime_lock_so_learning_and_serving_exclude_each_other() -> None:
    model = make_model(F, U)
    trainer = sl.StreamTrainer(model, _sgd(model), key="id", features="x", target="y")
    batch = train_batch([1, 2], np.ones((2, F)), np.ones((2, 1)))
    trainer.learn(batch)
    with trainer.runtime.lock:   # as a feed in another thread holds it
        worker = threading.Thread(target=trainer.learn, args=(batch,))
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive() and trainer.counters["batches"] == 1, "learn ran while the runtime was busy"
    worker.join(timeout=60)
    assert not worker.is_alive() and trainer.counters["batches"] == 2
