"""Name resolution shared by activations, initializers, regularizers and constraints.

Each family keeps a :class:`Registry` of Keras names. ``registry.get(identifier, argument=...)``
accepts what Keras accepts: ``None`` (where allowed), a name (``"glorot_uniform"``), the Keras
serialized form (``{"class_name": "GlorotUniform", "config": {"seed": 1}}``), a class, or any callable
object, which is returned unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from streamlstm.errors import ArgumentTypeError, ConfigError


def snake_case(name: str) -> str:
    """``"GlorotUniform"`` -> ``"glorot_uniform"``, ``"L1L2"`` -> ``"l1_l2"``."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return name.lower()


class Registry:
    """Maps Keras names to factories of one family.

    A name is looked up exactly first (``"L1L2"`` is the class, ``"l1_l2"`` Keras's function with its
    own defaults), then in snake_case (``"MaxNorm"`` finds ``"max_norm"``).
    """

    def __init__(self, family: str) -> None:
        self.family = family
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, *names: str) -> Callable[[Any], Any]:
        def decorator(factory: Any) -> Any:
            for name in names or (factory.__name__,):
                self._factories[name] = factory
                self._factories.setdefault(snake_case(name), factory)
            return factory

        return decorator

    @property
    def _a_family(self) -> str:
        return f"{'an' if self.family[0] in 'aeiou' else 'a'} {self.family}"

    def names(self) -> list[str]:
        return sorted(name for name in self._factories if name == snake_case(name))

    def lookup(self, name: str, argument: str) -> Callable[..., Any]:
        key = name if name in self._factories else snake_case(name)
        if key not in self._factories:
            raise ConfigError(
                f"`{argument}`: unknown {self.family} {name!r}; expected one of {', '.join(self.names())}"
            )
        return self._factories[key]

    def get(self, identifier: Any, argument: str, allow_none: bool = True) -> Any:
        """Resolve ``identifier`` to an object of this family (``None`` stays ``None``)."""
        if identifier is None:
            if allow_none:
                return None
            raise ConfigError(f"`{argument}` must name {self._a_family}, got None")
        if isinstance(identifier, str):
            return self.lookup(identifier, argument)()
        if isinstance(identifier, dict):
            if "class_name" not in identifier:
                raise ConfigError(
                    f"`{argument}`: {self._a_family} given as a dict needs a 'class_name' key, got {sorted(identifier)}"
                )
            config = identifier.get("config") or {}
            return self.lookup(identifier["class_name"], argument)(**config)
        if isinstance(identifier, type):
            return identifier()
        if callable(identifier):
            return identifier
        raise ArgumentTypeError(
            f"`{argument}` must be {self._a_family} name, a Keras config dict or a callable, "
            f"got {type(identifier).__name__}"
        )


class Configurable:
    """Base of registry objects whose constructor arguments are their config (Keras ``get_config``)."""

    def get_config(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def serialize(obj: Any) -> Any:
    """The JSON form of a resolved object: its Keras config dict, or its name; ``None`` stays."""
    if obj is None:
        return None
    if hasattr(obj, "get_config"):
        return {"class_name": type(obj).__name__, "config": obj.get_config()}
    name = getattr(obj, "keras_name", None) or getattr(obj, "__name__", None)
    if name is None:
        raise ConfigError(f"cannot serialize {obj!r}: give it a get_config() method or a __name__")
    return name
