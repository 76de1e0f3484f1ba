"""Graceful and hard restarts of a real server with ``--checkpoint DIR --resume``.

SIGTERM mid-load: the server answers every batch it read, refuses the rest (not applied), writes a
checkpoint and exits 0; resumed, every stream continues exactly (the outputs of all batches equal one
uninterrupted run). ``kill -9``: the resumed state is the last checkpoint's, whole.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from serve_helpers import ServerProcess, assert_same_outputs, local_runtime, make_batch

from streamlstm.errors import ServeError

pytestmark = pytest.mark.slow

CLIENTS, BATCHES, ROWS = 4, 60, 32


def _plans(seed: int, clients: int = CLIENTS) -> list[list]:
    rng = np.random.default_rng(seed)
    return [[make_batch(rng.choice(np.arange(c, 200, clients), ROWS), rng) for _ in range(BATCHES)]
            for c in range(clients)]


def _feed_until_refused(server: ServerProcess, plans, answers, start, acked) -> None:
    """Each client feeds from ``start[c]`` until done or refused; ``start[c]`` ends at its first unanswered batch."""
    def client_main(c: int) -> None:
        with server.client() as client:
            while start[c] < len(plans[c]):
                try:
                    answers[c][start[c]] = client.feed(plans[c][start[c]])
                except ServeError:
                    return
                start[c] += 1
                acked.append(1)
                time.sleep(0.002)

    threads = [threading.Thread(target=client_main, args=(c,)) for c in range(len(plans))]
    for thread in threads:
        thread.start()
    return threads


def test_sigterm_mid_load_then_resume_continues_every_stream_exactly(model_file, tmp_path):
    plans = _plans(seed=4)
    answers = [[None] * BATCHES for _ in plans]
    start, acked = [0] * CLIENTS, []
    args = ["--model", str(model_file), "--checkpoint", str(tmp_path / "ckpt"), "--checkpoint-every", "0"]
    with ServerProcess(args, tmp_path) as server:
        server.wait_healthy()
        threads = _feed_until_refused(server, plans, answers, start, acked)
        deadline = time.monotonic() + 60
        while len(acked) < CLIENTS * BATCHES // 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
        for thread in threads:
            thread.join(30)
        assert "streamlstm serve: stopped" in server.rest_of_output()
    stopped_at = list(start)
    assert 0 < sum(stopped_at) < CLIENTS * BATCHES, f"SIGTERM came before or after the load: {stopped_at}"
    with ServerProcess(args + ["--resume"], tmp_path) as server:
        assert "resumed" in server.first_line
        assert server.client().stats()["rows"] == sum(stopped_at) * ROWS
        threads = _feed_until_refused(server, plans, answers, start, acked)
        for thread in threads:
            thread.join(120)
    assert start == [BATCHES] * CLIENTS
    reference = local_runtime(model_file)
    for plan, got in zip(plans, answers):
        for batch, answer in zip(plan, got):
            assert_same_outputs(answer, reference.feed(batch))


def test_kill_9_then_resume_restores_the_last_checkpoint(model_file, tmp_path):
    plan = _plans(seed=5, clients=1)[0]
    first = [None] * BATCHES
    args = ["--model", str(model_file), "--checkpoint", str(tmp_path / "ckpt"), "--checkpoint-every", "0.2"]
    with ServerProcess(args, tmp_path) as server:
        server.wait_healthy()
        with server.client() as client:
            for number in range(10):
                first[number] = client.feed(plan[number])
            written = client.checkpoint()
            assert written["rows"] == 10 * ROWS and written["version"] >= 10
            stop_after = random.Random(0).uniform(0.3, 0.8)
            started, number = time.monotonic(), 10
            while number < BATCHES and time.monotonic() - started < stop_after:
                first[number] = client.feed(plan[number])
                number += 1
                time.sleep(0.01)
        server.signal(signal.SIGKILL)
        server.wait(30)
    fed = number
    with ServerProcess(args + ["--resume"], tmp_path) as server:
        restored = server.client().stats()["rows"]
        assert restored % ROWS == 0 and 10 * ROWS <= restored <= fed * ROWS, (restored, fed)
        # Continuing from the restored batch gives exactly what the first run gave from there.
        with server.client() as client:
            for number in range(restored // ROWS, BATCHES):
                answer = client.feed(plan[number])
                if number < fed:
                    assert_same_outputs(answer, first[number])
    leftovers = [p.name for p in (tmp_path / "ckpt").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers
    print(f"\nkill -9 after {fed} batches; resumed from the checkpoint after {restored // ROWS}")


def test_an_existing_checkpoint_needs_resume(model_file, tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "checkpoint.json").write_text("{}")
    result = subprocess.run([sys.executable, "-m", "streamlstm", "serve", "--model", str(model_file), "--port", "0",
                             "--checkpoint", str(tmp_path / "ckpt")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "holds the checkpoint of a server; add --resume" in result.stderr
