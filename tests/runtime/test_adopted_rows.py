"""Adopted rows (streamlstm/runtime/slabs.py): a fleet fed in the same order every batch keeps its new
states as the slabs' rows instead of copying them, and every other access to the slabs sees exactly
the states a copy would have given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from runtime_helpers import TOL, lstm, make_batch, outputs, reference

import streamlstm as sl
from streamlstm.errors import StreamError
from streamlstm.runtime.slabs import PERMUTED_ROWS, CarrySlabs

SLOTS, SIZES = 16, (3, 2)


def _random(rows: int, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.normal(size=(rows, size)).astype(np.float32)) for size in SIZES]


def _adopting_slabs() -> tuple[CarrySlabs, list[torch.Tensor]]:
    """Slabs whose slots 4..7 hold adopted states; returns them and what every slot should hold."""
    slabs = CarrySlabs([list(SIZES)], torch.float32, torch.device("cpu"), SLOTS)
    expected = _random(SLOTS, 0)
    slabs.write(0, np.arange(SLOTS), expected, None)
    new = _random(4, 1)
    slabs.write_states(0, np.arange(4, 8), new, 4)
    states, _ = slabs.gather(0, np.arange(4, 8), None, False)
    assert all(got is value for got, value in zip(states, new)), "the written tensors are kept, not copied"
    assert not any(torch.equal(slab[4:8], value) for slab, value in zip(slabs.states[0], new))
    for target, value in zip(expected, new):
        target[4:8] = value
    return slabs, expected


def _other_range(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    got, _ = slabs.gather(0, np.arange(2, 10), None, False)
    assert all(torch.equal(g, e[2:10]) for g, e in zip(got, expected))


def _by_index(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    slots = np.array([7, 1, 5])
    got, _ = slabs.gather(0, slots, None, False)
    assert all(torch.equal(g, e[torch.from_numpy(slots)]) for g, e in zip(got, expected))


def _write_one(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    value = _random(1, 2)
    slabs.write(0, np.array([5]), value, torch.tensor([False]))
    for target, v in zip(expected, value):
        target[5] = v[0]


def _zero_one(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    slabs.zero(np.array([6]))
    for target in expected:
        target[6] = 0


def _grow(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    slabs.resize(2 * SLOTS)


def _compact(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    order = np.array([5, 4, 7, 6, 0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15])
    slabs.resize(SLOTS, order)
    for target in expected:
        target.copy_(target[torch.from_numpy(order)])


def _adopt_other_range(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    value = _random(3, 3)
    slabs.write_states(0, np.arange(10, 13), value, 10)
    for target, v in zip(expected, value):
        target[10:13] = v


def _adopt_same_range_again(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    value = _random(4, 4)
    slabs.write_states(0, np.arange(4, 8), value, 4)
    for target, v in zip(expected, value):
        target[4:8] = v


def _inside(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    for slots in (np.array([6, 4]), np.array([5, 6]), np.array([7, 6, 5, 4])):   # read from the adopted rows
        got, has = slabs.gather(0, slots, None, True)
        assert all(torch.equal(g, e[torch.from_numpy(slots)]) for g, e in zip(got, expected))
        assert bool(has.all())


def _adopt_in_another_order(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    slots = np.array([9, 7, 8, 6, 5, 4])   # fewer than PERMUTED_ROWS: settled, then written by index
    value, has = _random(6, 6), torch.tensor([True, False, True, True, False, True])
    slabs.write(0, slots, value, has, adopt=True)
    got, _ = slabs.gather(0, np.arange(4, 10), None, False)
    assert all(torch.equal(g, torch.empty_like(v).index_copy_(0, torch.from_numpy(slots - 4), v))
               for g, v in zip(got, value))
    assert torch.equal(slabs.gather(0, slots, None, True)[1], has)
    for target, v in zip(expected, value):
        target[torch.from_numpy(slots)] = v


def _write_without_handing_over(slabs: CarrySlabs, expected: list[torch.Tensor]) -> None:
    value = _random(4, 7)   # e.g. set_state: the caller keeps its tensors, they must be copied
    slabs.write(0, np.array([5, 4, 7, 6]), value, None)
    for target, v in zip(expected, value):
        target[torch.from_numpy(np.array([5, 4, 7, 6]))] = v
    for v in value:
        v.fill_(123.0)


@pytest.mark.parametrize("access", [_other_range, _by_index, _write_one, _zero_one, _grow, _compact,
                                    _adopt_other_range, _adopt_same_range_again, _inside, _adopt_in_another_order,
                                    _write_without_handing_over])
def test_every_access_sees_the_adopted_rows(access) -> None:
    slabs, expected = _adopting_slabs()
    access(slabs, expected)
    copies = slabs.read(np.arange(SLOTS))[0][0]
    for got, want in zip(copies, expected):
        np.testing.assert_array_equal(got, want.numpy())


def test_a_range_in_another_order_is_put_in_slot_order_and_adopted() -> None:
    """A fleet in a new order every batch: each commit's states are reordered and adopted, each
    gather reads them from the adopted tensors, and the slabs end with every write."""
    n = PERMUTED_ROWS
    slabs = CarrySlabs([list(SIZES)], torch.float32, torch.device("cpu"), n + 8)
    expected, flags = _random(n + 8, 0), torch.zeros(n + 8, dtype=torch.bool)
    slabs.write(0, np.arange(n + 8), expected, flags)
    rng = np.random.default_rng(3)
    for batch in range(3):
        slots = 2 + rng.permutation(n)
        value, has = _random(n, 10 + batch), torch.from_numpy(rng.random(n) > 0.5)
        slabs.write(0, slots, value, has, adopt=True)
        index = torch.from_numpy(slots)
        for target, v in zip(expected, value):
            target[index] = v
        flags[index] = has
        assert not torch.equal(slabs.states[0][0][2:n + 2], expected[0][2:n + 2]), "adopted, not copied"
        order = 2 + rng.permutation(n)
        got, got_has = slabs.gather(0, order, None, True)
        assert all(torch.equal(g, e[torch.from_numpy(order)]) for g, e in zip(got, expected))
        assert torch.equal(got_has, flags[torch.from_numpy(order)])
    (states, has), = slabs.read(np.arange(n + 8))
    for got, want in zip(states, expected):
        np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(has, flags.numpy())


def test_views_of_the_slabs_and_tensors_with_gradients_are_copied() -> None:
    slabs = CarrySlabs([list(SIZES)], torch.float32, torch.device("cpu"), SLOTS)
    slabs.write(0, np.arange(SLOTS), _random(SLOTS, 0), None)
    views, _ = slabs.gather(0, np.arange(4, 8), None, False)
    slabs.write_states(0, np.arange(0, 4), [v.clone() for v in views], 0)   # adopted: own memory
    slabs.write_states(0, np.arange(8, 12), list(views), 8)                # views of the slabs: copied
    grad = [v.clone().requires_grad_() for v in _random(4, 5)]
    with torch.no_grad():   # as a trainer's commit: the slabs never join a graph
        slabs.write_states(0, np.arange(12, 16), grad, 12)                 # with gradients: copied
    assert not any(g is v for g, v in zip(slabs.gather(0, np.arange(12, 16), None, False)[0], grad))
    first = slabs.read(np.arange(SLOTS))[0][0]
    np.testing.assert_array_equal(first[0][0:4], first[0][4:8])
    np.testing.assert_array_equal(first[0][8:12], first[0][4:8])
    np.testing.assert_array_equal(first[0][12:16], grad[0].detach().numpy())


def _fleet(batches: int, streams: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = np.tile(np.arange(streams), batches)
    return keys, rng.normal(size=(len(keys), 3)).astype(np.float32)


def test_a_fleet_in_the_same_order_interleaved_with_everything_else() -> None:
    """Same-order batches (adopted rows) between shuffled batches, state reads, a failed feed, an
    aborted prepared feed, an export and a compaction: outputs equal one whole-sequence run per stream."""
    streams, batches = 8, 12
    keys, x = _fleet(batches, streams, seed=3)
    layer = lstm(4, 3, seed=1)
    runtime = sl.StreamRuntime(layer, key="id", features="x", capacity=16)
    rng = np.random.default_rng(9)
    got = np.zeros((len(keys), 4), np.float32)
    for b in range(batches):
        rows = np.arange(b * streams, (b + 1) * streams)
        if b in (5, 9):
            rows = rng.permutation(rows)
        if b == 3:
            before = runtime.state(2)
            bad = x[rows].copy()
            bad[4, 1] = np.nan
            with pytest.raises(StreamError, match="non-finite"):
                runtime.feed(make_batch(keys[rows], bad))
            for (h, c), (h0, c0) in zip(runtime.state(2), before):
                np.testing.assert_array_equal(h, h0)
                np.testing.assert_array_equal(c, c0)
        if b == 4:
            runtime.prepare(make_batch(keys[rows], x[rows] + 1)).abort()
        if b == 7:
            table = runtime.export_streams()
            assert table.num_rows == streams
        got[rows] = outputs(runtime.feed(make_batch(keys[rows], x[rows])))
    np.testing.assert_allclose(got, reference(layer, keys, x, None, None, None), **TOL)
    expected_last = reference(layer, keys, x, None, None, None)[-streams:]
    for k in range(streams):
        (h, _), = runtime.state(k)
        np.testing.assert_allclose(h, expected_last[k], **TOL)


def test_adopted_rows_are_those_of_the_output() -> None:
    """With the LSTM as the last layer the output column and the adopted h share memory: a later
    feed must not change an output already returned."""
    streams = 6
    keys, x = _fleet(3, streams, seed=4)
    runtime = sl.StreamRuntime(lstm(4, 3, seed=2), key="id", features="x")
    first = runtime.feed(make_batch(keys[:streams], x[:streams]))
    second = runtime.feed(make_batch(keys[streams:2 * streams], x[streams:2 * streams]))
    kept = outputs(second).copy()
    runtime.feed(make_batch(keys[2 * streams:], x[2 * streams:]))
    runtime.reset()   # zeroes the adopted rows too: the first batch again gives the first outputs
    again = runtime.feed(make_batch(keys[:streams], x[:streams]))
    np.testing.assert_array_equal(outputs(second), kept)
    np.testing.assert_allclose(outputs(again), outputs(first), rtol=0, atol=0)


def test_a_large_fleet_in_new_orders_equals_one_sequence_run() -> None:
    """PERMUTED_ROWS streams and more, each batch one row per stream in a new order (or the same order
    twice): outputs equal the layer's own run over each stream's whole sequence."""
    streams, steps = PERMUTED_ROWS + 3, 5
    rng = np.random.default_rng(8)
    x = rng.normal(size=(streams, steps, 3)).astype(np.float32)
    layer = lstm(4, 3, seed=5)
    runtime = sl.StreamRuntime(layer, key="id", features="x")
    got = np.zeros((streams, steps, 4), np.float32)
    order = rng.permutation(streams)
    for t in range(steps):
        if t != 3:   # batch 3 repeats batch 2's order
            order = rng.permutation(streams)
        got[order, t] = outputs(runtime.feed(make_batch(order, x[order, t])))
    with torch.no_grad():
        want = layer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, **TOL)
