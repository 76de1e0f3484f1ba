"""Ray, imported only when a sharded runtime is made (the ``ray`` extra)."""

from __future__ import annotations

from typing import Any

from streamlstm.errors import ConfigError

__all__ = ["import_ray", "start_ray"]


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError that names the install command."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("sharded runtimes need Ray: pip install 'streamlstm[ray]'") from exc
    return ray


def start_ray(address: str | None) -> Any:
    """``ray``, connected: to ``address`` (e.g. "auto" for a cluster started with ``ray start --head``),
    or to a local Ray started here when None; an already connected Ray is used as it is."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray
