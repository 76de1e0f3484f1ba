"""Shared helpers for the runtime tests: Arrow batches from arrays, and independent references."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

import streamlstm as sl

F = 3


def feed_all(runtime: Any, keys: np.ndarray, x: np.ndarray, cuts: list[int], key_type: str = "int",
             **flags: Any) -> np.ndarray:
    """Feed rows in batches cut at ``cuts``; returns the outputs in row order."""
    bounds = [0, *cuts, len(keys)]
    result = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo:
            part = {k: (None if v is None else np.asarray(v)[lo:hi]) for k, v in flags.items()}
            result.append(outputs(runtime.feed(make_batch(keys[lo:hi], x[lo:hi], key_type=key_type, **part))))
    return np.concatenate(result)


def fixed_list(x: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(x).reshape(-1)), x.shape[1])


def make_batch(keys: Any, x: np.ndarray, mask: Any = None, reset: Any = None, end: Any = None, time: Any = None,
               key_type: str = "int") -> pa.RecordBatch:
    """A record batch with columns id, x and the optional flags; ``key_type`` int, str or dict."""
    keys = np.asarray(keys)
    if key_type == "int":
        key_array = pa.array(keys.astype(np.int64))
    else:
        key_array = pa.array([f"stream-{k}" for k in keys.tolist()], pa.string())
        if key_type == "dict":
            key_array = key_array.dictionary_encode()
    columns = {"id": key_array, "x": fixed_list(np.asarray(x, np.float32))}
    n = len(keys)
    for name, value, default in (("m", mask, True), ("r", reset, False), ("e", end, False)):
        columns[name] = pa.array(np.full(n, default) if value is None else np.asarray(value, bool))
    if time is not None:
        columns["t"] = pa.array(np.asarray(time, np.int64))
    return pa.record_batch(columns)


def outputs(batch: pa.RecordBatch, column: str = "output") -> np.ndarray:
    array = batch.column(column)
    return array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), array.type.list_size)


def lstm(units: int, input_dim: int = F, seed: int = 0, **kwargs: Any) -> sl.LSTM:
    torch.manual_seed(seed)
    layer = sl.LSTM(units, return_sequences=True, **kwargs)
    layer.build((None, None, input_dim))
    with torch.no_grad():  # non-trivial biases so that zero inputs still move the state
        layer.cell.bias.uniform_(-0.5, 0.5)
    return layer


def two_lstm_model(seed: int = 0, backwards: bool = False) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    first, second = lstm(5, F, seed), lstm(4, 5, seed + 1, go_backwards=backwards)
    return torch.nn.Sequential(first, torch.nn.Linear(5, 5), torch.nn.Tanh(), second, torch.nn.Linear(4, 2))


def whole_sequence(model: torch.nn.Module, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """One call of the model on one stream's whole sequence [T, F], the mask passed to every layer."""
    h = torch.from_numpy(np.asarray(x, np.float32))[None]
    m = None if mask is None else torch.from_numpy(np.asarray(mask, bool))[None]
    members = list(model) if isinstance(model, torch.nn.Sequential) else [model]
    with torch.no_grad():
        for member in members:
            h = member(h, mask=m) if isinstance(member, sl.RNN) else member(h)
    return h[0].numpy()


def reference(model: torch.nn.Module, keys: np.ndarray, x: np.ndarray, mask: np.ndarray | None,
              reset: np.ndarray | None, end: np.ndarray | None) -> np.ndarray:
    """Expected outputs of a forward model: one model call per stream sequence.

    A stream's sequence ends at an ``end`` row (the key's later rows are a new stream) and before a
    ``reset`` row (Keras: ``reset_states()`` then a new sequence); however the rows are batched.
    """
    n = len(keys)
    mask = np.ones(n, bool) if mask is None else mask
    reset = np.zeros(n, bool) if reset is None else reset
    end = np.zeros(n, bool) if end is None else end
    out = None
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        starts = np.zeros(len(rows), bool)
        starts[0] = True
        starts[1:] |= end[rows[:-1]] | reset[rows[1:]]
        for segment in np.split(rows, np.flatnonzero(starts)[1:]):
            result = whole_sequence(model, x[segment], mask[segment])
            out = np.zeros((n, result.shape[1]), np.float32) if out is None else out
            out[segment] = result
    return out


TOL = {"rtol": 1e-5, "atol": 1e-6}


def key_value(k: int, key_type: str) -> int | str:
    """Stream ``k`` as an int key or as the string key ``make_batch`` gives it."""
    return int(k) if key_type == "int" else f"stream-{k}"


def assert_same_states(got_rt: Any, expected_rt: Any, keys: Any) -> None:
    """Every listed stream has the same ``(h, c)`` per LSTM cell in both runtimes."""
    for key in keys:
        for (h, c), (h_ref, c_ref) in zip(got_rt.state(key), expected_rt.state(key)):
            np.testing.assert_allclose(h, h_ref, **TOL)
            np.testing.assert_allclose(c, c_ref, **TOL)


def child_json(code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` in a fresh Python (this checkout's streamlstm importable) with ``args``, and return the
    JSON object its last line of output prints (memory figures that other tests' allocations must not move)."""
    env = dict(os.environ)
    package_root = str(Path(sl.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
