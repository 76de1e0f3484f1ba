"""Bad batches interleaved with good ones from concurrent clients: each bad batch gets the runtime's
error as a Flight error, changes no state, and fails no other client's rows of the same micro-batch;
the connection stays usable. Also bad requests: unknown action, bad payloads, wrong descriptor."""

from __future__ import annotations

import json
import threading

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from serve_helpers import ServerProcess, assert_same_outputs, local_runtime, make_batch

import streamlstm as sl
from streamlstm.errors import ConfigError, SchemaError, StreamError

CLIENTS, BATCHES, ROWS = 4, 30, 32


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    args = ["--model", str(model_file), "--time", "t", "--max-delay-ms", "5"]
    with ServerProcess(args, tmp_path_factory.mktemp("errors")) as process:
        process.wait_healthy()
        yield process


def _bad(kind: str, good: pa.RecordBatch) -> tuple[pa.RecordBatch, type, str]:
    """A bad variant of ``good`` and the error it must raise."""
    if kind == "nan":
        x = good.column(1).flatten().to_numpy().copy()
        x[5] = np.nan
        bad = good.set_column(1, "x", pa.FixedSizeListArray.from_arrays(pa.array(x), 4))
        return bad, StreamError, "non-finite value"
    if kind == "late":
        return good.set_column(2, "t", pa.array(np.zeros(good.num_rows, np.int64))), StreamError, "increase strictly"
    if kind == "missing":
        return good.drop_columns(["x"]), SchemaError, "'x'"
    x = good.column(1).flatten().to_numpy()[: good.num_rows * 3]  # width 3 instead of 4
    return good.set_column(1, "x", pa.FixedSizeListArray.from_arrays(pa.array(x), 3)), SchemaError, "width 4"


def test_bad_batches_between_good_ones(server, model_file):
    kinds = ["nan", "late", "missing", "width"]
    plans, errors, answers = [], [[] for _ in range(CLIENTS)], [[] for _ in range(CLIENTS)]
    rng = np.random.default_rng(3)
    for client in range(CLIENTS):
        streams = np.arange(client, 400, CLIENTS)
        plan = []
        for number in range(BATCHES):
            times = (number + 1) * 1000 + np.arange(ROWS)  # increasing per stream across batches
            good = make_batch(rng.choice(streams, ROWS), rng, time=times)
            if number % 3 == 1:  # a bad batch right before a good one of the same streams
                plan.append(("bad", *_bad(kinds[(number // 3 + client) % len(kinds)], good)))
            plan.append(("good", good, None, None))
        plans.append(plan)
    before = server.client().stats()

    def client_main(index: int) -> None:
        with server.client() as client:  # one client: after each error its next feed opens a new call
            for what, batch, error, message in plans[index]:
                if what == "good":
                    answers[index].append(client.feed(batch))
                    continue
                with pytest.raises(error, match=message) as caught:
                    client.feed(batch)
                errors[index].append(caught.value)

    threads = [threading.Thread(target=client_main, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    bad_count = sum(what == "bad" for plan in plans for what, *_ in plan)
    assert sum(len(e) for e in errors) == bad_count
    reference = local_runtime(model_file, time="t")
    for plan, got in zip(plans, answers):
        goods = [batch for what, batch, *_ in plan if what == "good"]
        assert len(got) == len(goods)
        for batch, answer in zip(goods, got):
            assert_same_outputs(answer, reference.feed(batch))
    after = server.client().stats()
    assert after["rows"] - before["rows"] == CLIENTS * BATCHES * ROWS  # only the good rows were applied
    print(f"\nmicro-batches fed again one by one after an error: {after['server']['fallbacks']}")


def test_an_error_carries_the_runtime_message_and_class_for_any_flight_client(server):
    client = flight.FlightClient(server.uri)
    batch = make_batch(np.array([10**6]), np.random.default_rng(0), time=np.array([1]))
    x = pa.FixedSizeListArray.from_arrays(pa.array([1.0, np.inf, 0.0, 0.0], pa.float32()), 4)
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(b"feed"))
    writer.begin(batch.schema)
    writer.write_batch(batch.set_column(1, "x", x))
    with pytest.raises(flight.FlightServerError) as caught:
        reader.read_chunk()
    detail = json.loads(caught.value.extra_info)
    assert detail["error"] == "StreamError" and "non-finite value (inf)" in detail["message"]
    assert detail["message"] in str(caught.value)
    try:
        writer.close()
    except flight.FlightError:
        pass
    # the connection stays usable
    assert client.do_action(flight.Action("health", b"")).__next__().body.to_pybytes().startswith(b"{")


@pytest.mark.parametrize("action, body, message", [
    ("nope", b"", "unknown action 'nope'; the actions are reset, stats, checkpoint, health"),
    ("reset", b"{not json", "must be UTF-8 JSON"),
    ("reset", b'{"keys": [1.5]}', "keys must be a list of integers or strings"),
    ("checkpoint", b"", "without a checkpoint directory"),
])
def test_bad_actions(server, action, body, message):
    with server.client() as client, pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        client._action(action, body)  # noqa: SLF001 (a raw action the public client never sends)
    assert server.client().health()["status"] == "ok"


def test_wrong_descriptor_and_bad_ticket(server):
    client = flight.FlightClient(server.uri)
    batch = make_batch(np.array([1]), np.random.default_rng(0), time=np.array([10**9]))
    writer, _ = client.do_exchange(flight.FlightDescriptor.for_command(b"eat"))
    with pytest.raises(flight.FlightServerError, match="descriptor command b'feed', got b'eat'"):
        writer.begin(batch.schema)
        writer.write_batch(batch)
        writer.done_writing()
        _.read_chunk()
    with pytest.raises(flight.FlightServerError, match="the ticket must be UTF-8 JSON"):
        client.do_get(flight.Ticket(b"[1")).read_all()
    assert sorted(a.type for a in client.list_actions()) == sorted(sl.flight.ACTIONS)
