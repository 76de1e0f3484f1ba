"""The exceptions streamlstm raises.

Every error the library raises on purpose derives from :class:`StreamLSTMError`, and also from the
built-in exception that describes it, so ``except ValueError`` keeps working::

    StreamLSTMError
    ├── ConfigError(ValueError)        a constructor or method argument has a bad value
    ├── ArgumentTypeError(TypeError)   an argument has the wrong type
    ├── ShapeError(ValueError)         an input, mask, state or weight has the wrong shape
    ├── StateError(ValueError)         an operation does not fit the layer's state (e.g. stateful batch size)
    ├── StreamError(ValueError)        a record batch fed to a stream runtime is invalid
    │   └── SchemaError                a column is missing or has the wrong type
    ├── SourceError(ValueError)        a replay input or output file cannot be read or written
    ├── CheckpointError(ValueError)    a replay checkpoint is present without resume, or from another run
    ├── FileError(ValueError)          a file streamlstm wrote is damaged (checksum, truncation, bad content),
    │                                  not a file of that kind, or of an unsupported format_version
    ├── ServeError                     a call to a ``streamlstm serve`` server failed (unreachable, shutting down)
    │   └── UnauthenticatedError       the server refused the call: missing or wrong bearer token
    └── KerasImportError(ValueError)   a Keras model file cannot be imported
        ├── KerasFileError             not a readable .keras / .h5 model file (corrupt, wrong type)
        └── UnsupportedKerasError      a layer class or option streamlstm does not import

Messages name the argument (or column, stream, row), what was expected and what was received, e.g.
"`units` must be a positive integer, got 0".
"""

from __future__ import annotations

__all__ = [
    "ArgumentTypeError",
    "CheckpointError",
    "ConfigError",
    "FileError",
    "KerasFileError",
    "KerasImportError",
    "SchemaError",
    "ServeError",
    "ShapeError",
    "SourceError",
    "StateError",
    "StreamError",
    "StreamLSTMError",
    "UnauthenticatedError",
    "UnsupportedKerasError",
]


class StreamLSTMError(Exception):
    """Base class of every error streamlstm raises on purpose."""


class ConfigError(StreamLSTMError, ValueError):
    """An argument has a value outside what is allowed."""


class ArgumentTypeError(StreamLSTMError, TypeError):
    """An argument has the wrong type."""


class ShapeError(StreamLSTMError, ValueError):
    """An input, mask, state or weight has the wrong shape."""


class StateError(StreamLSTMError, ValueError):
    """The operation does not fit the current state of the layer or runtime."""


class StreamError(StreamLSTMError, ValueError):
    """A record batch fed to a stream runtime is invalid; no state was changed.

    ``row`` is the batch row the message names (None when it names none), so that a caller feeding
    rows of a larger input (e.g. replay) can name the input row instead.
    """

    def __init__(self, *args: object, row: int | None = None) -> None:
        super().__init__(*args)
        self.row = row


class SchemaError(StreamError):
    """A column is missing or has the wrong type."""


class SourceError(StreamLSTMError, ValueError):
    """A replay input is missing, unreadable or not Arrow/Parquet, or an output file cannot be written."""


class CheckpointError(StreamLSTMError, ValueError):
    """A replay checkpoint exists without ``resume``, cannot be read, or was written by a different run."""


class FileError(StreamLSTMError, ValueError):
    """A file streamlstm wrote (model, runtime, checkpoint record or state, output part) cannot be loaded.

    It is damaged (its checksum does not match, it is truncated, its Arrow data or content is invalid),
    it is not a file of the expected kind, or its ``format_version`` is not supported. The message names
    the file and what is wrong. Loading a damaged file never crashes and never returns other content.
    """


class ServeError(StreamLSTMError):
    """A Flight call to a ``streamlstm serve`` server failed: unreachable, shutting down, or refused."""


class UnauthenticatedError(ServeError):
    """The server refused the call: it needs ``authorization: Bearer <token>`` and got none or another."""


class KerasImportError(StreamLSTMError, ValueError):
    """A Keras model file cannot be imported (see ``streamlstm.load_keras``)."""


class KerasFileError(KerasImportError):
    """The file is not a readable Keras model file: corrupt, truncated, or another kind of file."""


class UnsupportedKerasError(KerasImportError):
    """The model uses a layer class or option that ``streamlstm.load_keras`` does not import."""
