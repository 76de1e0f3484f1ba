"""Ragged batches (streams with ``q`` to ``q + 2`` rows) in chunk mode, and the shared plan of batches
recorded live (``P`` streams, one row each, again and again, cut anywhere): the same numbers as step
mode and as one whole-sequence call per stream; the shared plan equals the plan made from scratch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from runtime_helpers import F, feed_all, lstm, two_lstm_model, whole_sequence

import streamlstm as sl
from streamlstm.runtime import segments, slabs
from streamlstm.runtime.layouts import ragged_layout, step_layout
from streamlstm.runtime.segments import plan_rows

NEVER = 1 << 62   # PERIODIC_ROWS that turns the shared plans off


def planned_from_scratch(group: np.ndarray, backwards: bool) -> segments.RowPlan:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segments, "PERIODIC_ROWS", NEVER)
        return plan_rows(group, False, None, None, backwards)


def assert_same_plan(plan: segments.RowPlan, expected: segments.RowPlan) -> None:
    for field in dataclasses.fields(expected):
        got, want = getattr(plan, field.name), getattr(expected, field.name)
        if isinstance(want, np.ndarray) or isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, want, err_msg=field.name)
        else:
            assert got == want, field.name
    assert dataclasses.astuple(step_layout(plan))[1] == dataclasses.astuple(step_layout(expected))[1]   # rounds
    got, want = ragged_layout(plan), ragged_layout(expected)
    assert (got is None) == (want is None)
    if want is not None:
        assert got.steps == want.steps and len(got.tail) == len(want.tail)
        for a, b in zip([got.prefix_rows, *(i for pair in got.tail for i in pair)],
                        [want.prefix_rows, *(i for pair in want.tail for i in pair)]):
            assert (a is None) == (b is None)
            if b is not None:
                np.testing.assert_array_equal(a, b)


def recorded(period: int, rows: int, rng: np.random.Generator, values: str, rotate: int = 0) -> np.ndarray:
    """The group of ``rows`` rows of ``period`` streams recorded live, starting at stream ``rotate``."""
    if values == "slots":
        head = rng.permutation(period)
    elif values == "new":   # keys not held yet: -1 - j
        head = -1 - rng.permutation(period)
    else:   # slots spread wide (the distinct check sorts)
        head = rng.choice(1 << 40, period, replace=False)
    return np.roll(head, -rotate)[np.arange(rows) % period]


@pytest.mark.parametrize("backwards", [False, True])
@pytest.mark.parametrize("values", ["slots", "new", "wide"])
@pytest.mark.parametrize(("period", "rows"), [(1, 4096), (700, 5000), (3000, 6000), (4099, 4100), (997, 65_536)])
def test_recorded_batches_share_the_plan_made_from_scratch(period, rows, values, backwards):
    rng = np.random.default_rng(period + rows)
    group = recorded(period, rows, rng, values)
    plan = plan_rows(group, False, None, None, backwards)
    assert_same_plan(plan, planned_from_scratch(group, backwards))
    rotated = recorded(period, rows, rng, values, rotate=period // 3)   # the next batch of the recording
    assert plan_rows(rotated, False, None, None, backwards) is plan


def near_misses(rng: np.random.Generator) -> dict[str, np.ndarray]:
    group = recorded(500, 5000, rng, "slots")
    changed, new_key, duplicate, short = group.copy(), group.copy(), group.copy(), group.copy()
    changed[4321] = group[4322]          # one row of another stream
    new_key[4999] = -1                   # one new stream in the last row
    duplicate[3::500] = group[7]         # the period holds a stream twice
    short[1] = group[0]                  # the first stream twice at the start
    return {"changed": changed, "new_key": new_key, "duplicate": duplicate, "short": short,
            "distinct": rng.permutation(5000), "random": rng.integers(0, 600, 5000)}


@pytest.mark.parametrize("case", ["changed", "new_key", "duplicate", "short", "distinct", "random"])
def test_batches_not_recorded_live_get_their_own_plan(case):
    group = near_misses(np.random.default_rng(8))[case]
    for backwards in (False, True):
        assert_same_plan(plan_rows(group, False, None, None, backwards), planned_from_scratch(group, backwards))


def stacked() -> sl.RNN:
    torch.manual_seed(3)
    layer = sl.RNN(sl.StackedRNNCells([sl.LSTMCell(4), sl.LSTMCell(3)]), return_sequences=True)
    layer.build((None, None, F))
    return layer


MODELS = {
    "lstm": lambda: torch.nn.Sequential(lstm(4), torch.nn.Linear(4, 2)),
    "relu": lambda: lstm(4, activation="relu"),
    "stacked_cells": stacked,
    "go_backwards": lambda: lstm(4, go_backwards=True),
    "two_layers_second_backwards": lambda: two_lstm_model(backwards=True),
}
# A go_backwards layer reads each feed's rows of a stream last to first (one Keras call per feed): its
# reference is step mode, not one call over the whole sequence.
BACKWARDS = {"go_backwards", "two_layers_second_backwards"}


def ragged_rows(streams: int, steps: int, extra: int, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
    """One batch's keys as recorded live: ``steps`` rounds of every stream, then ``extra`` rounds of
    ever fewer streams (streams get ``steps`` to ``steps + extra`` rows)."""
    rounds = [streams] * steps + [streams * (extra - j) // (extra + 1) for j in range(extra)]
    return np.concatenate([rng.permutation(count) if shuffle else np.arange(count) for count in rounds])


def reference(model: torch.nn.Module, keys: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = None
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        got = whole_sequence(model, x[rows], None)
        out = np.zeros((len(keys), got.shape[1]), np.float32) if out is None else out
        out[rows] = got
    return out


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("extra", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_streams_with_one_to_three_extra_rows_match_one_call_per_stream(name, extra, shuffle):
    rng = np.random.default_rng(extra)
    model = MODELS[name]()
    batches = [ragged_rows(40, steps, extra, rng, shuffle) for steps in (3, 4, 3)]
    keys = np.concatenate(batches)
    x = rng.normal(size=(len(keys), F)).astype(np.float32)
    cuts = np.cumsum([len(b) for b in batches])[:-1].tolist()
    chunk = feed_all(sl.StreamRuntime(model, key="id", features="x", mode="chunk"), keys, x, cuts)
    step = feed_all(sl.StreamRuntime(model, key="id", features="x", mode="step"), keys, x, cuts)
    np.testing.assert_allclose(chunk, step, rtol=1e-5, atol=1e-6)
    if name not in BACKWARDS:
        np.testing.assert_allclose(chunk, reference(model, keys, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_recording_cut_into_batches_takes_the_shortcuts_with_the_same_numbers(name, monkeypatch):
    """The shared plan, the one-call fused stage of a time-major cut and the rotated slots' slices."""
    rng = np.random.default_rng(9)
    model = MODELS[name]()
    keys = np.tile(np.arange(70), 9)
    x = rng.normal(size=(len(keys), F)).astype(np.float32)
    cuts = list(range(150, len(keys), 150))   # streams get 2 or 3 rows; the last batch 1 or 2
    fresh = feed_all(sl.StreamRuntime(model, key="id", features="x"), keys, x, cuts)
    monkeypatch.setattr(segments, "PERIODIC_ROWS", 1)
    monkeypatch.setattr(slabs, "ROTATED_ROWS", 2)   # the batches' slots are rotated ranges: two slices
    shared = feed_all(sl.StreamRuntime(model, key="id", features="x"), keys, x, cuts)
    np.testing.assert_array_equal(shared, fresh)
    if name not in BACKWARDS:
        np.testing.assert_allclose(shared, reference(model, keys, x), rtol=1e-5, atol=1e-6)
