"""Turn the runtime's model into a list of stages: recurrent layers and per-step modules.

Accepted models:

- a streamlstm ``LSTM``, or ``RNN`` over an ``LSTMCell`` or a ``StackedRNNCells`` of ``LSTMCell``;
- a ``torch.nn.Sequential`` (nested ones are flattened) whose recurrent members are such layers and
  whose other members are per-step modules applied to each step's output (``Linear``, activations,
  ``Dropout`` in eval, ...);
- a Keras model imported by :func:`streamlstm.load_keras` (``KerasModel``): its recurrent layers and
  per-step modules become stages as above. ``Bidirectional`` is refused (it reads the future).

A Keras ``Masking`` member becomes a :class:`MaskingStage`: from there on a row is masked when all its
features (the stage's inputs: the batch's features when Masking comes first) equal ``mask_value``, or
when the runtime's ``mask`` column says so (the two rules are combined: a step is real only when both
say real). Masked rows follow the runtime's usual rule (carries unchanged, output repeats the stream's
previous output). The stage also zeroes masked rows as Keras does; a recurrent layer ignores masked
inputs, so that only shows where per-step modules read them, never in the carries.

The runtime always emits one output row per input row, so every recurrent layer is run as if
``return_sequences=True``; ``return_state``, ``stateful`` and ``time_major`` of the layers are ignored
(the runtime holds the state). For a Keras model whose last recurrent layer has
``return_sequences=False``, the output of a stream's last row so far is what ``predict`` returns for
the stream's whole sequence; every earlier row gets the output ``predict`` would return for the
sequence up to that row. A ``return_state`` model streams its first output only (the runtime's
``return_state`` option gives the carries). Each recurrent layer is run through a private shallow copy (same
parameters, ``return_sequences=True``, ``go_backwards=False``: the runtime orders the rows itself).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from streamlstm.errors import ArgumentTypeError, ConfigError
from streamlstm.keras_import.modules import KerasMasking, KerasModel, not_streamable
from streamlstm.layers.fused import CutTable
from streamlstm.layers.lstm import LSTM
from streamlstm.layers.lstm_cell import LSTMCell
from streamlstm.layers.rnn import RNN
from streamlstm.layers.stacked_rnn_cells import StackedRNNCells

__all__ = ["MaskingStage", "ModelPlan", "RecurrentStage", "build_plan"]


@dataclass
class RecurrentStage:
    """One recurrent layer: its LSTM cells (one for LSTM, several for stacked cells)."""

    layer: RNN
    runner: RNN
    cells: list[LSTMCell]
    go_backwards: bool
    zero_output_for_mask: bool
    # The fused cut kernel's padded input table, reused from batch to batch (feeds hold the runtime's lock).
    cut_table: CutTable = field(default_factory=CutTable, repr=False, compare=False)

    @property
    def state_sizes(self) -> list[int]:
        return [size for cell in self.cells for size in (cell.units, cell.units)]

    @property
    def units(self) -> int:
        return self.cells[-1].units

    @property
    def fused(self) -> bool:
        """One LSTM layer (one cell) that takes PyTorch's fused kernel in inference: its weights can go
        to :mod:`streamlstm.layers.fused` directly."""
        return isinstance(self.runner, LSTM) and self.runner.fused_eligible(False)

    @property
    def layers(self) -> str:
        """How ``repr`` names this stage, e.g. ``LSTM(64, go_backwards)``."""
        direction = ", go_backwards" if self.go_backwards else ""
        return f"{type(self.layer).__name__}({', '.join(str(c.units) for c in self.cells)}{direction})"


@dataclass
class MaskingStage:
    """A Keras ``Masking`` module: computes the rows' mask from its inputs and zeroes masked rows."""

    module: KerasMasking

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def compute_mask(self, x: torch.Tensor) -> torch.Tensor:
        """[n] bool, True = real row (some feature differs from ``mask_value``)."""
        return self.module.compute_mask(x)


@dataclass
class ModelPlan:
    model: torch.nn.Module
    stages: list[RecurrentStage | MaskingStage | torch.nn.Module]
    input_dim: int | None = None
    output_dim: int | None = None
    recurrent: list[RecurrentStage] = field(default_factory=list)

    @property
    def cells(self) -> list[LSTMCell]:
        return [cell for stage in self.recurrent for cell in stage.cells]

    @property
    def dtype(self) -> torch.dtype:
        cell = self.recurrent[0].cells[0]
        return cell.kernel.dtype if cell.built else cell.weight_dtype

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
    """The input width when the model fixes it: the first recurrent layer's or ``in_features`` of the
    first module, looking through stages that keep the width (Masking, Keras Dropout/Activation)."""
    for stage in plan.stages:
        if isinstance(stage, RecurrentStage):
            return stage.cells[0].input_dim
        if not isinstance(stage, MaskingStage) and not getattr(stage, "keeps_width", False):
            return getattr(stage, "in_features", None)
    return None


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
    if isinstance(model, KerasModel):
        model.check_streamable()   # names the Keras layer the runtime cannot run, and why
        return list(model.layers)
    return [model]


def build_plan(model: torch.nn.Module) -> ModelPlan:
    """Check ``model`` and split it into stages (see the module docstring)."""
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"`model` must be a streamlstm LSTM/RNN, a torch.nn.Sequential or a model from "
                                f"streamlstm.load_keras, got {type(model).__name__}")
    stages: list[RecurrentStage | MaskingStage | torch.nn.Module] = []
    for index, member in enumerate(_members(model)):
        where = f"model member {index} ({type(member).__name__})"
        reason = not_streamable(member)
        if reason is not None:
            raise ConfigError(f"{where}: {reason}")
        if isinstance(member, RNN):
            stages.append(_recurrent(member, where))
        elif isinstance(member, KerasMasking):
            stages.append(MaskingStage(member))
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
