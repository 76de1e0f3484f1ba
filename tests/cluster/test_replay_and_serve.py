"""``streamlstm replay --shards 2`` and ``streamlstm serve --shards 2``: real subprocesses joining the test
session's Ray (``--ray-address``), compared with one local runtime."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from cluster_helpers import assert_same_output

import streamlstm as sl

TESTS = Path(__file__).resolve().parents[1]
F = 4


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = torch.nn.Sequential(sl.LSTM(8, return_sequences=True, input_shape=(None, F)), torch.nn.Linear(8, 2))
    path = tmp_path_factory.mktemp("cluster-model") / "model.slm"
    sl.save_model(model, path)
    return path


def _table(rows: int = 1200, streams: int = 40, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, streams, rows)
    x = rng.standard_normal((rows, F)).astype(np.float32)
    return pa.table({"stream_id": pa.array(keys, pa.int64()), "t": pa.array(np.arange(rows), pa.int64()),
                     "x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), F),
                     "r": pa.array(rng.random(rows) < 0.02)})


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}


def _assert_tables_equal(got: pa.Table, expected: pa.Table) -> None:
    assert got.schema.equals(expected.schema)
    assert got.column("stream_id").equals(expected.column("stream_id"))
    assert got.column("t").equals(expected.column("t"))
    a = np.stack(got.column("output").to_numpy(zero_copy_only=False))
    b = np.stack(expected.column("output").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_replay_with_two_shards_equals_replay_without_row_for_row(ray_address, model_file, tmp_path):
    source = tmp_path / "in.arrow"
    with pa.ipc.new_file(str(source), _table().schema) as writer:
        writer.write_table(_table(), max_chunksize=300)
    common = [sys.executable, "-m", "streamlstm", "replay", str(source), "--model", str(model_file), "--time", "t",
              "--reset", "r", "--batch-rows", "200", "--quiet"]
    one, two = tmp_path / "one.arrow", tmp_path / "two.arrow"
    subprocess.run([*common, "--out", str(one)], check=True, env=_env(), timeout=300)
    result = subprocess.run([*common, "--out", str(two), "--shards", "2", "--ray-address", ray_address,
                             "--cpus-per-shard", "0.1",
                             "--checkpoint", str(tmp_path / "ckpt"), "--checkpoint-every", "2"],
                            env=_env(), timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    _assert_tables_equal(pa.ipc.open_file(str(two)).read_all(), pa.ipc.open_file(str(one)).read_all())


def test_replay_refuses_a_bad_shard_count_before_starting_actors(model_file):
    table = _table(300, seed=1)
    with pytest.raises(sl.errors.ConfigError, match="`shards` must be a positive integer, got 0"):
        sl.replay_table(table, str(model_file), shards=0)


def test_serve_with_two_shards_and_eight_clients_equals_a_local_runtime(ray_address, model_file, tmp_path):
    sys.path.insert(0, str(TESTS / "serve"))
    try:
        from serve_helpers import ServerProcess
    finally:
        sys.path.remove(str(TESTS / "serve"))
    clients, batches, rows = 8, 6, 16
    rng = np.random.default_rng(5)
    plans = []
    for client in range(clients):   # each client owns its streams: any interleaving of clients is the same
        keys = np.arange(client * 10, client * 10 + 10)
        plans.append([pa.record_batch({
            "stream_id": pa.array(rng.choice(keys, rows), pa.int64()),
            "x": pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(rows * F).astype(np.float32)), F)})
            for _ in range(batches)])
    bad = pa.record_batch({"stream_id": pa.array([1, 2], pa.int64()),
                           "x": pa.FixedSizeListArray.from_arrays(pa.array([0.0] * 7 + [np.nan], pa.float32()), F)})
    args = ["--model", str(model_file), "--shards", "2", "--ray-address", ray_address, "--cpus-per-shard", "0.1",
            "--checkpoint", str(tmp_path / "ckpt")]
    with ServerProcess(args, tmp_path) as server:
        server.wait_healthy()
        answers = [[None] * batches for _ in range(clients)]
        failures: list[BaseException] = []

        def client_main(index: int) -> None:
            try:
                with server.client() as client:
                    for number, batch in enumerate(plans[index]):
                        answers[index][number] = client.feed(batch)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=client_main, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        assert not any(thread.is_alive() for thread in threads) and not failures, failures
        local = sl.StreamRuntime(sl.load_model(model_file))
        with pytest.raises(sl.errors.StreamError) as expected:
            local.feed(bad)
        with server.client() as client:
            with pytest.raises(sl.errors.StreamError, match="non-finite value"):
                client.feed(bad)
            stats = client.stats()
            assert stats["rows"] == clients * batches * rows and len(stats["shards"]) == 2
            client.checkpoint()
        assert "non-finite value" in str(expected.value)
        for plan, got in zip(plans, answers):
            for batch, answer in zip(plan, got):
                assert_same_output(answer, local.feed(batch))
    # The checkpoint is one runtime file (it loads on any number of shards: test_checkpoints.py).
    resumed = sl.load_runtime(tmp_path / "ckpt" / _state_file(tmp_path / "ckpt"))
    assert sorted(resumed.keys()) == sorted(local.keys())


def _state_file(directory: Path) -> str:
    return sorted(p.name for p in directory.glob("runtime-*.state"))[-1]
