"""A Flight exchange is answered in one schema whatever the micro-batching did: clients whose inputs
declare the key field differently (nullable or not) share rounds, and every batch is applied once and
answered (an answer that could not be written would leave an applied batch the client sends again)."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
from serve_helpers import local_runtime, make_batch

import streamlstm as sl
from streamlstm.serve import protocol


def _exchange(uri: str, nullable: bool, seed: int, answers: list, index: int) -> None:
    client = flight.FlightClient(uri)
    rng = np.random.default_rng(seed)
    batches = [make_batch(np.array([seed, seed + 10]), rng) for _ in range(3)]
    schema = pa.schema([pa.field("stream_id", pa.int64(), nullable=nullable), batches[0].schema.field("x")])
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(protocol.FEED))
    got = []
    try:
        writer.begin(schema)
        for batch in batches:
            writer.write_batch(pa.record_batch(batch.columns, schema=schema))
            got.append(reader.read_chunk().data)
        writer.done_writing()
    except Exception as exc:  # noqa: BLE001 - the test reports it
        got.append(exc)
    finally:
        writer.close()
        client.close()
    answers[index] = got


def test_clients_declaring_the_key_field_differently_share_rounds_and_every_batch_is_answered_once(model_file):
    runtime = local_runtime(model_file)
    server = sl.flight.StreamServer(runtime, "grpc://127.0.0.1:0", max_delay_ms=3000)
    try:
        uri = f"grpc://127.0.0.1:{server.port}"
        answers: list = [None] * 4
        threads = [threading.Thread(target=_exchange, args=(uri, i % 2 == 0, i + 1, answers, i)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        for got in answers:
            assert all(isinstance(answer, pa.RecordBatch) for answer in got), got
            assert len(got) == 3 and all(answer.schema.equals(got[0].schema) for answer in got)
        assert runtime.stats()["rows"] == 4 * 3 * 2   # each batch applied exactly once
        assert server.stats()["server"]["mean_round_batches"] > 1   # rounds did mix the clients' batches
    finally:
        server.shutdown()
