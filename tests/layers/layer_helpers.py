"""Helpers shared by the layer tests: seeded layers with non-trivial weights, masks, comparisons."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import streamlstm as sl
from streamlstm.layers import force_generic

MASK_KINDS = ("none", "all_true", "right_padded", "left_padded", "holes", "fully_masked_row", "all_masked")


def random_weights(layer: Any, seed: int = 0, scale: float = 0.5) -> list[np.ndarray]:
    """Set every weight of a built layer to seeded uniform values (biases too, so none is trivial)."""
    rng = np.random.default_rng(seed)
    dtype = layer.get_weights()[0].dtype
    weights = [rng.uniform(-scale, scale, w.shape).astype(dtype) for w in layer.get_weights()]
    layer.set_weights(weights)
    return weights


def make_lstm(units: int, input_dim: int, weight_seed: int = 0, dtype: torch.dtype = torch.float32, **kwargs: Any):
    """A built ``sl.LSTM`` with random weights drawn from ``weight_seed`` (``seed`` goes to the layer)."""
    layer = sl.LSTM(units, dtype=dtype, **kwargs)
    layer.build((None, None, input_dim))
    random_weights(layer, weight_seed)
    return layer


def make_mask(kind: str, batch: int, time: int, seed: int = 0) -> torch.Tensor | None:
    """A [batch, time] bool mask of the named kind (``None`` for "none")."""
    rng = np.random.default_rng(seed)
    if kind == "none":
        return None
    if kind == "all_true":
        mask = np.ones((batch, time), bool)
    elif kind in ("right_padded", "left_padded"):
        lengths = rng.integers(1, time + 1, batch)
        mask = np.arange(time)[None, :] < lengths[:, None]
        if kind == "left_padded":
            mask = mask[:, ::-1]
    elif kind == "holes":
        mask = rng.random((batch, time)) < 0.7
    elif kind == "fully_masked_row":
        mask = rng.random((batch, time)) < 0.6
        mask[rng.integers(batch)] = False
    elif kind == "all_masked":
        mask = np.zeros((batch, time), bool)
    else:
        raise ValueError(kind)
    return torch.from_numpy(mask.copy())


def flatten(value: Any) -> list[torch.Tensor]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten(item)]
    return [value]


def assert_all_close(got: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    got, expected = flatten(got), flatten(expected)
    assert len(got) == len(expected)
    for index, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, f"item {index}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, i=index: f"item {i}: {m}")


def call_both(layer: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Call ``layer`` on the fused path, then with the generic loop forced; check which path ran."""
    fused = layer(*args, **kwargs)
    assert layer.last_path == "fused"
    with force_generic():
        generic = layer(*args, **kwargs)
    assert layer.last_path == "generic"
    return fused, generic


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """Tolerances for comparing two computations of the same LSTM in ``dtype``."""
    return {
        torch.float64: {"rtol": 1e-12, "atol": 1e-12},
        torch.float32: {"rtol": 1e-5, "atol": 1e-6},
        torch.float16: {"rtol": 1e-2, "atol": 5e-3},
        torch.bfloat16: {"rtol": 5e-2, "atol": 3e-2},
    }[dtype]
