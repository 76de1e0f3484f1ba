"""Helpers for the notebook tests: small runtimes, synthetic sources, and waiting on a running loop.

Dashboards are driven the way a kernel drives them: made inside a running asyncio loop, with widget
values changed through the widgets' Python API, sometimes from another thread (as ipykernel 7 may
deliver comm messages).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

import streamlstm as sl

F = 3
STREAMS = ["a", "b", "c", "d"]


def make_runtime(units: tuple[int, ...] = (5,), **options: Any) -> sl.StreamRuntime:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [sl.LSTM(u, return_sequences=True) for u in units]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(units[-1], 2))
    return sl.StreamRuntime(model, key="id", features="x", **options)


def batch(step: int, keys: list[Any] = STREAMS, rows_per_key: int = 1) -> pa.RecordBatch:
    """One row per key (or ``rows_per_key``), inputs a deterministic function of key index and step."""
    ids = [k for k in keys for _ in range(rows_per_key)]
    base = np.array([keys.index(k) for k in ids], np.float32)[:, None]
    t = np.array([step * rows_per_key + r for _ in keys for r in range(rows_per_key)], np.float32)[:, None]
    x = np.concatenate([np.sin(0.3 * t + base), np.cos(0.1 * t) + base, 0.01 * t], axis=1).astype(np.float32)
    return pa.record_batch({"id": ids, "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F)})


def endless(keys: list[Any] = STREAMS, rows_per_key: int = 1) -> Iterator[pa.RecordBatch]:
    step = 0
    while True:
        yield batch(step, keys, rows_per_key)
        step += 1


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Let the loop run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def from_thread(action: Callable[[], Any]) -> None:
    """Run ``action`` in another thread (as ipykernel 7 may run widget handlers) and wait for it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.005)
    if errors:
        raise errors[0]
