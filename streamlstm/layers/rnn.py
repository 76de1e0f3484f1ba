"""The RNN layer: runs any cell over a sequence with Keras semantics (masks, go_backwards, stateful)."""

from __future__ import annotations

from typing import Any

import torch

from streamlstm.errors import ArgumentTypeError, ConfigError, ShapeError, StateError
from streamlstm.layers import regularizers
from streamlstm.layers.base import Layer, refuse_arguments
from streamlstm.layers.cells import build_cell, cell_caller, check_cell, initial_states, single_state, state_sizes
from streamlstm.layers.inputs import as_tensor, sequence_inputs, sequence_mask
from streamlstm.layers.rnn_loop import run_loop
from streamlstm.layers.serialization import deserialize, register
from streamlstm.layers.stacked_rnn_cells import StackedRNNCells

__all__ = ["RNN"]

_RNN_FLAGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "time_major",
              "zero_output_for_mask")


@register
class RNN(Layer):
    """Base class for recurrent layers, with the arguments and numbers of ``tf.keras.layers.RNN``.

    Args:
        cell: a cell following the protocol (``state_size``, ``call(inputs, states, training)``), or a
            list of cells, which means ``StackedRNNCells(cells)``.
        return_sequences (bool, False): return the output of every step instead of the last one.
        return_state (bool, False): also return the final states: ``[output, h, c]`` for an LSTM cell;
            one entry per cell for stacked cells (``[output, [h0, c0], [h1, c1]]``, Keras 3's nesting),
            where a cell whose ``state_size`` is an int gives its one state as a bare tensor, as Keras does.
        go_backwards (bool, False): process the sequence (and mask) reversed; outputs come back in
            processing order, so ``outputs[:, 0]`` belongs to the last input step.
        stateful (bool, False): the final states of a call are the initial states of the next, per
            batch row; the batch size is fixed by the first build or call (``states`` holds the cell's
            initial states from then on, until the first call replaces them). An explicit
            ``initial_state`` wins over the stored state (the Keras 3 rule; Keras 2 preferred the stored
            state unless it was all zeros).
        unroll (bool, False): accepted for Keras compatibility; the loop is a Python loop either way and
            the numbers are identical. It disables the fused LSTM path, as in Keras.
        time_major (bool, False): inputs [time, batch, features], outputs [time, batch, units]; the mask
            is then [time, batch] as in Keras.
        zero_output_for_mask (bool, False): masked steps output zeros instead of repeating the previous
            output.
        activity_regularizer (str | dict | callable, None): penalty on every output tensor of a call
            (states included when ``return_state``), divided by its first dimension, as Keras does.
        input_shape (tuple, None): ``(time, features)`` (time may be None) builds the weights now, so
            that an optimizer created before the first call sees them; otherwise they are created by
            ``build()`` or the first call, like ``torch.nn.LazyLinear``. Keras builds such a layer only
            when it joins a model; streamlstm builds it at once.
        batch_size (int, None): with ``input_shape``, the batch size (fixes a stateful layer's batch).
        batch_input_shape (tuple, None): ``(batch, time, features)`` in the inputs' layout (time major:
            ``(time, batch, features)``): ``input_shape`` and ``batch_size`` in one argument.
        dtype, device, name, trainable: as :class:`~streamlstm.layers.base.Layer`.

    Call arguments:
        inputs: [batch, time, features] tensor or numpy array.
        mask: [batch, time] bool (True = real step); a masked step keeps the states and repeats the
            previous output (zeros before the first real step).
        training (bool, None): enables dropout; ``None`` follows ``module.training``.
        initial_state: list of state tensors (a flat list or one list per cell for stacked cells).

    Returns:
        The output tensor, or ``[output, *states]`` with ``return_state``.
    """

    def __init__(self, cell: Any, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 time_major: bool = False, zero_output_for_mask: bool = False,
                 activity_regularizer: Any = None, input_shape: Any = None, batch_size: int | None = None,
                 batch_input_shape: Any = None, dtype: Any = None, device: Any = None, name: str | None = None,
                 trainable: bool = True, **unsupported: Any) -> None:
        refuse_arguments(type(self).__name__, unsupported)
        super().__init__(dtype=dtype, device=device, name=name, trainable=trainable)
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(list(cell))
        check_cell(cell)
        self.cell = cell
        self.trainable = trainable  # again, now that the cell is a sub-layer
        self.return_sequences, self.return_state, self.go_backwards = return_sequences, return_state, go_backwards
        self.stateful, self.unroll, self.time_major = stateful, unroll, time_major
        self.zero_output_for_mask = zero_output_for_mask
        for flag in _RNN_FLAGS:
            if not isinstance(getattr(self, flag), bool):
                raise ArgumentTypeError(f"`{flag}` must be True or False, got {getattr(self, flag)!r}")
        self.activity_regularizer = regularizers.get(activity_regularizer, "activity_regularizer")
        self._call_cell = cell_caller(cell)
        self._batch_size: int | None = None
        self._states: list[torch.Tensor] | None = None
        self._activity_losses: list[torch.Tensor] = []
        self.last_path: str | None = None
        shape = self._construction_shape(input_shape, batch_size, batch_input_shape)
        if shape is not None:
            self.build(shape)

    def _construction_shape(self, input_shape: Any, batch_size: Any, batch_input_shape: Any) -> tuple | None:
        """The full input shape the constructor arguments give, in the inputs' layout, or None."""
        if batch_input_shape is not None:
            if input_shape is not None or batch_size is not None:
                raise ConfigError("pass either `batch_input_shape` or `input_shape` (with `batch_size`), not both")
            shape = tuple(batch_input_shape)
            if len(shape) != 3:
                raise ShapeError(f"`batch_input_shape` must be (batch, time, features), got {shape}")
            return shape
        if input_shape is None:
            if batch_size is not None:
                raise ConfigError("`batch_size` needs `input_shape` (time, features); or pass "
                                  "batch_input_shape=(batch, time, features)")
            return None
        shape = tuple(input_shape)
        if len(shape) != 2:
            raise ShapeError(f"`input_shape` must be (time, features) without the batch, got {shape}")
        return (shape[0], batch_size, shape[1]) if self.time_major else (batch_size, *shape)

    # -- state structure ---------------------------------------------------------------------------
    @property
    def _nested(self) -> bool:
        return isinstance(self.cell, StackedRNNCells)

    def _flat_sizes(self) -> list[int]:
        if self._nested:
            return [size for cell in self.cell.cells for size in state_sizes(cell)]
        return state_sizes(self.cell)

    def _nest(self, flat: list[Any]) -> list[Any]:
        """Flat states -> one entry per cell for stacked cells: a list, or a bare tensor for a cell whose
        ``state_size`` is an int (Keras's structure)."""
        if not self._nested:
            return list(flat)
        nested, start = [], 0
        for cell in self.cell.cells:
            count = len(state_sizes(cell))
            nested.append(flat[start] if single_state(cell) else list(flat[start:start + count]))
            start += count
        return nested

    def _flatten(self, states: list[Any]) -> list[Any]:
        """Nested (one entry per cell) or already flat states -> flat."""
        if not self._nested or len(states) != len(self.cell.cells):
            return list(states)
        return [t for entry in states for t in (entry if isinstance(entry, (list, tuple)) else [entry])]

    # -- building ----------------------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        """Build the cell for ``input_shape`` = (batch, time, features) (time_major: time, batch, ...)."""
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ShapeError(f"`input_shape` must have 3 entries (batch, time, features), got {shape}")
        batch = shape[1] if self.time_major else shape[0]
        build_cell(self.cell, shape[-1])
        if not self.trainable:
            self.trainable = False  # reaches the weights the cell has just created
        self.built = True
        if self.stateful and batch is not None:
            self._batch_size = int(batch)
            if self._states is None:
                self._states = self._initial_flat_states(self._batch_size)

    def _initial_flat_states(self, batch: int) -> list[torch.Tensor]:
        dtype, device = self._weights_dtype_device()
        return self._flatten(initial_states(self.cell, batch, dtype, device))

    def weight_list(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(f"cell.{name}", p) for name, p in self.cell.weight_list()] if isinstance(self.cell, Layer) else []

    def _weights_dtype_device(self) -> tuple[torch.dtype, torch.device | None]:
        # A user-written Module cell has parameters but no Keras weight list: follow them too.
        params = [p for _, p in self.weight_list()] or [p for p in self.parameters() if p.is_floating_point()]
        if params:
            return params[0].dtype, params[0].device
        return self._factory["dtype"], self._factory["device"]

    # -- stateful ----------------------------------------------------------------------------------
    @property
    def states(self) -> list[Any] | None:
        """The stored states of a stateful layer (nested per cell for stacked cells): the cell's initial
        states (zeros) once the batch size is known, then each call's final states; None before."""
        return None if self._states is None else self._nest(self._states)

    @property
    def batch_size(self) -> int | None:
        """The batch size a stateful layer is fixed to (from ``input_shape``/``build`` or its first
        call), or None while unknown."""
        return self._batch_size

    def reset_states(self, states: Any = None) -> None:
        """Set a stateful layer's states to zeros (the cell's initial states; None while the batch size is
        unknown), or to ``states`` (checked against the batch size). The batch size stays fixed."""
        if not self.stateful:
            raise StateError("reset_states() needs a stateful layer; this one has stateful=False")
        if states is None:
            self._states = None if self._batch_size is None else self._initial_flat_states(self._batch_size)
            return
        if isinstance(states, (torch.Tensor,)) or not isinstance(states, (list, tuple)):
            states = [states]
        batch = self._batch_size
        if batch is None:
            batch = int(torch.as_tensor(self._flatten(list(states))[0]).shape[0])
        self._states = self._check_states(states, batch, "states")
        self._batch_size = batch

    def _check_states(self, states: Any, batch: int, argument: str) -> list[torch.Tensor]:
        dtype, device = self._weights_dtype_device()
        flat = self._flatten(list(states))
        sizes = self._flat_sizes()
        if len(flat) != len(sizes):
            raise ShapeError(f"`{argument}` must hold {len(sizes)} tensors (state_size {sizes}), got {len(flat)}")
        checked = []
        for index, (state, size) in enumerate(zip(flat, sizes)):
            tensor = as_tensor(state, f"{argument}[{index}]").to(dtype=dtype, device=device)
            if tuple(tensor.shape) != (batch, size):
                raise ShapeError(
                    f"`{argument}[{index}]` must have shape {(batch, size)}, got {tuple(tensor.shape)}"
                )
            checked.append(tensor)
        return checked

    # -- the call -----------------------------------------------------------------------------------
    def forward(self, inputs: Any, mask: Any = None, training: bool | None = None, initial_state: Any = None):
        dtype, device = self._weights_dtype_device()
        x = sequence_inputs(inputs, self.time_major, None, device)
        if not x.is_floating_point():
            x = x.to(dtype)
        batch, time = x.shape[0], x.shape[1]
        m = sequence_mask(mask, batch, time, self.time_major, x.device)
        if self.stateful and self._batch_size is not None and batch != self._batch_size:
            raise StateError(
                f"a stateful layer keeps one state per batch row: `inputs` batch size must be "
                f"{self._batch_size} (fixed by its first build or call; reset_states() keeps it), got {batch}; "
                f"for batch size {batch} make a new layer from this one's config and weights "
                f"(type(layer).from_config(layer.get_config()), then set_weights(layer.get_weights())), "
                f"or use streamlstm.StreamRuntime, which keeps one state per stream key for any batch"
            )
        if not self.built:
            self.build((None, None, x.shape[-1]))
        self._check_input_dim(x.shape[-1])
        dtype, device = self._weights_dtype_device()
        x = x.to(dtype)
        states = self._starting_states(batch, x, initial_state)
        training = self.training if training is None else bool(training)
        outputs, last, final = self.run_sequences(x, m, states, training=training)
        if self.stateful:
            self._states = [s.detach() for s in final]
            self._batch_size = batch
        return self._package(outputs, last, final)

    def _check_input_dim(self, input_dim: int) -> None:
        check = getattr(self._first_cell(), "check_input_dim", None)
        if check is not None:
            check(int(input_dim))

    def _first_cell(self) -> Any:
        return self.cell.cells[0] if self._nested else self.cell

    def _starting_states(self, batch: int, x: torch.Tensor, initial_state: Any) -> list[torch.Tensor]:
        if initial_state is not None:
            if isinstance(initial_state, torch.Tensor) or not isinstance(initial_state, (list, tuple)):
                initial_state = [initial_state]
            return self._check_states(initial_state, batch, "initial_state")
        if self.stateful and self._states is not None:
            return [s.to(device=x.device, dtype=x.dtype) for s in self._states]
        return self._flatten(initial_states(self.cell, batch, x.dtype, x.device))

    def run_sequences(self, x: torch.Tensor, mask: torch.Tensor | None, states: list[torch.Tensor], *,
                      training: bool = False, initial_output: torch.Tensor | None = None):
        """The loop without the edge checks, for callers that validated already (the stream runtime).

        ``x`` [batch, time, features] batch-major in the weights' dtype and device, ``mask`` bool
        [batch, time] or None, ``states`` the flat state list. ``go_backwards`` is applied here. Ignores
        ``stateful`` (nothing is stored) and ``return_state``. Returns ``(outputs [batch, time, units] in
        processing order or None when not return_sequences, last_output, final flat states)``.
        """
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        return self._run(x, mask, states, training, initial_output)

    def _run(self, x: torch.Tensor, mask: torch.Tensor | None, states: list[torch.Tensor], training: bool,
             initial_output: torch.Tensor | None = None):
        """The generic loop over the cell; subclasses may choose a faster path with the same numbers."""
        if hasattr(self.cell, "reset_dropout_mask"):
            self.cell.reset_dropout_mask()

        def step(x_t: torch.Tensor, flat: list[torch.Tensor]):
            output, new_states = self._call_cell(x_t, self._nest(flat), training)
            return output, self._flatten(new_states)

        self.last_path = "generic"
        return run_loop(step, x, states, mask, zero_output_for_mask=self.zero_output_for_mask,
                        return_sequences=self.return_sequences, initial_output=initial_output)

    def _package(self, outputs: torch.Tensor | None, last: torch.Tensor, final: list[torch.Tensor]):
        output = last
        if self.return_sequences:
            output = outputs.transpose(0, 1) if self.time_major else outputs
        result = [output, *self._nest(final)] if self.return_state else output
        self._activity_losses = self._activity_penalties(result)
        return result

    def _activity_penalties(self, result: Any) -> list[torch.Tensor]:
        if self.activity_regularizer is None:
            return []
        return [self.activity_regularizer(t) / t.shape[0] for t in _flat_tensors(result)]

    # -- configuration ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RNN:
        """Inverse of ``get_config``: the cell may be given in its serialized form."""
        config = dict(config)
        if isinstance(config.get("cell"), dict):
            config["cell"] = deserialize(config["cell"])
        return cls(**config)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"cell": {"class_name": type(self.cell).__name__, "config": self.cell.get_config()}}
        config.update({flag: getattr(self, flag) for flag in _RNN_FLAGS})
        config["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        config.update(self.base_config())
        return config

    def extra_repr(self) -> str:
        flags = [f"{flag}=True" for flag in _RNN_FLAGS if getattr(self, flag)]
        if self.activity_regularizer is not None:
            flags.append(f"activity_regularizer={self.activity_regularizer!r}")
        return ", ".join(flags + self.base_repr())

    def _apply(self, fn, *args, **kwargs):
        # ``.to(dtype)`` / ``.to(device)`` move a stateful layer's stored states with its weights.
        result = super()._apply(fn, *args, **kwargs)
        if self._states is not None:
            self._states = [fn(state) for state in self._states]
        return result


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _flat_tensors(item)]
