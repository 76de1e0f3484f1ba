"""Two-phase feeding: ``prepare(batch)`` changes nothing; ``commit()`` applies exactly what ``feed`` would.

This is what an all-or-nothing feed across several runtimes (shards) is built on: prepare on every one,
then commit on all or abort on all.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from runtime_helpers import fixed_list, lstm, make_batch

import streamlstm as sl
from streamlstm.errors import StreamError


def frozen() -> float:
    return 0.0


def runtime(**kwargs):
    return sl.StreamRuntime(lstm(4), key="id", features="x", clock=frozen, **kwargs)


def snapshot(rt: sl.StreamRuntime) -> tuple:
    return rt.export_streams(), rt.keys(), dict(rt.counters), len(rt)


def batch(keys, step: int, **columns) -> pa.RecordBatch:
    x = np.sin(np.arange(len(keys) * 3, dtype=np.float32).reshape(-1, 3) + step)
    return make_batch(np.asarray(keys), x, **columns)


def test_prepare_then_commit_equals_feed_and_prepare_alone_changes_nothing():
    fed, two_phase = runtime(), runtime()
    for step, keys in enumerate([[1, 2, 3], [2, 2, 5], [1, 5, 7, 7]]):
        expected = fed.feed(batch(keys, step))
        before = snapshot(two_phase)
        prepared = two_phase.prepare(batch(keys, step))
        after = snapshot(two_phase)
        assert after[0].equals(before[0]) and after[1:] == before[1:], "prepare changed the runtime"
        assert prepared.state == "prepared" and prepared.num_rows == len(keys)
        assert prepared.commit().equals(expected)
        assert prepared.state == "committed"
        assert two_phase.export_streams().equals(fed.export_streams())
        assert two_phase.counters == fed.counters


def test_the_first_batch_prepared_and_aborted_leaves_an_empty_runtime():
    rt = sl.StreamRuntime(sl.LSTM(4), key="id", features="x", clock=frozen)
    prepared = rt.prepare(batch([1, 2], 0))
    prepared.abort()
    assert len(rt) == 0 and rt.counters["batches"] == 0 and rt.stats()["rows"] == 0
    with pytest.raises(StreamError, match="aborted already"):
        prepared.commit()
    rt.feed(batch([1, 2], 0))
    assert len(rt) == 2


def test_a_stale_prepared_feed_is_refused_and_applies_nothing():
    rt = runtime()
    rt.feed(batch([1, 2], 0))
    for change in (lambda: rt.feed(batch([1], 1)), lambda: rt.reset([2]),
                   lambda: rt.set_state(1, rt.state(2))):
        prepared = rt.prepare(batch([1, 2], 5))
        change()
        before = snapshot(rt)
        with pytest.raises(StreamError, match="changed since this feed was prepared"):
            prepared.commit()
        after = snapshot(rt)
        assert after[0].equals(before[0]) and after[1:] == before[1:]


def test_commit_once_abort_before_commit_and_only_on_its_own_runtime():
    rt, other = runtime(), runtime()
    prepared = rt.prepare(batch([1], 0))
    with pytest.raises(StreamError, match="belongs to another runtime"):
        other.commit(prepared)
    rt.commit(prepared)
    with pytest.raises(StreamError, match="committed already"):
        prepared.commit()
    with pytest.raises(StreamError, match="committed already"):
        prepared.abort()
    assert rt.counters["batches"] == 1
    assert repr(prepared) == "PreparedFeed(rows=1, state='committed')"


def test_late_rows_are_counted_by_the_commit_not_by_prepare():
    rt = runtime(time="t", late="drop")
    rt.feed(batch([1, 2], 0, time=[10, 10]))
    late = batch([1, 2], 1, time=[5, 11])
    rt.prepare(late).abort()
    assert rt.counters["dropped_late"] == 0
    out = rt.prepare(late).commit()
    assert rt.counters["dropped_late"] == 1
    assert out.column("output").null_count == 1


def test_a_bad_batch_fails_in_prepare_with_the_feed_error():
    rt = runtime()
    rt.feed(batch([1], 0))
    bad = pa.record_batch({"id": [1], "x": fixed_list(np.full((1, 3), np.nan, np.float32))})
    with pytest.raises(StreamError, match="NaN|finite"):
        rt.prepare(bad)
    assert rt.counters["batches"] == 1
