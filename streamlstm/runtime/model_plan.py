"""Turn the runtime's model into a list of stages: recurrent layers and per-step modules.

Accepted models:

- a streamlstm ``LSTM``, or ``RNN`` over an ``LSTMCell`` or a ``StackedRNNCells`` of ``LSTMCell``;
- a ``torch.nn.Sequential`` (nested ones are flattened) whose recurrent members are such layers and
  whose other members are per-step modules applied to each step's output (``Linear``, activations,
  ``Dropout`` in eval, ...).

The runtime always emits one output row per input row, so every recurrent layer is run as if
``return_sequences=True``; ``return_state``, ``stateful`` and ``time_major`` of the layers are ignored
(the runtime holds the state). Each recurrent layer is run through a private shallow copy (same
parameters, ``return_sequences=True``, ``go_backwards=False``: the runtime orders the rows itself).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from streamlstm.errors import ArgumentTypeError, ConfigError
from streamlstm.layers import activations
from streamlstm.layers.lstm_cell import LSTMCell
from streamlstm.layers.rnn import RNN
from streamlstm.layers.stacked_rnn_cells import StackedRNNCells

__all__ = ["ModelPlan", "RecurrentStage", "build_plan"]


@dataclass
class RecurrentStage:
    """One recurrent layer: its LSTM cells (one for LSTM, several for stacked cells)."""

    layer: RNN
    runner: RNN
    cells: list[LSTMCell]
    go_backwards: bool
    zero_output_for_mask: bool

    @property
    def state_sizes(self) -> list[int]:
        return [size for cell in self.cells for size in (cell.units, cell.units)]

    @property
    def units(self) -> int:
        return self.cells[-1].units

    def standard(self, cell: LSTMCell) -> bool:
        """tanh/sigmoid: the step kernel may use in-place gate math."""
        return activations.is_tanh(cell.activation) and activations.is_sigmoid(cell.recurrent_activation)


@dataclass
class ModelPlan:
    model: torch.nn.Module
    stages: list[RecurrentStage | torch.nn.Module]
    input_dim: int | None = None
    output_dim: int | None = None
    recurrent: list[RecurrentStage] = field(default_factory=list)

    @property
    def cells(self) -> list[LSTMCell]:
        return [cell for stage in self.recurrent for cell in stage.cells]

    @property
    def dtype(self) -> torch.dtype:
        cell = self.recurrent[0].cells[0]
        return cell.kernel.dtype if cell.built else (cell._factory["dtype"] or torch.get_default_dtype())

    def ensure_built(self, input_dim: int, device: torch.device) -> None:
        """Build unbuilt layers for inputs of width ``input_dim`` and find the output width."""
        if self.output_dim is not None:
            return
        width = input_dim
        with torch.no_grad():
            for stage in self.stages:
                if isinstance(stage, RecurrentStage):
                    if not stage.layer.built:
                        stage.layer.build((None, None, width))
                        stage.layer.to(device)
                    width = stage.units
                else:
                    probe = torch.zeros(1, width, dtype=self.dtype, device=device)
                    width = int(stage(probe).reshape(1, -1).shape[1])
        self.input_dim = input_dim
        self.output_dim = width


def _first_input_dim(plan: ModelPlan) -> int | None:
    first = plan.stages[0]
    if isinstance(first, RecurrentStage):
        return first.cells[0].input_dim
    return getattr(first, "in_features", None)


def _lstm_cells(layer: RNN, where: str) -> list[LSTMCell]:
    cell = layer.cell
    cells = list(cell.cells) if isinstance(cell, StackedRNNCells) else [cell]
    for index, member in enumerate(cells):
        if not isinstance(member, LSTMCell):
            raise ConfigError(f"{where}: the stream runtime runs LSTM cells, got {type(member).__name__} "
                              f"(cell {index})")
    return cells


def _recurrent(layer: RNN, where: str) -> RecurrentStage:
    cells = _lstm_cells(layer, where)
    runner = copy.copy(layer)  # shares parameters and sub-modules; flags below are its own
    runner.return_sequences = True
    runner.go_backwards = False
    return RecurrentStage(layer, runner, cells, layer.go_backwards, layer.zero_output_for_mask)


def _members(model: torch.nn.Module) -> list[torch.nn.Module]:
    if isinstance(model, torch.nn.Sequential):
        return [leaf for member in model for leaf in _members(member)]
    return [model]


def build_plan(model: torch.nn.Module) -> ModelPlan:
    """Check ``model`` and split it into stages (see the module docstring)."""
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"`model` must be a streamlstm LSTM/RNN or a torch.nn.Sequential, "
                                f"got {type(model).__name__}")
    stages: list[RecurrentStage | torch.nn.Module] = []
    for index, member in enumerate(_members(model)):
        where = f"model member {index} ({type(member).__name__})"
        if isinstance(member, RNN):
            stages.append(_recurrent(member, where))
        elif isinstance(member, (torch.nn.RNNBase, torch.nn.RNNCellBase)):
            raise ConfigError(f"{where}: torch recurrent modules cannot keep per-stream state; use "
                              f"streamlstm.LSTM instead")
        else:
            stages.append(member)
    recurrent = [s for s in stages if isinstance(s, RecurrentStage)]
    if not recurrent:
        raise ConfigError("`model` must contain at least one streamlstm recurrent layer (LSTM or RNN)")
    plan = ModelPlan(model, stages, recurrent=recurrent)
    width = plan.input_dim = _first_input_dim(plan)
    if width is not None and all(cell.built for cell in plan.cells):
        plan.ensure_built(width, plan.recurrent[0].cells[0].kernel.device)
    return plan
