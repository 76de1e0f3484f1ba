"""The LSTM layer: ``RNN(LSTMCell(...))`` with a fused kernel path that serves every mask."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Iterator
from typing import Any

import torch

from streamlstm.errors import ArgumentTypeError, ConfigError
from streamlstm.layers.base import refuse_arguments
from streamlstm.layers.fused import fused_lstm
from streamlstm.layers.lstm_cell import LSTMCell
from streamlstm.layers.rnn import RNN
from streamlstm.layers.rnn_loop import run_loop
from streamlstm.layers.serialization import register

__all__ = ["LSTM", "force_generic"]

_PROJECTION_BLOCK = 32   # time steps projected at once by the generic path
_FORCE_GENERIC = contextvars.ContextVar("streamlstm_force_generic", default=False)
_CELL_ARGS = [name for name in inspect.signature(LSTMCell.__init__).parameters
              if name not in ("self", "dtype", "device", "name", "trainable")]


@contextlib.contextmanager
def force_generic() -> Iterator[None]:
    """Within this context every LSTM takes the generic loop (for tests and comparisons)."""
    token = _FORCE_GENERIC.set(True)
    try:
        yield
    finally:
        _FORCE_GENERIC.reset(token)


@register
class LSTM(RNN):
    """Long Short-Term Memory layer, with the arguments and numbers of ``tf.keras.layers.LSTM``.

    Args:
        units and every other :class:`LSTMCell` argument (activation, recurrent_activation, use_bias,
        the initializers, unit_forget_bias, the regularizers and constraints, dropout, recurrent_dropout,
        implementation, seed), then every :class:`RNN` argument (activity_regularizer,
        return_sequences, return_state, go_backwards, stateful, time_major, unroll,
        zero_output_for_mask, input_shape, batch_size, batch_input_shape), and ``dtype``, ``device``,
        ``name``, ``trainable``. Each has the default and meaning documented there. Keras arguments
        streamlstm does not take (``input_dim``, ``weights``, ``use_cudnn``, ...) raise an error that
        names the supported alternative.

    Call arguments and returns: as :class:`RNN`.

    The fused path: with activation tanh, recurrent_activation sigmoid, no recurrent dropout, unroll
    False and no input dropout from implementation 1, the layer runs PyTorch's fused LSTM kernel (cuDNN
    on CUDA, the native kernel on CPU) for any mask (see :mod:`streamlstm.layers.fused`). Otherwise it
    runs the generic loop, with the input projection ``x @ kernel + bias`` hoisted out of the loop.
    ``layer.last_path`` says which ran ("fused" or "generic").

    Example:
        >>> layer = LSTM(4, return_sequences=True)
        >>> x = torch.randn(2, 5, 3)
        >>> mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], dtype=torch.bool)
        >>> tuple(layer(x, mask=mask).shape), layer.last_path
        ((2, 5, 4), 'fused')
    """

    def __init__(self, units: int, *args: Any, activity_regularizer: Any = None, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False, stateful: bool = False,
                 time_major: bool = False, unroll: bool = False, zero_output_for_mask: bool = False,
                 input_shape: Any = None, batch_size: int | None = None, batch_input_shape: Any = None,
                 dtype: Any = None, device: Any = None, name: str | None = None, trainable: bool = True,
                 **cell_kwargs: Any) -> None:
        if args:
            raise ArgumentTypeError("LSTM takes `units` positionally; pass the other arguments by keyword")
        refuse_arguments("LSTM", {k: v for k, v in cell_kwargs.items() if k not in _CELL_ARGS})
        cell = LSTMCell(units, dtype=dtype, device=device, **cell_kwargs)
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll, time_major=time_major,
                         zero_output_for_mask=zero_output_for_mask, activity_regularizer=activity_regularizer,
                         input_shape=input_shape, batch_size=batch_size, batch_input_shape=batch_input_shape,
                         dtype=dtype, device=device, name=name, trainable=trainable)

    def __getattr__(self, name: str) -> Any:
        # Keras exposes the cell's configuration on the layer (layer.units, layer.dropout, ...).
        if name in _CELL_ARGS or name in ("kernel", "recurrent_kernel", "bias", "input_dim"):
            return getattr(self._modules["cell"], name)
        return super().__getattr__(name)

    def fused_eligible(self, training: bool) -> bool:
        """Whether a call with this ``training`` flag takes the fused kernel."""
        cell = self.cell
        return (not _FORCE_GENERIC.get() and not self.unroll
                and cell.is_standard
                and not (training and cell.recurrent_dropout)
                and not (training and cell.dropout and cell.implementation == 1))

    def _run(self, x: torch.Tensor, mask: torch.Tensor | None, states: list[torch.Tensor], training: bool,
             initial_output: torch.Tensor | None = None):
        cell = self.cell
        cell.reset_dropout_mask()
        if self.fused_eligible(training):
            self.last_path = "fused"
            if training and cell.dropout:
                x = x * cell.input_dropout_masks(x[:, 0])[0][:, None, :]
            return fused_lstm(x, mask, states[0], states[1], cell.kernel, cell.recurrent_kernel, cell.bias,
                              zero_output_for_mask=self.zero_output_for_mask,
                              return_sequences=self.return_sequences, initial_output=initial_output)
        self.last_path = "generic"
        # The input projection x @ kernel + bias is hoisted out of the step loop: one GEMM per block of
        # steps, small enough for the block's projections to stay in cache while the loop reads them.
        blocks, last = [], initial_output
        for start in range(0, x.shape[1], _PROJECTION_BLOCK):
            steps = slice(start, start + _PROJECTION_BLOCK)
            outputs, last, states = run_loop(
                lambda z_t, s: cell.recurrent_step(z_t, s, training), cell.project_inputs(x[:, steps], training),
                states, None if mask is None else mask[:, steps], zero_output_for_mask=self.zero_output_for_mask,
                return_sequences=self.return_sequences, initial_output=last)
            blocks.append(outputs)
        return (torch.cat(blocks, dim=1) if self.return_sequences else None), last, states

    def to_torch_lstm(self) -> torch.nn.LSTM:
        """A ``torch.nn.LSTM`` (batch_first) with the same numbers on unmasked inputs.

        ``weight_ih = kernel.T``, ``weight_hh = recurrent_kernel.T``, ``bias_ih = bias``, ``bias_hh = 0``.
        Only for activation tanh and recurrent_activation sigmoid, the only ones torch.nn.LSTM has.
        """
        cell = self.cell
        if not cell.is_standard:
            raise ConfigError("to_torch_lstm() needs activation 'tanh' and recurrent_activation 'sigmoid', "
                              "the only ones torch.nn.LSTM computes")
        if not self.built:
            raise ConfigError("to_torch_lstm() needs a built layer: call build(input_shape) first")
        lstm = torch.nn.LSTM(cell.input_dim, cell.units, bias=cell.use_bias, batch_first=True,
                             device=cell.kernel.device, dtype=cell.kernel.dtype)
        with torch.no_grad():
            lstm.weight_ih_l0.copy_(cell.kernel.T)
            lstm.weight_hh_l0.copy_(cell.recurrent_kernel.T)
            if cell.use_bias:
                lstm.bias_ih_l0.copy_(cell.bias)
                lstm.bias_hh_l0.zero_()
        return lstm

    def get_config(self) -> dict[str, Any]:
        config = self.cell.get_config()
        config.update({k: v for k, v in super().get_config().items() if k != "cell"})   # the layer's name wins
        return config

    def extra_repr(self) -> str:
        return ", ".join(part for part in (self.cell.extra_repr(), super().extra_repr()) if part)

    def __repr__(self) -> str:
        # The cell is an implementation detail of LSTM: one line, as torch.nn.LSTM prints.
        return f"{type(self).__name__}({self.extra_repr()})"
