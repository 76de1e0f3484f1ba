"""Per-row losses of :class:`~streamlstm.StreamTrainer`, with Keras's numbers.

Each takes predictions and targets ``[rows, out_dim]`` and returns ``[rows]``: the mean over the last
axis, as Keras's losses do before reducing over the batch (the trainer then averages over the rows
that count, which is Keras's ``sum_over_batch_size`` reduction with the mask applied):

- ``"mse"``: ``mean((y - p)^2)``
- ``"mae"``: ``mean(|y - p|)``
- ``"huber"``: ``mean(0.5 e^2 if |e| <= 1 else |e| - 0.5)``, ``e = y - p`` (Keras ``delta=1.0``)
- ``"binary_crossentropy"``: ``-mean(y log(q + eps) + (1 - y) log(1 - q + eps))``, ``q = clip(p, eps,
  1 - eps)``, ``eps = 1e-7`` (tf.keras 2 on probabilities; the model ends with a sigmoid)

A callable ``loss(predictions, targets) -> [rows]`` may be given instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from streamlstm.errors import ArgumentTypeError, ConfigError

__all__ = ["LOSSES", "resolve_loss"]

RowLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_EPSILON = 1e-7


def _mse(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (y - p).square().mean(dim=-1)


def _mae(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (y - p).abs().mean(dim=-1)


def _huber(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    error = (y - p).abs()
    return torch.where(error <= 1.0, 0.5 * error.square(), error - 0.5).mean(dim=-1)


def _binary_crossentropy(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    q = p.clamp(_EPSILON, 1.0 - _EPSILON)
    return -(y * torch.log(q + _EPSILON) + (1.0 - y) * torch.log(1.0 - q + _EPSILON)).mean(dim=-1)


LOSSES: dict[str, RowLoss] = {"mse": _mse, "mae": _mae, "huber": _huber, "binary_crossentropy": _binary_crossentropy}


def resolve_loss(loss: str | RowLoss) -> RowLoss:
    """The per-row loss for a name of :data:`LOSSES` or a callable."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ConfigError(f"`loss` must be one of {', '.join(sorted(LOSSES))} or a callable, got {loss!r}")
        return LOSSES[loss]
    if not callable(loss):
        raise ArgumentTypeError(f"`loss` must be a loss name or a callable, got {type(loss).__name__}")
    return loss
