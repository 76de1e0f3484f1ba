"""Moving streams between runtimes: export_streams / import_streams / state_dict / save_runtime.

A stream exported from one runtime and imported into another with the same model continues exactly as
if it had never moved; a failed import or load changes nothing. Every runtime here reads a frozen clock,
so ``idle_seconds`` (and so whole exported tables) compare exactly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_helpers import (
    F,
    assert_same_states,
    fixed_list,
    key_value,
    lstm,
    make_batch,
    outputs,
    two_lstm_model,
)

import streamlstm as sl
from streamlstm.errors import ArgumentTypeError, SchemaError, StateError, StreamError

TOL = {"rtol": 1e-5, "atol": 1e-6}


def frozen() -> float:
    return 0.0


def runtime(model, mode="step", **kwargs):
    return sl.StreamRuntime(model, key="id", features="x", mask="m", reset="r", end="e", mode=mode, clock=frozen,
                            **kwargs)


def stacked_cells_model() -> torch.nn.Sequential:
    torch.manual_seed(3)
    stacked = sl.RNN([sl.LSTMCell(4), sl.LSTMCell(3)], return_sequences=True)
    stacked.build((None, None, F))
    return torch.nn.Sequential(stacked, torch.nn.Linear(3, 2))


def by_key(table: pa.Table) -> pa.Table:
    return table.sort_by("key")


# -- the property: streams moved at random points continue exactly --------------------------------------------
KEYS, GROUPS = 6, 4
MODELS = {"lstm": lambda: lstm(4), "two_lstm_dense": two_lstm_model,
          "backwards_second": lambda: two_lstm_model(backwards=True), "stacked_cells": stacked_cells_model}
BUILT = {name: make() for name, make in MODELS.items()}
UNITS = {name: [cell.units for cell in model.modules() if isinstance(cell, sl.LSTMCell)]
         for name, model in BUILT.items()}

a_move = st.one_of(
    st.tuples(st.integers(0, 1), st.just("keys"), st.frozensets(st.integers(0, KEYS - 1))),
    st.tuples(st.integers(0, 1), st.just("groups"), st.frozensets(st.integers(0, GROUPS - 1))),
)


@st.composite
def histories(draw):
    """Rows over up to 6 keys cut into batches, and after each batch maybe a move (source runtime, by
    "keys" or "groups", which ones)."""
    n = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = {
        "keys": rng.integers(0, draw(st.integers(1, KEYS)), n),
        "x": rng.normal(size=(n, F)).astype(np.float32),
        "mask": rng.random(n) > draw(st.sampled_from([0.0, 0.3, 0.8])),
        "reset": rng.random(n) < draw(st.sampled_from([0.0, 0.15])),
        "end": rng.random(n) < draw(st.sampled_from([0.0, 0.1])),
    }
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=7))) - {n})
    bounds = [0, *cuts, n]
    moves = draw(st.lists(st.one_of(st.none(), a_move), min_size=len(bounds) - 1, max_size=len(bounds) - 1))
    if all(m is None for m in moves):
        moves[draw(st.integers(0, len(moves) - 1))] = draw(a_move)
    preset = {k: rng.normal(size=2 * 8).astype(np.float32) for k in draw(st.sets(st.integers(0, KEYS - 1),
                                                                                  max_size=2))}
    return rows, bounds, moves, preset


def rows_batch(rows, index: np.ndarray, key_type: str) -> pa.RecordBatch:
    return make_batch(rows["keys"][index], rows["x"][index], mask=rows["mask"][index], reset=rows["reset"][index],
                      end=rows["end"][index], key_type=key_type)


def move(rts, holder, source, how, which, key_type, mode, model):
    """Move streams out of ``rts[source]`` into the other runtime; the source is rebuilt from an export of
    the streams it keeps, so each stream is held by one runtime only. Updates ``holder`` (key id -> runtime)."""
    src, dst = rts[source], rts[1 - source]
    mine = [k for k in range(KEYS) if holder[k] == source]
    groups = dict(zip(mine, sl.key_group([key_value(k, key_type) for k in mine], GROUPS).tolist())) if mine else {}
    if how == "keys":
        ids = [k for k in mine if k in which]
        moved = src.export_streams(keys=[key_value(k, key_type) for k in ids])
        kept = src.export_streams(keys=[key_value(k, key_type) for k in mine if k not in which])
    else:
        ids = [k for k in mine if groups[k] in which]
        moved = src.export_streams(key_groups=sorted(which))
        kept = src.export_streams(key_groups=[g for g in range(GROUPS) if g not in which])
    moved_keys, kept_keys = moved.column("key").to_pylist(), kept.column("key").to_pylist()
    assert set(moved_keys) <= {key_value(k, key_type) for k in ids}
    assert sorted(moved_keys + kept_keys) == sorted(src.keys()), "the two exports partition the source's streams"
    for table in (moved, kept):
        keys = table.column("key").to_pylist()
        assert table.column("key_group").to_pylist() == (sl.key_group(keys, GROUPS).tolist() if keys else [])
    fresh = runtime(model, mode, key_groups=GROUPS)
    # A runtime that never held a stream exports an int64 key column (see test_empty_export_imports_anywhere).
    for target, table in ((dst, moved), (fresh, kept)):
        if not table.num_rows:
            continue
        before = set(target.keys())
        assert target.import_streams(table) == table.num_rows
        assert set(target.keys()) == before | set(table.column("key").to_pylist())
        exported = target.export_streams(keys=table.column("key").to_pylist())
        assert by_key(exported).equals(by_key(table)), "an imported stream exports as it was exported"
    rts[source] = fresh
    for k in ids:
        holder[k] = 1 - source


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(MODELS))
@SETTINGS
@given(data=histories(), key_type=st.sampled_from(["int", "str"]), mode=st.sampled_from(["step", "chunk"]))
def test_moved_streams_continue_exactly(name, data, key_type, mode):
    rows, bounds, moves, preset = data
    model = BUILT[name]
    reference = runtime(model, mode, key_groups=GROUPS)
    rts = [runtime(model, mode, key_groups=GROUPS), runtime(model, mode, key_groups=GROUPS)]
    holder = dict.fromkeys(range(KEYS), 0)
    for k, values in preset.items():   # carries set from outside: no previous output yet (masked rows give 0)
        states = [(values[:units], values[8:8 + units]) for units in UNITS[name]]
        reference.set_state(key_value(k, key_type), states)
        rts[0].set_state(key_value(k, key_type), states)
    for lo, hi, step in zip(bounds[:-1], bounds[1:], moves):
        expected = outputs(reference.feed(rows_batch(rows, np.arange(lo, hi), key_type)))
        got = np.full_like(expected, np.nan)
        owner = np.array([holder[k] for k in rows["keys"][lo:hi]])
        for i, rt in enumerate(rts):
            part = np.flatnonzero(owner == i)
            if len(part):
                got[part] = outputs(rt.feed(rows_batch(rows, lo + part, key_type)))
        np.testing.assert_allclose(got, expected, **TOL)
        if step is not None:
            move(rts, holder, *step, key_type, mode, model)
        held = [set(rt.keys()) for rt in rts]
        assert not held[0] & held[1] and held[0] | held[1] == set(reference.keys())
        for k in range(KEYS):
            assert (key_value(k, key_type) in rts[holder[k]]) == (key_value(k, key_type) in reference)
    for rt in rts:
        assert_same_states(rt, reference, rt.keys())


# -- key groups ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key_type", ["int", "str"])
@pytest.mark.parametrize("groups", [1, 7, 128])
def test_key_groups_partition_the_streams_and_reshard_exactly(key_type, groups):
    rng = np.random.default_rng(groups)
    model = lstm(3)
    ids = rng.choice(10**6, 300, replace=False)
    rt = runtime(model, key_groups=groups)
    rt.feed(make_batch(ids, rng.normal(size=(300, F)), key_type=key_type))
    every = rt.export_streams()
    keys = every.column("key").to_pylist()
    assert sorted(keys) == sorted(rt.keys()) == sorted(key_value(k, key_type) for k in ids)
    assert every.column("key_group").type == pa.int32()
    assert every.column("key_group").to_pylist() == sl.key_group(keys, groups).tolist()
    assert every.schema.metadata[b"streamlstm.key_groups"] == str(groups).encode()
    seen = []
    for g in range(groups):
        part = rt.export_streams(key_groups=[g])
        got = part.column("key").to_pylist()
        assert set(part.column("key_group").to_pylist()) <= {g}
        assert all(sl.key_group(k, groups) == g for k in got)
        seen += got
    assert sorted(seen) == sorted(keys), "the groups are disjoint and cover every stream"
    assert rt.export_streams(key_groups=[]).num_rows == 0
    chosen = [0, groups // 2]
    some = keys[:60] + [key_value(-5, key_type)]          # -5 / "stream--5" is not held: skipped
    both = rt.export_streams(keys=some, key_groups=chosen).column("key").to_pylist()
    assert sorted(both) == sorted(k for k in keys[:60] if sl.key_group(k, groups) in chosen)

    # reshard into 3 runtimes by group (with their own key_groups count, recomputed on import)
    shards = [runtime(model, key_groups=5) for _ in range(3)]
    for g in range(groups):
        shards[g % 3].import_streams(rt.export_streams(key_groups=[g]))
    assert sum(len(s) for s in shards) == len(rt)
    for shard in shards:
        table = shard.export_streams()
        held = table.column("key").to_pylist()
        assert table.column("key_group").to_pylist() == (sl.key_group(held, 5).tolist() if held else [])
    later = rng.permutation(np.concatenate([ids[:150], ids[:40]]))
    x = rng.normal(size=(len(later), F))
    expected = outputs(rt.feed(make_batch(later, x, key_type=key_type)))
    owner = sl.key_group([key_value(k, key_type) for k in later], groups) % 3
    for i, shard in enumerate(shards):
        part = np.flatnonzero(owner == i)
        if len(part):
            np.testing.assert_allclose(outputs(shard.feed(make_batch(later[part], x[part], key_type=key_type))),
                                       expected[part], **TOL)


# -- the time column ---------------------------------------------------------------------------------------------
TIME_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "timestamp_ms": pa.timestamp("ms")}


def timed(keys, x, times, arrow_type) -> pa.RecordBatch:
    batch = make_batch(keys, x)
    return batch.append_column("t", pa.array(np.asarray(times, np.int64)).cast(arrow_type))


@pytest.mark.parametrize("time_name", sorted(TIME_TYPES))
def test_moved_stream_keeps_its_last_time(time_name):
    arrow_type = TIME_TYPES[time_name]
    rng = np.random.default_rng(4)
    model = lstm(4)
    make = lambda: sl.StreamRuntime(model, key="id", features="x", time="t", clock=frozen)  # noqa: E731
    a, b = make(), make()
    a.feed(timed([1, 2, 3, 2], rng.normal(size=(4, F)), [10, 20, 30, 40], arrow_type))
    a.set_state(9, a.state(1))                        # a stream without a time yet
    moved = a.export_streams(keys=[2, 9])
    assert moved.schema.field("last_time").type == arrow_type
    assert moved.column("last_time").cast(pa.int64()).to_pylist() == [40, None]
    assert b.import_streams(moved) == 2
    assert by_key(b.export_streams()).equals(by_key(moved))

    late = timed([7, 2], rng.normal(size=(2, F)), [1, 39], arrow_type)   # row 1 is before stream 2's time 40
    with pytest.raises(StreamError) as at_home:
        a.feed(late)
    before = b.export_streams()
    with pytest.raises(StreamError) as moved_away:
        b.feed(late)
    assert "row 1 (stream 2)" in str(moved_away.value) and "not after" in str(moved_away.value)
    assert str(moved_away.value) == str(at_home.value)
    assert b.export_streams().equals(before) and sorted(b.keys()) == [2, 9]
    with pytest.raises(StreamError, match="not after"):       # equal to the last time is late too
        b.feed(timed([2], rng.normal(size=(1, F)), [40], arrow_type))

    on_time = timed([2, 9, 2], rng.normal(size=(3, F)), [41, -100, 50], arrow_type)   # 9 has no time: any
    np.testing.assert_allclose(outputs(b.feed(on_time)), outputs(a.feed(on_time)), **TOL)
    assert b.export_streams(keys=[2, 9]).column("last_time").cast(pa.int64()).to_pylist() == [50, -100]


# -- state_dict ----------------------------------------------------------------------------------------------------
def history(rng, count, first=0, key_type="int", plain=False):
    result = []
    for b in range(first, first + count):
        keys = rng.integers(0, 8, 10)
        result.append(make_batch(keys, rng.normal(size=(10, F)), mask=rng.random(10) > 0.2,
                                 reset=None if plain else rng.random(10) < 0.1,
                                 end=None if plain else rng.random(10) < 0.1,
                                 time=np.arange(10) + 100 * b, key_type=key_type))
    return result


def timed_runtime(model, **kwargs):
    return runtime(model, time="t", idle_ttl=50, max_streams=100, **kwargs)


def counters(rt) -> dict:
    return {k: v for k, v in rt.stats().items() if k != "capacity"}


@pytest.mark.parametrize("key_type", ["int", "str"])
def test_state_dict_round_trip_into_a_runtime_with_other_weights(key_type):
    rng = np.random.default_rng(11)
    a = timed_runtime(two_lstm_model(0, backwards=True))
    b = timed_runtime(two_lstm_model(5, backwards=True))
    for batch in history(rng, 4, key_type=key_type):
        a.feed(batch)
    later = history(rng, 1, first=10, key_type=key_type, plain=True) + history(rng, 2, first=11, key_type=key_type)
    b.feed(history(rng, 1, first=1, key_type=key_type)[0])   # b's own streams
    b.feed(later[0])              # ... and a remembered layout for later[0]'s key column
    weights = a.model.state_dict()
    assert any(not torch.equal(v, b.model.state_dict()[k]) for k, v in weights.items())

    b.load_state_dict(a.state_dict())
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in weights.items())
    assert sorted(b.keys()) == sorted(a.keys())
    assert by_key(b.export_streams()).equals(by_key(a.export_streams()))
    assert counters(b) == counters(a)
    for batch in later:
        np.testing.assert_allclose(outputs(b.feed(batch)), outputs(a.feed(batch)), rtol=1e-6, atol=1e-7)
    assert {k: v for k, v in counters(b).items() if k not in ("busy_seconds", "rows_per_second")} == \
        {k: v for k, v in counters(a).items() if k not in ("busy_seconds", "rows_per_second")}
    assert_same_states(b, a, a.keys())


# -- failed imports change nothing ----------------------------------------------------------------------------------
def with_column(table: pa.Table, name: str, array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, array)


def carries(table: pa.Table, name: str, change) -> pa.Table:
    values = table.column(name).combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1).copy()
    return with_column(table, name, fixed_list(change(values)))


def nan_in_row_1(values):
    values[1, -1] = np.nan
    return values


def inf_in_row_0(values):
    values[0, 0] = np.inf
    return values


BAD_IMPORTS = {  # name: (bad table from the context, error, message)
    "key already held": (lambda c: c["held"], StateError, "stream 5 is already held"),
    "duplicate key": (lambda c: pa.concat_tables([c["good"], c["good"].slice(1, 1)]), StateError,
                      r"key \S*101\S* more than once"),
    "null key": (lambda c: with_column(c["good"], "key", pa.array([100, None], pa.int64())), SchemaError, "nulls"),
    "float key": (lambda c: with_column(c["good"], "key", pa.array([100.0, 101.0])), SchemaError, "must be integer"),
    "string keys into an int runtime": (lambda c: c["strings"], SchemaError, "'key' must be integer"),
    "missing h_0": (lambda c: c["good"].drop_columns(["h_0"]), SchemaError, r"lacks column\(s\) \['h_0'\]"),
    "missing has_output_1": (lambda c: c["good"].drop_columns(["has_output_1"]), SchemaError, "has_output_1"),
    "wrong width h_0": (lambda c: carries(c["good"], "h_0", lambda v: np.zeros((2, 6), np.float32)), SchemaError,
                        r"'h_0' must be FixedSizeList<float>\[5\]"),
    "wrong width c_1 (the last column)": (lambda c: carries(c["good"], "c_1", lambda v: v[:, :3]), SchemaError,
                                          r"'c_1' must be FixedSizeList<float>\[4\]"),
    "NaN carry": (lambda c: carries(c["good"], "c_1", nan_in_row_1), SchemaError, "'c_1' has a non-finite"),
    "inf carry": (lambda c: carries(c["good"], "h_0", inf_in_row_0), SchemaError, "'h_0' has a non-finite"),
    "null carry": (lambda c: with_column(c["good"], "h_1", pa.array([[0.0] * 4, None], pa.list_(pa.float32(), 4))),
                   SchemaError, "'h_1' has nulls"),
    "has_output not bool": (lambda c: with_column(c["good"], "has_output_0", pa.array([1, 0])), SchemaError,
                            "'has_output_0' must be bool"),
    "null idle_rows": (lambda c: with_column(c["good"], "idle_rows", pa.array([1, None], pa.int64())), SchemaError,
                       "'idle_rows' must be numeric without nulls"),
    "last_time into a runtime without time": (lambda c: c["good"].append_column("last_time", pa.array([1, 2])),
                                              SchemaError, "no time column"),
    "not a table": (lambda c: c["good"].to_pydict(), ArgumentTypeError, "pyarrow.Table or RecordBatch"),
}


def transfer_context():
    model = two_lstm_model()
    rng = np.random.default_rng(8)
    src, strings, dst, twin = runtime(model), runtime(model), runtime(model), runtime(model)
    src.feed(make_batch([100, 101, 5, 100], rng.normal(size=(4, F))))
    strings.feed(make_batch([100, 101], rng.normal(size=(2, F)), key_type="str"))
    own = make_batch([0, 1, 2, 3, 4, 5, 0], rng.normal(size=(7, F)), mask=[True] * 6 + [False])
    dst.feed(own)
    twin.feed(own)
    context = {"good": src.export_streams(keys=[100, 101]), "held": src.export_streams(keys=[101, 5]),
               "strings": strings.export_streams()}
    return src, dst, twin, context


def snapshot(rt, probes=(100, 101, 5, "stream-100")):
    return rt.export_streams(), sorted(rt.keys()), rt.stats(), [p in rt for p in probes]


def assert_unchanged(rt, before) -> None:
    table, keys, stats, present = snapshot(rt)
    assert table.equals(before[0]) and table.schema.metadata == before[0].schema.metadata
    assert (keys, stats, present) == before[1:]


def test_a_good_import_continues_like_the_source():
    src, dst, twin, context = transfer_context()
    assert dst.import_streams(context["good"]) == 2
    assert sorted(dst.keys()) == [0, 1, 2, 3, 4, 5, 100, 101]
    batch = make_batch([100, 101, 100], np.random.default_rng(9).normal(size=(3, F)))
    np.testing.assert_allclose(outputs(dst.feed(batch)), outputs(src.feed(batch)), **TOL)


@pytest.mark.parametrize("case", sorted(BAD_IMPORTS))
def test_a_failed_import_changes_nothing(case):
    make_table, error, message = BAD_IMPORTS[case]
    src, dst, twin, context = transfer_context()
    before = snapshot(dst)
    with pytest.raises(error, match=message):
        dst.import_streams(make_table(context))
    assert_unchanged(dst, before)
    probe = make_batch([0, 1, 5, 100, 101, 2, 100], np.random.default_rng(10).normal(size=(7, F)),
                       mask=[True, False, True, True, True, False, True])
    np.testing.assert_allclose(outputs(dst.feed(probe)), outputs(twin.feed(probe)), rtol=1e-6, atol=1e-7)
    assert sorted(dst.keys()) == sorted(twin.keys())
    assert_same_states(dst, twin, twin.keys())


def test_failed_import_errors_are_value_errors():
    assert issubclass(StateError, ValueError) and issubclass(SchemaError, ValueError)


# -- a failed load_state_dict changes nothing -------------------------------------------------------------------
def state_context():
    rng = np.random.default_rng(12)
    src = runtime(two_lstm_model(0))
    dst, twin = runtime(two_lstm_model(7)), runtime(two_lstm_model(7))
    for keys in ([1, 2, 3, 1], [3, 4]):
        src.feed(make_batch(keys, rng.normal(size=(len(keys), F))))
    own = make_batch([1, 2, 8, 9, 9], rng.normal(size=(5, F)))
    dst.feed(own)
    twin.feed(own)
    return src, dst, twin


def streams_with(change):
    def bad(state):
        return dict(state, streams=change(state["streams"]))
    return bad


BAD_STATES = {
    "duplicate key": (streams_with(lambda t: pa.concat_tables([t, t.slice(0, 1)])), StateError, "more than once"),
    "NaN in the last carry": (streams_with(lambda t: carries(t, "c_1", nan_in_row_1)), SchemaError, "non-finite"),
    "missing c_1": (streams_with(lambda t: t.drop_columns(["c_1"])), SchemaError, "lacks column"),
    "wrong width h_1": (streams_with(lambda t: carries(t, "h_1", lambda v: v[:, :2])), SchemaError,
                        r"FixedSizeList<float>\[4\]"),
    "string keys": (streams_with(lambda t: with_column(t, "key", pa.array([str(k) for k in t.column("key")
                                                                          .to_pylist()], pa.large_string()))),
                    SchemaError, "must be integer"),
    "key kind says str": (lambda s: dict(s, key_kind="str"), SchemaError, "must be string"),
    "last_time without a time column": (streams_with(lambda t: t.append_column("last_time", pa.array(
        range(t.num_rows)))), SchemaError, "no time column"),
    "other version": (lambda s: dict(s, version=99), StateError, "state_dict\\(\\) of version"),
}


def model_weights(rt) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in rt.model.state_dict().items()}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_a_failed_load_state_dict_changes_nothing(case):
    corrupt, error, message = BAD_STATES[case]
    src, dst, twin = state_context()
    weights, before = model_weights(dst), snapshot(dst, probes=(1, 2, 3, 4, 8, 9))
    with pytest.raises(error, match=message):
        dst.load_state_dict(corrupt(src.state_dict()))
    assert all(torch.equal(v, dst.model.state_dict()[k]) for k, v in weights.items())
    table, keys, stats, present = snapshot(dst, probes=(1, 2, 3, 4, 8, 9))
    assert table.equals(before[0]) and (keys, stats, present) == before[1:]
    probe = make_batch([9, 1, 4, 2, 9], np.random.default_rng(13).normal(size=(5, F)))
    np.testing.assert_allclose(outputs(dst.feed(probe)), outputs(twin.feed(probe)), rtol=1e-6, atol=1e-7)

    dst.load_state_dict(src.state_dict())     # the same runtime still takes a good one
    assert sorted(dst.keys()) == sorted(src.keys())
    np.testing.assert_allclose(outputs(dst.feed(probe)), outputs(src.feed(probe)), rtol=1e-6, atol=1e-7)


def test_a_failed_load_of_mis_shaped_weights_changes_nothing():
    src, dst, twin = state_context()
    weights = model_weights(dst)
    state = src.state_dict()
    last = list(state["model"])[-1]                   # the final Linear's bias: [2] -> [7]
    state["model"] = dict(state["model"], **{last: torch.zeros(7)})
    with pytest.raises(StateError, match=r"weight '.*' has shape \(7,\), this model's has \(2,\)"):
        dst.load_state_dict(state)
    changed = [k for k, v in weights.items() if not torch.equal(v, dst.model.state_dict()[k])]
    assert changed == []


# -- eviction of imported streams ----------------------------------------------------------------------------------
def test_an_imported_stream_expires_when_it_would_have_at_home():
    model = lstm(3)
    ones = lambda keys: make_batch(keys, np.ones((len(keys), F)))  # noqa: E731
    home = sl.StreamRuntime(model, key="id", features="x", idle_ttl=3)
    away = sl.StreamRuntime(model, key="id", features="x", idle_ttl=3)
    home.feed(ones([1, 2]))
    home.feed(ones([2]))                      # stream 1: idle for 1 batch, expires after 2 more
    for _ in range(4):
        away.feed(ones([7]))                  # away's TTL scan ran at its 4th batch
    away.import_streams(home.export_streams(keys=[1]))
    assert away.export_streams(keys=[1]).column("idle_batches").to_pylist() == [1]
    for _ in range(2):
        home.feed(ones([2]))
        away.feed(ones([7]))
    assert 1 not in home
    np.testing.assert_allclose(outputs(away.feed(ones([1]))), outputs(home.feed(ones([1]))), **TOL)
    assert 1 not in away or away.stats()["evicted_ttl"] == 1


def test_empty_export_imports_anywhere():
    model = lstm(3)
    empty = runtime(model)
    strings = runtime(model)
    strings.feed(make_batch([1], np.ones((1, F)), key_type="str"))
    assert strings.import_streams(empty.export_streams()) == 0


# -- a runtime file written after an import --------------------------------------------------------------------
@pytest.mark.parametrize("key_type", ["int", "str"])
def test_save_and_load_after_import_continue_exactly(tmp_path, key_type):
    rng = np.random.default_rng(14)
    model = two_lstm_model(backwards=True)
    home, away = timed_runtime(model), timed_runtime(model)
    for batch in history(rng, 3, key_type=key_type):
        home.feed(batch)
    away.feed(make_batch([50, 51, 50], rng.normal(size=(3, F)), time=[1, 2, 3], key_type=key_type))
    moving = [key_value(k, key_type) for k in (0, 2, 4, 6)]
    table = home.export_streams(keys=moving)
    assert away.import_streams(table) == table.num_rows > 0
    sl.save_runtime(away, tmp_path / "away.arrow")
    loaded = sl.load_runtime(tmp_path / "away.arrow", clock=frozen)
    assert by_key(loaded.export_streams()).equals(by_key(away.export_streams()))
    assert loaded.stats()["rows"] == away.stats()["rows"] and sorted(loaded.keys()) == sorted(away.keys())

    held = [k for k in moving if k in home]
    for b in range(2):
        ids = rng.permutation(np.array([0, 2, 4, 6, 0, 2, 50, 51, 50] * 2))
        x = rng.normal(size=(len(ids), F))
        batch = make_batch(ids, x, mask=rng.random(len(ids)) > 0.2, time=np.arange(len(ids)) + 1000 * (b + 1),
                           key_type=key_type)
        got = outputs(loaded.feed(batch))
        np.testing.assert_allclose(got, outputs(away.feed(batch)), rtol=1e-6, atol=1e-7)
        moved_rows = np.flatnonzero(np.isin(ids, [0, 2, 4, 6]))
        at_home = outputs(home.feed(batch.take(pa.array(moved_rows))))
        np.testing.assert_allclose(got[moved_rows], at_home, **TOL)
    assert held, "some moved streams had state to carry"
    assert_same_states(loaded, home, [key_value(k, key_type) for k in (0, 2, 4, 6)])
