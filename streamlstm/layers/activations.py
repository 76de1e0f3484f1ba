"""Activation functions by their Keras names.

``get("tanh")`` returns :func:`tanh`; callables pass through unchanged. ``hard_sigmoid`` is the Keras 2
definition ``clip(0.2 x + 0.5, 0, 1)``; Keras 3's ``relu6(x + 3) / 6`` is :func:`keras3_hard_sigmoid`.
``linear`` (or ``None``) is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from streamlstm.layers.registry import Registry, serialize

__all__ = ["get", "names", "serialize"]

_registry = Registry("activation")
Activation = Callable[[torch.Tensor], torch.Tensor]


def _register(*names: str) -> Callable[[Activation], Activation]:
    # An activation is a function, not a factory: registering ``lambda: fn`` lets Registry call it.
    def decorator(fn: Activation) -> Activation:
        _registry.register(*(names or (fn.__name__,)))(lambda: fn)
        return fn

    return decorator


@_register()
def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


@_register()
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@_register()
def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 2: ``clip(0.2 x + 0.5, 0, 1)``."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


@_register()
def keras3_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 3: ``relu6(x + 3) / 6``."""
    return F.relu6(x + 3.0) / 6.0


@_register()
def relu(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x)


@_register("linear")
def linear(x: torch.Tensor) -> torch.Tensor:
    return x


@_register()
def softsign(x: torch.Tensor) -> torch.Tensor:
    return F.softsign(x)


@_register()
def softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x)


@_register()
def elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x)


@_register()
def selu(x: torch.Tensor) -> torch.Tensor:
    return F.selu(x)


@_register("swish", "silu")
def swish(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


@_register()
def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, the Keras default ``approximate=False``."""
    return F.gelu(x)


@_register()
def exponential(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x)


def get(identifier: object, argument: str = "activation") -> Activation:
    """Resolve an activation; ``None`` means ``linear`` as in Keras."""
    if identifier is None:
        return linear
    return _registry.get(identifier, argument)


def names() -> list[str]:
    return _registry.names()


def is_tanh(fn: Activation) -> bool:
    return fn is tanh or fn is torch.tanh


def is_sigmoid(fn: Activation) -> bool:
    return fn is sigmoid or fn is torch.sigmoid


