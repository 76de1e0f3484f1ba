"""The torch modules an imported Keras model is made of, and the model that chains them.

Recurrent layers become streamlstm layers (:class:`~streamlstm.LSTM`, :class:`~streamlstm.RNN`); the
other supported layers become the small modules below. Every one of these except
:class:`KerasBidirectional` is *per step*: it maps the feature vector of each time step on its own
(``per_step = True``), so a stream runtime can apply it to one step at a time; ``keeps_width = True``
marks those whose output has their input's width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from streamlstm.errors import ConfigError
from streamlstm.layers import activations
from streamlstm.layers.inputs import as_tensor
from streamlstm.layers.rnn import RNN

__all__ = [
    "KerasActivation",
    "KerasBidirectional",
    "KerasDense",
    "KerasDropout",
    "KerasMasking",
    "KerasModel",
    "KerasTimeDistributed",
    "activation_function",
    "not_streamable",
]

_EXTRA_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
    "relu6": F.relu6,
}


def activation_function(name: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """An activation by (already version-resolved) Keras name: streamlstm's registry plus softmax."""
    if name in _EXTRA_ACTIVATIONS:
        return _EXTRA_ACTIVATIONS[name]
    return activations.get(name, "activation")


def not_streamable(layer: torch.nn.Module) -> str | None:
    """Why a stream runtime cannot run ``layer``, or None when it can."""
    if isinstance(layer, KerasBidirectional):
        return ("Bidirectional needs each whole sequence before its first output (its backward half reads "
                "the future), so a stream runtime cannot run it; use it offline by calling the model on "
                "whole sequences")
    return None


