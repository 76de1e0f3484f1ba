"""Chunk mode without padding: batches whose streams have nearly equal numbers of rows (a recording cut
into fixed-size batches) run their common steps as one sequence and the rest as step rounds, with the
numbers of step mode and of one model call per stream."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from runtime_helpers import F, feed_all, lstm

import streamlstm as sl


def interleaved(streams: int, steps: int, rng: np.random.Generator, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows as recorded live: step t of every stream, then step t + 1 (streams in a random order per
    step when ``shuffle``)."""
    order = [rng.permutation(streams) if shuffle else np.arange(streams) for _ in range(steps)]
    keys = np.concatenate(order)
    return keys, rng.normal(size=(len(keys), F)).astype(np.float32)


def per_stream(model: torch.nn.Module, keys: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One call of the model per stream over its whole sequence (the Keras stateful reference)."""
    out = np.zeros((len(keys), model[-1].out_features if isinstance(model, torch.nn.Sequential) else 4),
                   np.float32)
    with torch.no_grad():
        for key in np.unique(keys):
            rows = np.flatnonzero(keys == key)
            out[rows] = model(torch.from_numpy(x[rows])[None])[0].numpy()
    return out


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("cell_kind", ["standard", "relu"])
def test_nearly_equal_lengths_match_step_mode_and_the_reference(shuffle, cell_kind):
    rng = np.random.default_rng(3)
    layer = lstm(4, activation="relu") if cell_kind == "relu" else lstm(4)
    model = torch.nn.Sequential(layer, torch.nn.Linear(4, 2))
    keys, x = interleaved(300, 9, rng, shuffle)
    cuts = [700, 1700, 1850, 2300]   # streams get 2-4 rows per batch, lengths differing by 1 or 2
    chunk = feed_all(sl.StreamRuntime(model, key="id", features="x", mode="chunk"), keys, x, cuts)
    step = feed_all(sl.StreamRuntime(model, key="id", features="x", mode="step"), keys, x, cuts)
    np.testing.assert_allclose(chunk, step, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunk, per_stream(model, keys, x), rtol=1e-5, atol=1e-6)


def test_go_backwards_layers_keep_their_per_feed_order():
    rng = np.random.default_rng(4)
    model = torch.nn.Sequential(lstm(4), lstm(3, 4, seed=1, go_backwards=True))
    keys, x = interleaved(200, 6, rng, shuffle=True)
    cuts = [500, 900]
    chunk = feed_all(sl.StreamRuntime(model, key="id", features="x", mode="chunk"), keys, x, cuts)
    step = feed_all(sl.StreamRuntime(model, key="id", features="x", mode="step"), keys, x, cuts)
    np.testing.assert_allclose(chunk, step, rtol=1e-5, atol=1e-6)


def test_the_output_schema_depends_on_the_configuration_and_column_types_only():
    """A key field declared non-nullable (a Parquet required column) and repeated batches (the cached
    plan) give the schema of any other batch: an output file's writer accepts every batch."""
    rt = sl.StreamRuntime(lstm(4), key="id", features="x")
    rng = np.random.default_rng(5)
    schemas = set()
    for nullable in (False, True, False, False):
        x = pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=2 * F).astype(np.float32)), F)
        schema = pa.schema([pa.field("id", pa.int64(), nullable=nullable), pa.field("x", x.type)])
        schemas.add(rt.feed(pa.record_batch([pa.array([1, 2]), x], schema=schema)).schema)
    assert len(schemas) == 1
