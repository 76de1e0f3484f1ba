"""streamlstm: Keras-exact LSTM layers on PyTorch, run over live Arrow streams."""

from __future__ import annotations

import streamlstm.flight as flight
from streamlstm import errors, layers
from streamlstm.cluster import ShardedRuntime
from streamlstm.errors import (
    ArgumentTypeError,
    CheckpointError,
    ConfigError,
    FileError,
    KerasFileError,
    KerasImportError,
    SchemaError,
    ServeError,
    ShapeError,
    SourceError,
    StateError,
    StreamError,
    StreamLSTMError,
    UnauthenticatedError,
    UnsupportedKerasError,
)
from streamlstm.io import load_model, load_runtime, save_model, save_runtime
from streamlstm.io.replay import ReplaySummary, replay, replay_table, replay_to_file
from streamlstm.keras_import import load_keras, save_keras
from streamlstm.layers import LSTM, RNN, LSTMCell, StackedRNNCells
from streamlstm.reproducible import default_to_reproducible_blas
from streamlstm.runtime import StreamRuntime
from streamlstm.runtime.key_groups import key_group
from streamlstm.train import StreamTrainer, fit_streams

# Before MKL's first call (no import above makes one; tests/test_reproducible.py checks): see
# streamlstm.reproducible.
default_to_reproducible_blas()

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "CheckpointError",
    "ConfigError",
    "FileError",
    "KerasFileError",
    "KerasImportError",
    "LSTM",
    "LSTMCell",
    "RNN",
    "ReplaySummary",
    "SchemaError",
    "ServeError",
    "ShapeError",
    "ShardedRuntime",
    "SourceError",
    "StackedRNNCells",
    "StateError",
    "StreamError",
    "StreamLSTMError",
    "StreamRuntime",
    "StreamTrainer",
    "UnauthenticatedError",
    "UnsupportedKerasError",
    "__version__",
    "errors",
    "fit_streams",
    "flight",
    "key_group",
    "layers",
    "load_keras",
    "load_model",
    "load_runtime",
    "notebook",
    "replay",
    "replay_table",
    "replay_to_file",
    "save_keras",
    "save_model",
    "save_runtime",
]


def __getattr__(name: str):
    # ``streamlstm.notebook`` imports ipywidgets (and, when drawing, matplotlib): only on first use.
    if name == "notebook":
        import importlib

        return importlib.import_module("streamlstm.notebook")
    raise AttributeError(f"module 'streamlstm' has no attribute {name!r}")
