"""Eviction by idle TTL (batches or time) and by max_streams (LRU), with the callback."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from runtime_helpers import F, lstm, make_batch

import streamlstm as sl
from streamlstm.errors import ArgumentTypeError, ConfigError


def feed(rt, keys):
    rt.feed(make_batch(keys, np.ones((len(keys), F))))


def test_ttl_in_batches_with_callback():
    evicted = []
    rt = sl.StreamRuntime(lstm(3), key="id", features="x", idle_ttl=2,
                          on_evict=lambda key, state: evicted.append((key, state)))
    feed(rt, [1, 2])          # batch 1
    h1 = rt.state(1)[0][0]
    feed(rt, [2])             # batch 2: 1 absent once
    assert sorted(rt.keys()) == [1, 2]
    feed(rt, [2])             # batch 3: 1 absent from two batches
    assert rt.keys() == [2]
    assert [k for k, _ in evicted] == [1] and isinstance(evicted[0][0], int)
    np.testing.assert_array_equal(evicted[0][1][0][0], h1)
    assert rt.stats()["evicted_ttl"] == 1 and rt.stats()["evictions"] == 1
    feed(rt, [1])             # comes back from zeros
    np.testing.assert_allclose(rt.state(1)[0][0], h1)


def test_ttl_in_time_with_a_clock():
    now = [0.0]
    evicted = []
    rt = sl.StreamRuntime(lstm(3), key="id", features="x", idle_ttl=datetime.timedelta(seconds=10),
                          clock=lambda: now[0], on_evict=lambda key, state: evicted.append(key))
    feed(rt, [1, 2])
    now[0] = 5.0
    feed(rt, [2])
    now[0] = 12.0
    feed(rt, [3])
    assert evicted == [1] and sorted(rt.keys()) == [2, 3]
    now[0] = 15.5
    feed(rt, [3])
    assert evicted == [1, 2]


def test_max_streams_evicts_least_recently_used():
    evicted = []
    rt = sl.StreamRuntime(lstm(3), key="id", features="x", max_streams=3,
                          on_evict=lambda key, state: evicted.append(key))
    feed(rt, [1, 2, 3])
    feed(rt, [1])             # 2 is now the least recently used
    feed(rt, [4])
    assert evicted == [2] and sorted(rt.keys()) == [1, 3, 4]
    feed(rt, [5, 6, 3])       # 1 and 4 are older than 5, 6, 3
    assert evicted == [2, 1, 4] and sorted(rt.keys()) == [3, 5, 6]
    assert rt.stats()["evicted_max_streams"] == 3


def test_string_keys_are_named_in_the_callback():
    evicted = []
    rt = sl.StreamRuntime(lstm(3), key="id", features="x", max_streams=1,
                          on_evict=lambda key, state: evicted.append(key))
    rt.feed(make_batch([1], np.ones((1, F)), key_type="str"))
    rt.feed(make_batch([2], np.ones((1, F)), key_type="str"))
    assert evicted == ["stream-1"] and rt.keys() == ["stream-2"]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"idle_ttl": 0}, ConfigError, "positive number of batches"),
    ({"idle_ttl": 1.5}, ArgumentTypeError, "int \\(batches\\) or a datetime.timedelta"),
    ({"max_streams": -1}, ConfigError, "positive integer"),
    ({"on_evict": 3}, ArgumentTypeError, "callable"),
    ({"mode": "fast"}, ConfigError, "auto, step, chunk"),
])
def test_bad_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        sl.StreamRuntime(lstm(3), key="id", features="x", **kwargs)
