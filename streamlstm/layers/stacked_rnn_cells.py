"""A stack of cells that behaves as one cell: each cell's output is the next cell's input."""

from __future__ import annotations

from typing import Any

import torch

from streamlstm.errors import ArgumentTypeError, ShapeError
from streamlstm.layers.base import Layer
from streamlstm.layers.cells import (
    build_cell,
    cell_caller,
    check_cell,
    initial_states,
    output_size,
    single_state,
    state_sizes,
)
from streamlstm.layers.serialization import deserialize, register

__all__ = ["StackedRNNCells"]


@register
class StackedRNNCells(Layer):
    """Wrapper allowing a stack of RNN cells to behave as a single cell (``tf.keras.layers.StackedRNNCells``).

    Args:
        cells (list): cells following the cell protocol, applied in order.
        name, trainable: as :class:`~streamlstm.layers.base.Layer`.

    Call arguments:
        inputs: [batch, input_dim]; states: one entry per cell, ``[[h0, c0], [h1, c1], ...]``, where a
        cell whose ``state_size`` is an int has a bare tensor (as Keras); training (bool, None).

    Returns:
        ``(output_of_last_cell, [new_states_cell0, new_states_cell1, ...])``, in the same structure.

    Example:
        >>> from streamlstm import LSTMCell, RNN
        >>> layer = RNN(StackedRNNCells([LSTMCell(8), LSTMCell(4)]), return_state=True)
        >>> out, s0, s1 = layer(torch.zeros(2, 5, 3))
        >>> tuple(out.shape), tuple(s0[0].shape), tuple(s1[1].shape)
        ((2, 4), (2, 8), (2, 4))
    """

    def __init__(self, cells: list[Any], name: str | None = None, trainable: bool = True) -> None:
        super().__init__(name=name)
        if not isinstance(cells, (list, tuple)) or not cells:
            raise ArgumentTypeError(f"`cells` must be a non-empty list of cells, got {cells!r}")
        for index, cell in enumerate(cells):
            check_cell(cell, f"cells[{index}]")
        # A ModuleList lets parameters, .to() and state_dict ("cells.0.kernel") see module cells.
        all_modules = all(isinstance(c, torch.nn.Module) for c in cells)
        self.cells = torch.nn.ModuleList(cells) if all_modules else list(cells)
        self._callers = [cell_caller(c) for c in cells]
        self.trainable = trainable

    @property
    def state_size(self) -> list[Any]:
        """One entry per cell: its list of state sizes, or its int ``state_size`` as it is."""
        return [int(cell.state_size) if single_state(cell) else state_sizes(cell) for cell in self.cells]

    @property
    def output_size(self) -> int:
        return output_size(self.cells[-1])

    def get_initial_state(self, batch_size: int, dtype: torch.dtype | None = None, device: Any = None) -> list[Any]:
        dtype = dtype or torch.float32
        states = [initial_states(cell, batch_size, dtype, device) for cell in self.cells]
        return [s[0] if single_state(cell) else s for cell, s in zip(self.cells, states)]

    def build(self, input_shape: Any) -> None:
        input_dim = input_shape if isinstance(input_shape, int) else input_shape[-1]
        for cell in self.cells:
            build_cell(cell, input_dim)
            input_dim = output_size(cell)
        self.built = True

    def forward(self, inputs: torch.Tensor, states: list[list[Any]], training: bool | None = None):
        if len(states) != len(self.cells):
            raise ShapeError(f"`states` must hold one state list per cell ({len(self.cells)}), got {len(states)}")
        training = self.training if training is None else bool(training)
        new_states = []
        for cell, call, cell_states in zip(self.cells, self._callers, states):
            bare = not isinstance(cell_states, (list, tuple))
            inputs, cell_new = call(inputs, [cell_states] if bare else list(cell_states), training)
            new_states.append(cell_new[0] if single_state(cell) else cell_new)
        return inputs, new_states

    def weight_list(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(f"cells.{i}.{name}", p) for i, c in enumerate(self.cells) if isinstance(c, Layer)
                for name, p in c.weight_list()]

    def reset_dropout_mask(self) -> None:
        for cell in self.cells:
            if hasattr(cell, "reset_dropout_mask"):
                cell.reset_dropout_mask()

    def extra_repr(self) -> str:
        return ", ".join(self.base_repr())

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StackedRNNCells:
        """Inverse of ``get_config``: cells may be given in their serialized form."""
        config = dict(config)
        cells = [deserialize(c) if isinstance(c, dict) else c for c in config.pop("cells")]
        return cls(cells, **config)

    def get_config(self) -> dict[str, Any]:
        return {"cells": [{"class_name": type(c).__name__, "config": c.get_config()} for c in self.cells],
                **self.base_config()}
