"""16 concurrent clients x 200 batches x 64 rows over 1,000 streams against a real server process.

Every row is answered once, in order, with the outputs a local runtime gives for the same per-stream
sequences. Throughput and p50/p99 batch latency are printed (run with ``-s``), never asserted.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from serve_helpers import ServerProcess, assert_same_outputs, local_runtime, make_batch, percentile_ms

CLIENTS, BATCHES, ROWS, STREAMS = 16, 200, 64, 1000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    with ServerProcess(["--model", str(model_file)], tmp_path_factory.mktemp("load")) as process:
        process.wait_healthy()
        yield process


def _plan(streams_of: list[np.ndarray], seed: int) -> list[list]:
    """BATCHES batches of ROWS rows per client, keys drawn from the client's streams (repeats included)."""
    rng = np.random.default_rng(seed)
    return [[make_batch(rng.choice(streams, ROWS), rng) for _ in range(BATCHES)] for streams in streams_of]


def _run_clients(server, plans, turns=None):
    """Each client feeds its batches in order; ``turns(client, batch)`` is a context that orders shared streams."""
    answers = [[None] * BATCHES for _ in plans]
    latencies: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def client_main(index: int) -> None:
        mine = []
        try:
            with server.client() as client:
                for number, batch in enumerate(plans[index]):
                    with turns(index, number) if turns else _nothing():
                        started = time.perf_counter()
                        answers[index][number] = client.feed(batch)
                        mine.append(time.perf_counter() - started)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client_main, args=(i,)) for i in range(len(plans))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    seconds = time.perf_counter() - started
    assert not any(thread.is_alive() for thread in threads), "a client did not finish"
    assert not failures, failures[0]
    return answers, latencies, seconds


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def _report(name, server, latencies, seconds, rows):
    stats = server.client().stats()["server"]
    print(f"\n{name}: {rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s; batch latency p50 "
          f"{percentile_ms(latencies, 50):.2f} ms, p99 {percentile_ms(latencies, 99):.2f} ms; "
          f"{stats['mean_round_batches']:.1f} batches per micro-batch (max {stats['max_round_batches']})")


def test_clients_owning_their_streams(server, model_file):
    streams_of = [np.arange(STREAMS)[np.arange(STREAMS) % CLIENTS == i] for i in range(CLIENTS)]
    plans = _plan(streams_of, seed=1)
    before = server.client().stats()["rows"]
    answers, latencies, seconds = _run_clients(server, plans)
    _report("16 clients, own streams", server, latencies, seconds, CLIENTS * BATCHES * ROWS)
    # Streams are disjoint between clients: feeding client after client gives every stream its sequence.
    reference = local_runtime(model_file)
    for plan, got in zip(plans, answers):
        for batch, answer in zip(plan, got):
            assert_same_outputs(answer, reference.feed(batch))
    assert server.client().stats()["rows"] - before == CLIENTS * BATCHES * ROWS  # no row lost or repeated


def test_clients_sharing_streams_in_an_agreed_order(server, model_file):
    """Clients 2p and 2p+1 share streams (keys offset past the first test's) and take turns batch by
    batch: the agreed order of every shared stream is A0, B0, A1, B1, ..."""
    pairs = CLIENTS // 2
    shared = [STREAMS + np.arange(STREAMS)[np.arange(STREAMS) % pairs == p] for p in range(pairs)]
    plans = _plan([shared[i // 2] for i in range(CLIENTS)], seed=2)
    turn = [0] * pairs
    changed = threading.Condition()

    class Turn:
        def __init__(self, client, number):
            self.pair, self.mine = client // 2, 2 * number + client % 2

        def __enter__(self):
            with changed:
                assert changed.wait_for(lambda: turn[self.pair] == self.mine, 60), "turn never came"

        def __exit__(self, *exc_info):
            with changed:
                turn[self.pair] += 1
                changed.notify_all()

    answers, latencies, seconds = _run_clients(server, plans, Turn)
    _report("16 clients, shared streams in turns", server, latencies, seconds, CLIENTS * BATCHES * ROWS)
    reference = local_runtime(model_file)
    for pair in range(pairs):
        for number in range(BATCHES):
            for client in (2 * pair, 2 * pair + 1):
                assert_same_outputs(answers[client][number], reference.feed(plans[client][number]))
