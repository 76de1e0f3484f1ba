"""Layer configs as plain JSON: ``{"class_name": ..., "config": {...}}``, the Keras serialized form.

``serialize(layer)`` / ``deserialize(data)`` round-trip every streamlstm layer (weights excluded; they
travel as tensors, see ``streamlstm.save_model``).

The layer classes register themselves with :func:`register` where they are defined, so this module
imports none of them and every layer module may import it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from streamlstm.errors import ConfigError

__all__ = ["deserialize", "register", "serialize"]

_T = TypeVar("_T", bound=type)
_CLASSES: dict[str, type] = {}   # class name (the Keras "class_name") -> class


def register(cls: _T) -> _T:
    """Class decorator: ``serialize``/``deserialize`` know ``cls`` by its ``__name__``.

    Registering the same class again (or a reloaded copy of it) is harmless; another class under a name
    taken already is an error.
    """
    name = cls.__name__
    known = _CLASSES.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ConfigError(f"layer class name {name!r} is registered already, by "
                          f"{known.__module__}.{known.__qualname__}")
    _CLASSES[name] = cls
    return cls


def _supported() -> str:
    return ", ".join(sorted(_CLASSES))


def serialize(layer: Any) -> dict[str, Any]:
    if type(layer).__name__ not in _CLASSES:
        raise ConfigError(f"cannot serialize {type(layer).__name__}; supported: {_supported()}")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(data: dict[str, Any]) -> Any:
    """Build a layer (unbuilt: no weights yet) from ``serialize``'s output."""
    name = data.get("class_name") if isinstance(data, dict) else None
    if name not in _CLASSES:
        raise ConfigError(f"unknown layer class {name!r}; supported: {_supported()}")
    return _CLASSES[name].from_config(dict(data.get("config") or {}))
