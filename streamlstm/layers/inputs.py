"""Validation and conversion of what users pass to recurrent layers, done once at the edge."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from streamlstm.errors import ArgumentTypeError, ConfigError, ShapeError


def as_tensor(value: Any, argument: str, dtype: torch.dtype | None = None,
              device: torch.device | None = None) -> torch.Tensor:
    """A torch tensor from a tensor, numpy array or nested list; numpy data is shared, not copied."""
    if isinstance(value, torch.Tensor):
        tensor = value
        if device is not None and tensor.device != device:
            raise ConfigError(
                f"`{argument}` is on {tensor.device} but the layer's weights are on {device}; "
                f"move one of them (e.g. layer.to({str(tensor.device)!r}))"
            )
    elif isinstance(value, (np.ndarray, list, tuple, float, int)):
        array = np.asarray(value)
        if array.dtype == object:
            raise ArgumentTypeError(f"`{argument}` must be numeric, got an array of Python objects")
        if not array.flags.c_contiguous or any(stride < 0 for stride in array.strides):
            # ascontiguousarray keeps a negative stride on a length-1 axis, which torch rejects.
            array = array.copy(order="C")
        tensor = torch.from_numpy(array).to(device=device)
    else:
        raise ArgumentTypeError(f"`{argument}` must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor


def sequence_inputs(inputs: Any, time_major: bool, dtype: torch.dtype | None,
                    device: torch.device | None) -> torch.Tensor:
    """Rank-3 float inputs in batch-major layout [batch, time, features]."""
    x = as_tensor(inputs, "inputs", device=device)
    layout = "[time, batch, features]" if time_major else "[batch, time, features]"
    if x.dim() != 3:
        raise ShapeError(f"`inputs` must be rank 3 {layout}, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ArgumentTypeError(f"`inputs` must hold numbers, got dtype {x.dtype}")
    if time_major:
        x = x.transpose(0, 1)
    if x.shape[1] == 0:
        raise ShapeError(f"`inputs` must have at least one time step, got shape {tuple(x.shape)}")
    return x if dtype is None else x.to(dtype)


def sequence_mask(mask: Any, batch: int, time: int, time_major: bool, device: torch.device) -> torch.Tensor | None:
    """A bool mask [batch, time] (given [time, batch] when ``time_major``, as in Keras); True = real step."""
    if mask is None:
        return None
    m = as_tensor(mask, "mask")
    expected = (time, batch) if time_major else (batch, time)
    if m.dim() == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if tuple(m.shape) != expected:
        layout = "[time, batch]" if time_major else "[batch, time]"
        raise ShapeError(f"`mask` must have shape {layout} = {expected} to match `inputs`, got {tuple(m.shape)}")
    m = m.to(device=device)
    if m.dtype != torch.bool:
        m = m != 0
    return m.transpose(0, 1) if time_major else m
