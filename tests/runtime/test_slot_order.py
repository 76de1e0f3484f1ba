"""Slot order (streamlstm/runtime/execute.py, ``_slot_order``): a batch of one row per held stream
whose slots make one range in another order (a fleet whose rows come in a new order every batch) runs
in slot order, reads its carries as they are and commits its new states with no reordering; every
other batch takes the general layout. Outputs and states equal one stream at a time, and a failed feed
changes nothing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_helpers import TOL, assert_same_states, lstm, make_batch, outputs, reference, two_lstm_model

import streamlstm as sl
from streamlstm.errors import StreamError

KINDS = ("shuffled", "same", "repeats", "masked", "reset", "ended", "subset", "failed")


def _model(name: str) -> torch.nn.Module:
    if name == "lstm":
        return lstm(4, seed=1)
    if name == "backwards":
        return lstm(4, seed=2, go_backwards=True)
    if name == "head":
        torch.manual_seed(3)
        return torch.nn.Sequential(lstm(5, seed=3), torch.nn.Linear(5, 2))
    return two_lstm_model(seed=4)


def _rows(kind: str, streams: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One batch's keys and flags of ``kind``."""
    if kind == "same":
        return np.arange(streams), {}
    if kind == "repeats":
        return rng.integers(0, streams, size=streams + 2), {}
    if kind == "subset":   # distinct held keys whose slots are not the whole range (or not a range)
        return rng.permutation(streams)[:max(1, streams - 2)], {}
    keys = rng.permutation(streams)
    if kind == "masked":
        return keys, {"mask": rng.random(streams) > 0.4}
    if kind == "reset":
        return keys, {"reset": rng.random(streams) > 0.6}
    if kind == "ended":   # the ended streams' keys start new streams (new slots) in later batches
        return keys, {"end": rng.random(streams) > 0.7}
    return keys, {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams=st.integers(2, 9), kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=8),
       name=st.sampled_from(["lstm", "backwards", "head", "two"]), seed=st.integers(0, 2**16))
def test_shuffled_fleets_mixed_with_every_other_batch(streams: int, kinds: list[str], name: str, seed: int) -> None:
    """Batches of every kind after a first batch that places the fleet in a random order: the outputs
    equal one model call per stream sequence, the states equal a runtime fed one stream at a time, and a
    feed with a NaN raises and leaves every stream as it was."""
    rng = np.random.default_rng(seed)
    model = _model(name)
    runtime = sl.StreamRuntime(model, key="id", features="x", mask="m", reset="r", end="e")
    single = sl.StreamRuntime(model, key="id", features="x", mask="m", reset="r", end="e")
    fed_keys, fed_x, fed_flags, got = [], [], [], []
    for kind in ["shuffled", *kinds]:
        keys, flags = _rows(kind, streams, rng)
        x = rng.normal(size=(len(keys), 3)).astype(np.float32)
        if kind == "failed":
            before = _held(runtime)
            x[rng.integers(len(keys)), 1] = np.nan
            with pytest.raises(StreamError, match="non-finite"):
                runtime.feed(make_batch(keys, x))
            assert _held(runtime).equals(before)
            continue
        n = len(keys)
        flags = {"mask": np.ones(n, bool), "reset": np.zeros(n, bool), "end": np.zeros(n, bool)} | flags
        got.append(outputs(runtime.feed(make_batch(keys, x, **flags))))
        for key in np.unique(keys):   # one stream at a time: its rows of the batch as one feed
            rows = keys == key
            single.feed(make_batch(keys[rows], x[rows], **{k: v[rows] for k, v in flags.items()}))
        fed_keys.append(keys), fed_x.append(x), fed_flags.append(flags)
    held = _held(runtime)
    assert held.column("key").equals(_held(single).column("key"))
    assert_same_states(runtime, single, held.column("key").to_pylist())
    if name != "backwards":   # (each feed runs a stream's rows last to first: no whole-sequence reference)
        want = reference(model, np.concatenate(fed_keys), np.concatenate(fed_x),
                         *(np.concatenate([f[k] for f in fed_flags]) for k in ("mask", "reset", "end")))
        np.testing.assert_allclose(np.concatenate(got), want, **TOL)


def _held(runtime: sl.StreamRuntime) -> pa.Table:
    """Every held stream's key, carries and row and batch counts, by key."""
    return runtime.export_streams().drop_columns(["idle_seconds"]).sort_by("key")


class _Calls(torch.overrides.TorchFunctionMode):
    """Counts the torch functions called from Python by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("streams", [50, 1500])
def test_a_shuffled_fleet_gathers_its_inputs_and_outputs_only(streams: int) -> None:
    """Held streams in a new order: one gather of the inputs, one of the outputs, the carries read
    and the new states kept as they are (no gather, scatter or copy of a carry), below and above the
    commit's PERMUTED_ROWS; the outputs are those of the same rows in slot order."""
    rng = np.random.default_rng(5)
    layer = lstm(4, seed=6)
    runtime = sl.StreamRuntime(layer, key="id", features="x")
    ordered = sl.StreamRuntime(layer, key="id", features="x")
    first = np.arange(streams)
    x0 = rng.normal(size=(streams, 3)).astype(np.float32)
    runtime.feed(make_batch(first, x0))
    ordered.feed(make_batch(first, x0))
    for _ in range(3):
        keys = rng.permutation(streams)
        x = rng.normal(size=(streams, 3)).astype(np.float32)
        calls = _Calls()
        with calls:
            got = outputs(runtime.feed(make_batch(keys, x)))
        want = outputs(ordered.feed(make_batch(first, x[np.argsort(keys)])))[keys]   # row i is key keys[i]
        np.testing.assert_allclose(got, want, **TOL)
        moves = [name for name in calls.names if name.startswith(("index_", "copy_", "scatter", "gather"))]
        assert moves == ["index_select", "index_select"], moves
    assert_same_states(runtime, ordered, range(streams))


def test_a_shuffled_fleet_keeps_its_stamps_and_output_flags() -> None:
    """A fleet in new orders without reset or end columns (shared row plans, stamps kept pending in
    key order, output flags known from the previous batch of the same slots): each stream's idle rows
    and batches are those of its last row; a stream reset between batches has its previous output
    back from its next real step on (a masked step then repeats that step's output, not zeros)."""
    rng = np.random.default_rng(7)
    streams, layer = 40, lstm(4, seed=8)
    runtime = sl.StreamRuntime(layer, key="id", features="x", mask="m")
    for _ in range(4):
        keys = rng.permutation(streams)
        runtime.feed(make_batch(keys, rng.normal(size=(streams, 3)).astype(np.float32)))
        held = runtime.export_streams().sort_by("key")
        row_of = np.argsort(keys)   # row of each key
        assert held.column("idle_rows").to_pylist() == (streams - row_of).tolist()
        assert held.column("idle_batches").to_pylist() == [0] * streams
    victim = int(keys[5])
    runtime.reset([victim])   # its previous output is zeros until its next real step
    real = rng.permutation(streams)
    last = outputs(runtime.feed(make_batch(real, rng.normal(size=(streams, 3)).astype(np.float32))))
    keys = rng.permutation(streams)
    masked = outputs(runtime.feed(make_batch(keys, rng.normal(size=(streams, 3)).astype(np.float32),
                                             mask=keys != victim)))
    repeated = last[int(np.flatnonzero(real == victim)[0])]
    assert np.abs(repeated).max() > 0
    np.testing.assert_array_equal(masked[int(np.flatnonzero(keys == victim)[0])], repeated)
