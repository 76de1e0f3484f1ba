"""The Keras-style layer base shared by cells and recurrent layers.

A :class:`Layer` is a ``torch.nn.Module`` whose weights are created by ``build(input_shape)`` (or on the
first call), exchanged as numpy arrays with ``get_weights()`` / ``set_weights()`` in Keras order, and
whose ``losses`` are recomputed from the current weights each time they are read.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from streamlstm.errors import ArgumentTypeError, ConfigError, ShapeError

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: Any) -> torch.dtype:
    """``None`` -> float32; accepts torch dtypes and their names (``"float64"``)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ConfigError(f"`dtype` must be one of {', '.join(_DTYPES)} or a torch.dtype, got {dtype!r}")


def check_rate(value: Any, argument: str) -> float:
    """A dropout rate: a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # Real: numpy scalars too
        raise ArgumentTypeError(f"`{argument}` must be a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"`{argument}` must be in [0, 1), got {value}")
    return float(value)


def snake_case(name: str) -> str:
    """Keras 3's ``naming.to_snake_case``: ``"TimeDistributed"`` -> ``"time_distributed"``, ``"LSTM"`` -> ``"lstm"``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# Keras constructor arguments streamlstm does not take, each with what to do instead.
_REFUSED_KERAS_ARGUMENTS = {
    "input_dim": "pass input_shape=(None, input_dim) (or batch_input_shape=(batch, time, input_dim))",
    "input_length": "pass input_shape=(input_length, features)",
    "weights": "call layer.set_weights(weights) once the layer is built (input_shape= builds it at once)",
    "use_cudnn": "streamlstm picks the fused kernel itself (layer.last_path says which ran); "
                 "`with streamlstm.layers.force_generic():` forces the generic loop",
    "dynamic": "layers always run eagerly in PyTorch; drop the argument",
    "autocast": "cast the inputs yourself or use torch.autocast; drop the argument",
}


def refuse_arguments(owner: str, kwargs: dict[str, Any]) -> None:
    """Raise for keyword arguments ``owner`` does not take, naming the supported alternative where Keras
    has the argument."""
    if not kwargs:
        return
    name = sorted(kwargs)[0]
    alternative = _REFUSED_KERAS_ARGUMENTS.get(name)
    if alternative is not None:
        raise ArgumentTypeError(f"{owner} does not take the Keras argument `{name}`: {alternative}")
    raise ArgumentTypeError(f"{owner} got unexpected keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")


