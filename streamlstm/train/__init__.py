"""Training on streams: :class:`StreamTrainer` (Keras ``stateful=True`` training on per-stream
carries) and :func:`fit_streams` (the stateful training recipe over a recorded multi-stream file)."""

from __future__ import annotations

from streamlstm.train.fit import fit_streams
from streamlstm.train.trainer import StreamTrainer

__all__ = ["StreamTrainer", "fit_streams"]
