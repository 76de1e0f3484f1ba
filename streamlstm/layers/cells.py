"""The cell protocol the RNN loop runs, and helpers to call any cell that follows it.

A cell has ``state_size`` (an int or a list of ints), ``output_size``, a call
``cell(inputs, states, training=None) -> (output, new_states)`` (a ``torch.nn.Module`` whose ``forward``
has that signature, or any object with such a ``call`` method), and optionally
``get_initial_state(batch_size, dtype, device)`` and ``build(input_shape)``.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from streamlstm.errors import ArgumentTypeError


def check_cell(cell: Any, argument: str = "cell") -> None:
    if not hasattr(cell, "state_size") or not (callable(cell) or hasattr(cell, "call")):
        raise ArgumentTypeError(
            f"`{argument}` must be a cell with a `state_size` attribute and a call(inputs, states) method, "
            f"got {type(cell).__name__}"
        )


def state_sizes(cell: Any) -> list[int]:
    """The cell's ``state_size`` as a flat list of ints."""
    size = cell.state_size
    return [int(size)] if isinstance(size, (int, np.integer)) else [int(s) for s in size]


def single_state(cell: Any) -> bool:
    """Whether the cell's ``state_size`` is one int: Keras then hands its state around as a bare tensor
    (in a stack of cells and in what ``return_state`` returns), not as a one-element list."""
    return isinstance(cell.state_size, (int, np.integer))


def output_size(cell: Any) -> int:
    size = getattr(cell, "output_size", None)
    return state_sizes(cell)[0] if size is None else int(size)


def _accepts_training(fn: Any) -> bool:
    try:
        return "training" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class CellCaller:
    """Calls any protocol cell as ``(inputs, states, training) -> (output, list_of_states)``.

    An object rather than a closure so that layers holding one can be pickled and deep-copied (the copy
    then calls the copied cell, not the original).
    """

    def __init__(self, cell: Any) -> None:
        self.cell = cell
        signature_fn = cell.forward if isinstance(cell, torch.nn.Module) else getattr(cell, "call", cell)
        self.with_training = _accepts_training(signature_fn)

    def __call__(self, inputs: torch.Tensor, states: list[Any], training: bool):
        cell = self.cell
        fn = cell if isinstance(cell, torch.nn.Module) else getattr(cell, "call", cell)
        output, new_states = fn(inputs, states, training=training) if self.with_training else fn(inputs, states)
        if isinstance(new_states, torch.Tensor):
            new_states = [new_states]
        return output, list(new_states)


def cell_caller(cell: Any) -> CellCaller:
    """A function ``(inputs, states, training) -> (output, list_of_states)`` for any protocol cell."""
    return CellCaller(cell)


def initial_states(cell: Any, batch_size: int, dtype: torch.dtype, device: torch.device) -> list[Any]:
    """The cell's own initial state, or zeros of its state sizes."""
    if hasattr(cell, "get_initial_state"):
        return list(cell.get_initial_state(batch_size=batch_size, dtype=dtype, device=device))
    return [torch.zeros(batch_size, size, dtype=dtype, device=device) for size in state_sizes(cell)]


def build_cell(cell: Any, input_dim: int) -> None:
    if hasattr(cell, "build") and not getattr(cell, "built", False):
        cell.build((None, input_dim))
