"""Layer configs as plain JSON: ``{"class_name": ..., "config": {...}}``, the Keras serialized form.

``serialize(layer)`` / ``deserialize(data)`` round-trip every streamlstm layer (weights excluded; they
travel as tensors, see ``streamlstm.save_model``).
"""

from __future__ import annotations

from typing import Any

from streamlstm.errors import ConfigError
from streamlstm.layers.lstm import LSTM
from streamlstm.layers.lstm_cell import LSTMCell
from streamlstm.layers.rnn import RNN
from streamlstm.layers.stacked_rnn_cells import StackedRNNCells

__all__ = ["deserialize", "serialize"]

_CLASSES: dict[str, type] = {cls.__name__: cls for cls in (LSTM, LSTMCell, RNN, StackedRNNCells)}


def serialize(layer: Any) -> dict[str, Any]:
    if type(layer).__name__ not in _CLASSES:
        raise ConfigError(f"cannot serialize {type(layer).__name__}; supported: {', '.join(sorted(_CLASSES))}")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(data: dict[str, Any]) -> Any:
    """Build a layer (unbuilt: no weights yet) from ``serialize``'s output."""
    name = data.get("class_name") if isinstance(data, dict) else None
    if name not in _CLASSES:
        raise ConfigError(f"unknown layer class {name!r}; supported: {', '.join(sorted(_CLASSES))}")
    return _CLASSES[name].from_config(dict(data.get("config") or {}))