def check_positive_int(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"`{argument}` must be a positive integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ConfigError(f"`{argument}` must be a positive integer, got {value}")
    return int(value)


class Layer(torch.nn.Module):
    """Base class: Keras building, weight exchange, losses and constraints on a torch Module.

    Args:
        dtype, device: where and how the weights are created (PyTorch factory arguments; ``dtype`` also
            takes Keras's names such as ``"float64"``).
        name (str, None): the layer's name, shown by ``repr`` and kept by ``get_config``; defaults to the
            snake_case class name (``"lstm"``). Keras numbers default names (``"lstm_1"``); streamlstm does
            not, because nothing here looks layers up by name.
        trainable (bool, True): ``False`` freezes the weights (``requires_grad=False``), as Keras's
            ``trainable=False`` moves them to the non-trainable weights; settable later, for sub-layers too.
    """

    def __init__(self, dtype: Any = None, device: Any = None, name: str | None = None,
                 trainable: bool = True) -> None:
        super().__init__()
        self._factory = {"dtype": resolve_dtype(dtype), "device": torch.device(device) if device else None}
        self.built = False
        if name is not None and not isinstance(name, str):
            raise ArgumentTypeError(f"`name` must be a string or None, got {type(name).__name__} {name!r}")
        default = snake_case(type(self).__name__)
        self.name = default if name is None else name
        self._default_name = self.name == default
        self._trainable = True
        self.trainable = trainable

    @property
    def trainable(self) -> bool:
        """Whether the weights are trained (``requires_grad``); setting it reaches every sub-layer."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ArgumentTypeError(f"`trainable` must be True or False, got {value!r}")
        self._trainable = value
        for layer in _top_sub_layers(self):
            layer.trainable = value
        self.requires_grad_(value)

    def base_config(self) -> dict[str, Any]:
        """The ``name`` and ``trainable`` entries every layer's ``get_config`` carries, as Keras's do."""
        return {"name": self.name, "trainable": self.trainable}

    def base_repr(self) -> list[str]:
        """``name=...`` and ``trainable=False`` for ``extra_repr``, only when not the defaults."""
        parts = [] if self._default_name else [f"name={self.name!r}"]
        return parts + ([] if self.trainable else ["trainable=False"])

    # -- weights --------------------------------------------------------------------------------
    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype this layer's weights have, or will have once built."""
        return self._factory["dtype"] or torch.get_default_dtype()

    def weight_list(self) -> list[tuple[str, torch.nn.Parameter]]:
        """``(name, parameter)`` in Keras ``get_weights()`` order; empty before build."""
        return []

    def get_weights(self) -> list[np.ndarray]:
        return [p.detach().cpu().numpy().copy() for _, p in self.weight_list()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set every weight from numpy arrays (or tensors) in ``get_weights()`` order; all or nothing.

        On a layer not built yet, ``set_weights([])`` (what its ``get_weights()`` returns) does nothing, as
        in Keras; any other list needs the layer built first."""
        if not self.built and isinstance(weights, (list, tuple)) and not weights:
            return
        if not self.built:
            raise ConfigError(f"{type(self).__name__}.set_weights() needs a built layer: call build(input_shape) first")
        expected = self.weight_list()
        if isinstance(weights, (np.ndarray, torch.Tensor)) or len(weights) != len(expected):
            got = "one array" if isinstance(weights, (np.ndarray, torch.Tensor)) else f"{len(weights)} arrays"
            names = ", ".join(name for name, _ in expected)
            raise ShapeError(f"`weights` must be a list of {len(expected)} arrays ({names}), got {got}")
        values = []
        for index, ((name, param), value) in enumerate(zip(expected, weights)):
            value = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
            if tuple(value.shape) != tuple(param.shape):
                raise ShapeError(
                    f"`weights[{index}]` ({name}) must have shape {tuple(param.shape)}, got {tuple(value.shape)}"
                )
            values.append(value)
        with torch.no_grad():
            for (_, param), value in zip(expected, values):
                param.copy_(value)

    def weight_penalties(self) -> list[torch.Tensor]:
        """This layer's own weight regularization penalties, from the current weights."""
        return []

    @property
    def losses(self) -> list[torch.Tensor]:
        """Weight penalties of this layer and its sub-layers (recomputed now) plus the activity
        penalties of the last call, as Keras's ``layer.losses``."""
        penalties = [p for layer in self.modules() if isinstance(layer, Layer) for p in layer.weight_penalties()]
        return penalties + list(getattr(self, "_activity_losses", []))

    def apply_constraints(self) -> None:
        """Project every constrained weight of this layer and its sub-layers in place.

        Call it after each optimizer step, or let :func:`constrain_after_step` do so.
        """
        apply_constraints(self)

    def constrained_weights(self) -> list[tuple[torch.nn.Parameter, Any]]:
        return []

    # -- configuration ----------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        return cls(**config)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Build an unbuilt layer from the saved shapes so that load_state_dict works on a fresh layer.
        if not self.built:
            self.build_from_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def build_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
        """Build from the shapes found in a state dict; layers with weights override this."""

    def _apply(self, fn, *args, **kwargs):
        # ``.to(dtype)`` / ``.to(device)`` / ``.double()`` on a layer not built yet must reach the weights
        # that build() creates later: see what ``fn`` makes of an empty tensor of the factory settings.
        result = super()._apply(fn, *args, **kwargs)
        probe = fn(torch.empty(0, dtype=self._factory["dtype"], device=self._factory["device"]))
        self._factory = {"dtype": probe.dtype, "device": probe.device}
        return result


def _top_sub_layers(module: torch.nn.Module):
    """The streamlstm layers below ``module`` that no other layer below it contains (through containers
    such as ``ModuleList``)."""
    for child in module.children():
        if isinstance(child, Layer):
            yield child
        else:
            yield from _top_sub_layers(child)


def apply_constraints(module: torch.nn.Module) -> None:
    """Apply the constraints of every streamlstm layer inside ``module`` (any torch Module)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, Layer):
                for param, constraint in layer.constrained_weights():
                    param.copy_(constraint(param))


def constrain_after_step(optimizer: torch.optim.Optimizer, module: torch.nn.Module):
    """Apply every streamlstm constraint in ``module`` after each ``optimizer.step()``.

    Returns the hook handle (``handle.remove()`` stops it). This is the PyTorch counterpart of Keras
    applying constraints after each update.
    """
    return optimizer.register_step_post_hook(lambda *_: apply_constraints(module))