class KerasMasking(torch.nn.Module):
    """Keras ``Masking``: a step is real when any feature differs from ``mask_value``; padded steps
    are zeroed in the output (as Keras does), and the mask goes to every following layer."""

    per_step = True

    def __init__(self, mask_value: float = 0.0) -> None:
        super().__init__()
        self.mask_value = float(mask_value)

    def compute_mask(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, time] bool, True = real step: ``any(x != mask_value, -1)``."""
        return torch.any(x != self.mask_value, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.compute_mask(x).unsqueeze(-1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"mask_value={self.mask_value}"


class KerasDense(torch.nn.Module):
    """Keras ``Dense``: ``activation(x @ kernel + bias)`` on the last axis; ``kernel`` is
    (in_features, units) as Keras stores it (the transpose of ``torch.nn.Linear.weight``)."""

    per_step = True

    def __init__(self, in_features: int, units: int, activation: str | None = None, use_bias: bool = True,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.units, self.activation_name, self.use_bias = int(units), activation or "linear", bool(use_bias)
        self.activation = activation_function(self.activation_name)
        self.kernel = torch.nn.Parameter(torch.zeros(in_features, units, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(units, dtype=dtype)) if use_bias else None

    @property
    def in_features(self) -> int:
        return int(self.kernel.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.kernel
        return self.activation(y if self.bias is None else y + self.bias)

    def extra_repr(self) -> str:
        parts = [f"{self.kernel.shape[0]}, {self.units}"]
        if self.activation_name != "linear":
            parts.append(f"activation={self.activation_name!r}")
        if not self.use_bias:
            parts.append("use_bias=False")
        return ", ".join(parts)


class KerasTimeDistributed(torch.nn.Module):
    """Keras ``TimeDistributed(layer)``: the inner per-step layer applied to every time step."""

    per_step = True

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    @property
    def in_features(self) -> int | None:
        return getattr(self.layer, "in_features", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class KerasActivation(torch.nn.Module):
    """Keras ``Activation(name)``."""

    per_step = True
    keeps_width = True

    def __init__(self, activation: str | None) -> None:
        super().__init__()
        self.activation_name = activation or "linear"
        self.activation = activation_function(self.activation_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x)

    def extra_repr(self) -> str:
        return repr(self.activation_name)


class KerasDropout(torch.nn.Module):
    """Keras ``Dropout``: kept for the record (``rate``); an imported model only runs inference,
    where dropout is the identity."""

    per_step = True
    keeps_width = True

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class KerasBidirectional(torch.nn.Module):
    """Keras ``Bidirectional``: a forward layer and a ``go_backwards`` layer over the same inputs and
    mask, the backward outputs flipped back into time order (with ``return_sequences``), merged by
    ``merge_mode``: "concat", "sum", "mul", "ave", or None (the two outputs as a list).

    It needs the whole sequence, so it is for offline use; a stream runtime must refuse it.
    """

    per_step = False
    _MERGES = ("concat", "sum", "mul", "ave", None)

    def __init__(self, forward_layer: RNN, backward_layer: RNN, merge_mode: str | None = "concat") -> None:
        super().__init__()
        if merge_mode not in self._MERGES:
            raise ConfigError(f"`merge_mode` must be one of {self._MERGES}, got {merge_mode!r}")
        self.forward_layer, self.backward_layer, self.merge_mode = forward_layer, backward_layer, merge_mode
        self.return_sequences = forward_layer.return_sequences

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        y = self.forward_layer(x, mask=mask)
        y_rev = self.backward_layer(x, mask=mask)
        if self.return_sequences:
            y_rev = y_rev.flip(1)
        if self.merge_mode == "concat":
            return torch.cat([y, y_rev], dim=-1)
        if self.merge_mode == "sum":
            return y + y_rev
        if self.merge_mode == "mul":
            return y * y_rev
        if self.merge_mode == "ave":
            return (y + y_rev) / 2
        return [y, y_rev]

    def extra_repr(self) -> str:
        return f"merge_mode={self.merge_mode!r}"


class KerasModel(torch.nn.Module):
    """A Keras model imported by :func:`streamlstm.load_keras`: a chain of layers run in eval mode.

    Attributes:
        layers (torch.nn.ModuleList): the chain, InputLayer left out: streamlstm recurrent layers
            (:class:`~streamlstm.RNN` and its subclass :class:`~streamlstm.LSTM`),
            :class:`KerasBidirectional`, and per-step modules (``per_step = True``): :class:`KerasMasking`,
            :class:`KerasDense`, :class:`KerasTimeDistributed`, :class:`KerasActivation`,
            :class:`KerasDropout`.
        mask_value (float | None): the ``mask_value`` of a Masking layer placed before every other
            layer, else None. The mask rule is Keras's: a step is real when any input feature differs
            from ``mask_value``; every recurrent layer receives the mask; one with
            ``return_sequences=False`` consumes it (later layers see no mask).
        keras_version (str): the Keras version that wrote the file; ``name``: the Keras model name.
        output_indices (list[int]): which outputs of the last layer the model returns (``[0]`` for
            one tensor; ``[0, 1, 2]`` for ``LSTM(return_state=True)``'s output, h and c).

    Call arguments:
        inputs: [batch, time, features] numpy array or torch tensor ([time, batch, features] when the
            first recurrent layer has Keras 2's ``time_major=True``, as in Keras).

    Returns:
        What Keras's ``predict`` returns, as torch tensors: one tensor, or a list when the model has
        several outputs (``Bidirectional(merge_mode=None)``, ``return_state=True``).
    """

    def __init__(self, layers: list[torch.nn.Module], *, name: str = "model", keras_version: str = "",
                 output_indices: list[int] | None = None) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.name, self.keras_version = name, keras_version
        self.output_indices = list(output_indices or [0])
        self.eval()

    @property
    def mask_value(self) -> float | None:
        first = self.layers[0] if len(self.layers) else None
        return first.mask_value if isinstance(first, KerasMasking) else None

    @property
    def recurrent_layers(self) -> list[torch.nn.Module]:
        """The recurrent layers (streamlstm RNN/LSTM and Bidirectional), in order."""
        return [layer for layer in self.layers if not getattr(layer, "per_step", False)]

    def check_streamable(self) -> None:
        """Raise ConfigError when :class:`~streamlstm.StreamRuntime` cannot run the model (Bidirectional).

        go_backwards layers are accepted: the runtime processes a stream's rows of one ``feed`` last to
        first (one Keras stateful call per feed), which equals ``predict`` when a feed holds a stream's
        whole sequence (Keras returns that sequence in processing order, i.e. reversed).
        """
        for index, layer in enumerate(self.layers):
            reason = not_streamable(layer)
            if reason is not None:
                raise ConfigError(f"layer {index} ({type(layer).__name__}) of Keras model {self.name!r}: {reason}")

    def forward(self, inputs: Any) -> Any:
        x = as_tensor(inputs, "inputs")
        param = next(self.parameters(), None)
        if param is not None:  # Keras casts inputs to the layers' dtype
            x = x.to(device=param.device, dtype=param.dtype)
        elif not x.is_floating_point():
            x = x.to(torch.float32)
        mask = None
        with torch.no_grad():
            for layer in self.layers:
                x, mask = self._call_layer(layer, x, mask)
        if not isinstance(x, list):
            return x
        if len(self.output_indices) == 1:
            return x[self.output_indices[0]]
        return [x[i] for i in self.output_indices]

    @staticmethod
    def _call_layer(layer: torch.nn.Module, x: Any, mask: torch.Tensor | None) -> tuple[Any, Any]:
        if isinstance(x, list):  # return_state outputs feed only their first tensor onwards
            x = x[0]
        if isinstance(layer, KerasMasking):
            return layer(x), layer.compute_mask(x)
        if isinstance(layer, (RNN, KerasBidirectional)):
            out = layer(x, mask=mask)
            return out, mask if layer.return_sequences else None
        return layer(x), mask

    def extra_repr(self) -> str:
        return f"name={self.name!r}, keras_version={self.keras_version!r}"
