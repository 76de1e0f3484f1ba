"""Concurrent feed calls are serialized; per-stream order is kept."""

from __future__ import annotations

import threading

import numpy as np
from runtime_helpers import F, lstm, make_batch, outputs

import streamlstm as sl


def test_eight_threads_feeding_disjoint_streams_match_sequential_feeding():
    layer = lstm(5)
    rng = np.random.default_rng(7)
    # Thread t owns keys 100*t .. 100*t+9 and feeds 12 batches of its own rows.
    work = {t: [(rng.integers(0, 10, 6) + 100 * t, rng.normal(size=(6, F)).astype(np.float32),
                 rng.random(6) > 0.2) for _ in range(12)] for t in range(8)}

    sequential = sl.StreamRuntime(layer, key="id", features="x", mask="m")
    expected = {t: [outputs(sequential.feed(make_batch(k, x, mask=m))) for k, x, m in batches]
                for t, batches in work.items()}

    concurrent = sl.StreamRuntime(layer, key="id", features="x", mask="m")
    got: dict[int, list[np.ndarray]] = {t: [] for t in work}
    start = threading.Barrier(8)

    def feeder(t: int) -> None:
        start.wait()
        for k, x, m in work[t]:
            got[t].append(outputs(concurrent.feed(make_batch(k, x, mask=m))))

    threads = [threading.Thread(target=feeder, args=(t,)) for t in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for t in work:
        np.testing.assert_allclose(np.concatenate(got[t]), np.concatenate(expected[t]), rtol=1e-6, atol=1e-7)
    assert concurrent.stats()["batches"] == 96 and len(concurrent) == len(sequential)
    for key in sequential.keys():
        np.testing.assert_allclose(concurrent.state(key)[0][1], sequential.state(key)[0][1], rtol=1e-6, atol=1e-7)
