"""Ray, imported only when a sharded runtime is made (the ``ray`` extra)."""

from __future__ import annotations

import time as _time
from typing import Any

from streamlstm.errors import ConfigError

__all__ = ["check_cpus", "import_ray", "start_ray"]


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


# How long CPUs that just-killed actors held may take to show as free again in Ray's resource view.
FREE_CPU_WAIT_SECONDS = 10.0


def check_cpus(ray: Any, shards: int, num_cpus: float) -> None:
    """Refuse shards Ray could never schedule: it would wait for free CPUs forever (e.g. while another
    ShardedRuntime's actors hold them). Polls Ray's resource view for a few seconds first, since
    actors killed just before release their CPUs a moment later."""
    needed = shards * num_cpus
    total = ray.cluster_resources().get("CPU", 0)
    if needed > total:
        raise ConfigError(f"{shards} shards x num_cpus={num_cpus} need {needed:g} CPUs but the Ray cluster has "
                          f"{total:g}; use fewer shards or a smaller num_cpus")
    deadline = _time.monotonic() + FREE_CPU_WAIT_SECONDS
    while (free := ray.available_resources().get("CPU", 0)) < needed - 1e-9:
        if _time.monotonic() > deadline:
            raise ConfigError(f"{shards} shards x num_cpus={num_cpus} need {needed:g} CPUs but only {free:g} of "
                              f"the Ray cluster's {total:g} are free: other actors hold the rest (another "
                              f"ShardedRuntime? close() it first), or pass a smaller num_cpus")
        _time.sleep(0.05)
