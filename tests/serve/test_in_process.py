"""The server's parts in this process: micro-batching, DoPut/DoGet retention, actions, go_backwards."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest
import torch
from serve_helpers import F, assert_same_outputs, local_runtime, make_batch, outputs

import streamlstm as sl
from streamlstm.errors import StreamError
from streamlstm.serve.batcher import MicroBatcher
from streamlstm.serve.put_buffer import PutBuffer


@pytest.fixture
def server(model_file):
    server = sl.flight.StreamServer(local_runtime(model_file), "grpc://127.0.0.1:0", put_buffer_rows=5)
    yield server
    server.shutdown()


def _submit_together(batcher: MicroBatcher, batches: list[pa.RecordBatch]) -> list:
    """Submit from one thread per batch, in this order, all within one round."""
    results: list = [None] * len(batches)

    def submit(index: int) -> None:
        try:
            results[index] = batcher.submit(batches[index])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[index] = exc

    threads = []
    for index in range(len(batches)):
        threads.append(threading.Thread(target=submit, args=(index,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while len(batcher._queue) + batcher.counters["batches"] <= index:  # noqa: SLF001 (queued in this order)
            assert time.monotonic() < deadline, "a submit never queued"
            time.sleep(0.0005)
    for thread in threads:
        thread.join(30)
    return results


def test_one_bad_batch_fails_only_its_client_in_a_micro_batch(model_file):
    runtime = local_runtime(model_file)
    batcher = MicroBatcher(runtime.feed, max_delay=2.0)
    for _ in range(4):
        batcher.add_feeder()  # four open calls: the round waits until all four batches are queued
    rng = np.random.default_rng(0)
    batches = [make_batch(np.array([1, 2, 1]), rng), make_batch(np.array([2, 3]), rng),
               make_batch(np.array([4]), rng), make_batch(np.array([1, 3, 3]), rng)]
    x = batches[2].column(1).flatten().to_numpy().copy()
    x[0] = np.nan
    batches[2] = batches[2].set_column(1, "x", pa.FixedSizeListArray.from_arrays(pa.array(x), F))
    results = _submit_together(batcher, batches)
    assert batcher.counters["rounds"] == 1 and batcher.counters["fallbacks"] == 1
    assert isinstance(results[2], StreamError) and "non-finite" in str(results[2])
    reference = local_runtime(model_file)
    for index in (0, 1, 3):
        assert_same_outputs(results[index], reference.feed(batches[index]))


def test_a_micro_batch_equals_feeding_its_batches_in_arrival_order(model_file):
    runtime = local_runtime(model_file)
    batcher = MicroBatcher(runtime.feed, max_delay=2.0)
    for _ in range(6):
        batcher.add_feeder()
    rng = np.random.default_rng(1)
    batches = [make_batch(rng.integers(0, 4, 5), rng) for _ in range(6)]  # shared streams
    results = _submit_together(batcher, batches)
    assert batcher.counters["rounds"] == 1 and batcher.counters["max_round_batches"] == 6
    reference = local_runtime(model_file)
    for batch, result in zip(batches, results):
        assert_same_outputs(result, reference.feed(batch))


def test_one_client_on_an_idle_server_does_not_wait(model_file):
    """With one open call the round starts at once: the lone batch is answered (correctly) long before
    ``max_delay`` (60 s) could have passed, in a round of its own."""
    batcher = MicroBatcher(local_runtime(model_file).feed, max_delay=60.0)
    batcher.add_feeder()
    batch = make_batch(np.array([1, 2, 1]), np.random.default_rng(0))
    started = time.monotonic()
    result = batcher.submit(batch)
    waited = time.monotonic() - started
    assert waited < 30.0, f"a lone client waited {waited:.1f} s (max_delay 60 s)"
    assert batcher.counters["rounds"] == 1 and batcher.counters["batches"] == 1
    assert_same_outputs(result, local_runtime(model_file).feed(batch))


def test_go_backwards_models_feed_each_batch_alone(tmp_path):
    model = torch.nn.Sequential(sl.LSTM(3, return_sequences=True, go_backwards=True))
    model[0].build((None, None, F))
    server = sl.flight.StreamServer(sl.StreamRuntime(model), "grpc://127.0.0.1:0")
    try:
        assert server.batcher.coalesce is False
    finally:
        server.shutdown()


def test_put_buffer_keeps_the_newest_rows_per_stream():
    buffer = PutBuffer(3)
    keys = pa.array(["a", "b", "a", "a", "a"]).dictionary_encode()
    buffer.add(pa.record_batch({"k": keys, "output": pa.array([0, 1, 2, 3, 4])}))
    buffer.add(pa.record_batch({"k": pa.array(["a"]), "output": pa.array([5])}))
    assert buffer.rows_dropped == 2 and buffer.rows == 4
    table = buffer.take(["a", "zzz"])
    assert table.column("output").to_pylist() == [3, 4, 5] and table.schema.field("k").type == pa.string()
    assert buffer.take(None).column("output").to_pylist() == [1]
    assert buffer.take(None).num_rows == 0
    assert PutBuffer(0).take(None).num_rows == 0


def test_put_then_get_and_actions(server, model_file):
    rng = np.random.default_rng(2)
    batches = [make_batch(np.array([7, 8, 7]), rng), make_batch(np.array([8, 7, 7, 7]), rng)]
    with sl.flight.Client(f"grpc://127.0.0.1:{server.port}") as client:
        assert client.put(batches) == 7
        reference = local_runtime(model_file)
        expected = pa.Table.from_batches([reference.feed(b) for b in batches])
        got = client.get([7])  # newest 5 of stream 7's 5 rows, in order
        want = expected.filter(pa.compute.equal(expected.column(0), 7))
        np.testing.assert_allclose(outputs(got.combine_chunks().to_batches()[0]),
                                   outputs(want.combine_chunks().to_batches()[0]), rtol=1e-5, atol=1e-6)
        assert client.get([7]).num_rows == 0 and client.get().column(0).to_pylist() == [8, 8]
        stats = client.stats()
        assert stats["rows"] == 7 and stats["server"]["put_buffer_rows"] == 0
        assert client.reset([7, 12345]) == 1   # 12345 is no stream: nothing to reset
        reference.reset([7])
        batch = make_batch(np.array([7, 8]), rng)
        assert_same_outputs(client.feed(batch), reference.feed(batch))
        assert client.reset() == 2
        reference.reset()
        assert_same_outputs(client.feed(batch), reference.feed(batch))
        assert list(client.exchange([])) == []
        assert [b.num_rows for b in client.exchange([batch, batch.slice(0, 1)])] == [2, 1]
        assert client.health() == {"status": "ok", "streams": 2, "draining": False}


def test_a_refused_put_batch_raises_and_keeps_the_batches_before_it(server):
    rng = np.random.default_rng(3)
    good = make_batch(np.array([1, 2]), rng)
    x = good.column(1).flatten().to_numpy().copy()
    x[0] = np.inf
    bad = good.set_column(1, "x", pa.FixedSizeListArray.from_arrays(pa.array(x), F))
    with sl.flight.Client(f"grpc://127.0.0.1:{server.port}") as client:
        with pytest.raises(StreamError, match="non-finite value"):
            client.put([good, bad, good])
        assert client.stats()["rows"] == 2 and client.get().num_rows == 2
        assert client.feed(good).num_rows == 2  # the connection stays usable
