"""streamlstm: Keras-exact LSTM layers on PyTorch, run over live Arrow streams."""

from __future__ import annotations

from streamlstm import errors, layers
from streamlstm.errors import StreamLSTMError
from streamlstm.keras_import import load_keras
from streamlstm.layers import LSTM, RNN, LSTMCell, StackedRNNCells

__version__ = "0.1.0"

__all__ = [
    "LSTM",
    "LSTMCell",
    "RNN",
    "StackedRNNCells",
    "StreamLSTMError",
    "__version__",
    "errors",
    "layers",
    "load_keras",
]
