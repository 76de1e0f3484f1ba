"""Training on streams: :class:`StreamTrainer` (Keras ``stateful=True`` training on per-stream carries)."""

from __future__ import annotations

from streamlstm.train.trainer import StreamTrainer

__all__ = ["StreamTrainer"]
