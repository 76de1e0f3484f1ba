"""Weight and activity penalties by their Keras names.

``l1(w) = l1 * sum(|w|)``, ``l2(w) = l2 * sum(w**2)``, ``l1_l2`` is both. The names ``"l1"``, ``"l2"`` and
``"l1_l2"`` use Keras's default factor 0.01. Any callable ``w -> scalar tensor`` is accepted too.
"""

from __future__ import annotations

import torch

from streamlstm.layers.registry import Configurable, Registry, serialize

__all__ = ["L1", "L1L2", "L2", "get", "names", "serialize"]

_registry = Registry("regularizer")


class Regularizer(Configurable):
    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@_registry.register("L1L2")
class L1L2(Regularizer):
    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        penalty = weight.new_zeros(())
        if self.l1:
            penalty = penalty + self.l1 * weight.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * weight.square().sum()
        return penalty


@_registry.register("L1", "l1")
class L1(L1L2):
    def __init__(self, l1: float = 0.01) -> None:
        super().__init__(l1=l1)

    def get_config(self) -> dict:
        return {"l1": self.l1}


@_registry.register("L2", "l2")
class L2(L1L2):
    def __init__(self, l2: float = 0.01) -> None:
        super().__init__(l2=l2)

    def get_config(self) -> dict:
        return {"l2": self.l2}


@_registry.register("l1_l2")
def _l1_l2_default(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    return L1L2(l1=l1, l2=l2)


def get(identifier: object, argument: str = "regularizer") -> Regularizer | None:
    return _registry.get(identifier, argument)


def names() -> list[str]:
    return _registry.names()
