"""The shards' outputs are put back in input order exactly as one runtime returns them.

:func:`scatter_batches` (numpy scatter for fixed-width columns, Arrow take for the rest) against the
plain Arrow reassembly (concatenate, take with the inverse permutation) on every kind of column, and a
sharded runtime that returns states, against a local one, on batches cut every way (both shards, one
shard, empty, a slice of a larger batch: cut on the driver)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from cluster_helpers import ACTOR_CPUS, COLUMNS, assert_same_output, make_batch, model
from hypothesis import given, settings
from hypothesis import strategies as st

import streamlstm as sl
from streamlstm.cluster.layout import SplitPlan
from streamlstm.cluster.scatter import scatter_batches


def _columns(n: int, rng: np.random.Generator) -> pa.RecordBatch:
    """One column of every kind a runtime's output can hold (and a few more), with nulls in some."""
    holes = rng.random(n) < 0.3
    floats = rng.normal(size=(n, 4)).astype(np.float32)
    return pa.RecordBatch.from_arrays([
        pa.array(rng.integers(-5, 5, n), pa.int64()),
        pa.array([f"k{i}" for i in rng.integers(0, 9, n)]),
        pa.array([f"k{i}" for i in rng.integers(0, 3, n)]).dictionary_encode(),
        pa.array(rng.integers(0, 10**9, n), pa.timestamp("ns")),
        pa.FixedSizeListArray.from_arrays(pa.array(floats.reshape(-1)), 4),
        pa.FixedSizeListArray.from_arrays(pa.array(floats.reshape(-1)), 4, mask=pa.array(holes)),
        pa.array(rng.normal(size=n)),
        pa.array(np.where(holes, None, rng.integers(0, 9, n)).tolist(), pa.int32()),
        pa.array(rng.random(n) < 0.5),
    ], schema=pa.schema([pa.field("key", pa.int64(), nullable=False), ("name", pa.string()),
                         ("code", pa.dictionary(pa.int32(), pa.string())), ("t", pa.timestamp("ns")),
                         pa.field("state", pa.list_(pa.field("item", pa.float32(), nullable=False), 4),
                                  nullable=False),
                         ("output", pa.list_(pa.float32(), 4)), ("score", pa.float64()), ("n", pa.int32()),
                         ("flag", pa.bool_())]))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), shards=st.integers(2, 4), seed=st.integers(0, 2**31 - 1), offset=st.integers(0, 3))
def test_scatter_equals_concatenate_and_take(n, shards, seed, offset):
    """Every column kind, parts that are slices (an offset into their buffers), 2-4 shards: the result
    equals the plain Arrow reassembly, schema (nullability) included."""
    rng = np.random.default_rng(seed)
    shard = rng.integers(0, shards, n)
    shard[:2] = [0, 1]   # at least two shards hold rows
    plan = SplitPlan.of(shard, shards)
    whole = _columns(n + offset, rng).slice(offset)
    parts = {s: whole.take(pa.array(rows)) for s, rows in plan.rows.items()}
    parts = {s: _sliced(part, rng) for s, part in parts.items()}
    order = sorted(parts)
    got = scatter_batches([parts[s] for s in order], [plan.rows[s] for s in order], plan.inverse)
    expected = pa.concat_batches([parts[s] for s in order]).take(pa.array(plan.inverse))
    assert got.schema.equals(expected.schema, check_metadata=True)
    assert got.equals(expected)
    assert got.equals(whole)


def _sliced(part: pa.RecordBatch, rng: np.random.Generator) -> pa.RecordBatch:
    """``part`` as a slice at a random offset of a larger batch (as a shard's output may be)."""
    pad = int(rng.integers(0, 3))
    return pa.concat_batches([part.slice(0, pad), part, part.slice(0, pad)]).slice(pad, part.num_rows)


@pytest.fixture(scope="module")
def with_states(ray_session):
    runtime = sl.ShardedRuntime(model(3), shards=2, key_groups=16, num_cpus=ACTOR_CPUS, return_state=True,
                                **COLUMNS)
    yield runtime
    runtime.close()


def test_outputs_with_states_equal_one_local_runtime_for_every_kind_of_cut(with_states):
    """Outputs with state columns, a time column and masked rows (null outputs), on batches whose rows
    lie on both shards, on one shard only, on none (empty), and a batch that is a slice of a larger one."""
    local = sl.StreamRuntime(model(3), key_groups=16, return_state=True, **COLUMNS)
    rng = np.random.default_rng(7)
    keys = list(range(40))
    shard0 = [k for k in keys if with_states.shard_ranges()[0][1] > sl.key_group(k, 16)]
    big = make_batch(keys * 3, rng.normal(size=(120, 3)), mask=rng.random(120) > 0.2, time=np.arange(120) + 1000)
    batches = [
        make_batch(keys, rng.normal(size=(40, 3)), mask=rng.random(40) > 0.3, time=np.arange(40)),
        make_batch(shard0, rng.normal(size=(len(shard0), 3)), time=np.arange(len(shard0)) + 100),
        make_batch([], np.zeros((0, 3))),
        big.slice(40, 40),
        make_batch(keys[::-1] * 2, rng.normal(size=(80, 3)), time=np.repeat([2000, 2001], 40)),
    ]
    assert 0 < len(shard0) < len(keys)
    for batch, got in zip(batches, with_states.feed_many(batches)):
        expected = local.feed(batch)
        assert_same_output(got, expected)
        assert got.num_rows == batch.num_rows
    for key in keys:
        for (h1, c1), (h2, c2) in zip(with_states.state(key), local.state(key)):
            np.testing.assert_allclose(h1, h2, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(c1, c2, rtol=1e-5, atol=1e-6)
