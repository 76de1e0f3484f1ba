"""Dropout masks for recurrent cells, drawn once per layer call and reused at every step.

Inverted dropout as in Keras: a kept unit is scaled by ``1 / (1 - rate)``, so no rescaling is needed at
inference. A cell owns a :class:`DropoutMasks` per kind (input, recurrent); the RNN loop calls
``reset_dropout_mask()`` at the start of each call, and the masks are drawn lazily at the first step.
"""

from __future__ import annotations

import torch


class SeededGenerators:
    """One ``torch.Generator`` per device, seeded from ``seed``; ``None`` uses torch's global RNG."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def get(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(int(self.seed))
        return self._generators[device]


class DropoutMasks:
    """``count`` independent inverted-dropout masks of shape ``[batch, width]``, cached until reset."""

    def __init__(self, rate: float, count: int) -> None:
        self.rate = rate
        self.count = count
        self._masks: list[torch.Tensor] | None = None

    def reset(self) -> None:
        self._masks = None

    def get(self, like: torch.Tensor, generator: SeededGenerators) -> list[torch.Tensor]:
        """Masks for a ``[batch, width]`` tensor ``like``; redrawn when its shape, dtype or device changed."""
        masks = self._masks
        if masks is None or masks[0].shape != like.shape or masks[0].dtype != like.dtype \
                or masks[0].device != like.device:
            keep = 1.0 - self.rate
            probs = torch.full((self.count, *like.shape), keep, dtype=like.dtype, device=like.device)
            drawn = torch.bernoulli(probs, generator=generator.get(like.device)) / keep
            masks = self._masks = list(drawn.unbind(0))
        return masks
