"""Shared helpers of the trainer tests: models, Arrow training batches, weight snapshots."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

import streamlstm as sl


def fixed_list(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def make_model(features: int, units: int, seed: int = 0, outputs: int = 1) -> torch.nn.Sequential:
    """LSTM(units, return_sequences=True) -> Linear(units, outputs), built and seeded."""
    torch.manual_seed(seed)
    lstm = sl.LSTM(units, return_sequences=True)
    lstm.build((None, None, features))
    return torch.nn.Sequential(lstm, torch.nn.Linear(units, outputs))


def train_batch(keys: Any, x: np.ndarray, y: np.ndarray, **flags: Any) -> pa.RecordBatch:
    """Columns id, x, y and the optional bool columns given as ``flags`` (mask, reset, end)."""
    columns = {"id": pa.array(np.asarray(keys, np.int64)), "x": fixed_list(x), "y": fixed_list(y)}
    for name, values in flags.items():
        if values is not None:
            columns[name] = pa.array(np.asarray(values, bool))
    return pa.record_batch(columns)


def weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: value.detach().cpu().numpy().copy() for name, value in model.state_dict().items()}


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state as numpy copies, for byte comparisons."""
    state = optimizer.state_dict()
    return {"groups": state["param_groups"],
            "state": {index: {name: np.asarray(value.detach().cpu().numpy() if torch.is_tensor(value) else value).copy()
                              for name, value in entry.items()} for index, entry in state["state"].items()}}


def same_optimizer_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["groups"] != b["groups"] or set(a["state"]) != set(b["state"]):
        return False
    return all(set(a["state"][i]) == set(b["state"][i])
               and all(np.array_equal(a["state"][i][k], b["state"][i][k]) for k in a["state"][i])
               for i in a["state"])
