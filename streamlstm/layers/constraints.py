"""Weight constraints by their Keras names.

A constraint maps a weight to its projection and is applied after an optimizer step, never in the
forward pass (see ``apply_constraints``). Norms are taken along ``axis`` (0 = per output column of a
``(fan_in, fan_out)`` kernel); ``eps = 1e-7`` as in Keras.

- ``max_norm(m)``: ``w * clip(n, 0, m) / (eps + n)``
- ``non_neg``: ``w * (w >= 0)``
- ``unit_norm``: ``w / (eps + n)``
- ``min_max_norm(lo, hi, rate)``: ``w * (rate * clip(n, lo, hi) + (1 - rate) * n) / (eps + n)``
"""

from __future__ import annotations

import torch

from streamlstm.layers.registry import Configurable, Registry, serialize

__all__ = ["MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "get", "names", "serialize"]

_registry = Registry("constraint")
_EPSILON = 1e-7


class Constraint(Configurable):
    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _norms(weight: torch.Tensor, axis: int) -> torch.Tensor:
    return weight.square().sum(dim=axis, keepdim=True).sqrt()


@_registry.register("MaxNorm", "max_norm")
class MaxNorm(Constraint):
    def __init__(self, max_value: float = 2.0, axis: int = 0) -> None:
        self.max_value, self.axis = max_value, axis

    def __call__(self, weight):
        norms = _norms(weight, self.axis)
        return weight * norms.clamp(0.0, self.max_value) / (_EPSILON + norms)


@_registry.register("NonNeg", "non_neg")
class NonNeg(Constraint):
    def __call__(self, weight):
        return weight * (weight >= 0).to(weight.dtype)


@_registry.register("UnitNorm", "unit_norm")
class UnitNorm(Constraint):
    def __init__(self, axis: int = 0) -> None:
        self.axis = axis

    def __call__(self, weight):
        return weight / (_EPSILON + _norms(weight, self.axis))


@_registry.register("MinMaxNorm", "min_max_norm")
class MinMaxNorm(Constraint):
    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis: int = 0) -> None:
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, weight):
        norms = _norms(weight, self.axis)
        desired = self.rate * norms.clamp(self.min_value, self.max_value) + (1 - self.rate) * norms
        return weight * desired / (_EPSILON + norms)


def get(identifier: object, argument: str = "constraint") -> Constraint | None:
    return _registry.get(identifier, argument)


def names() -> list[str]:
    return _registry.names()
