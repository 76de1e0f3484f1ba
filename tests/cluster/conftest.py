"""Ray, started once for the whole test session (local, 2 CPUs); every sharded runtime's actors ask for
a tenth of a CPU so that several runtimes fit at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

ACTOR_CPUS = 0.1


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_session: Any) -> str:
    """The session's Ray, for subprocesses (``--ray-address``)."""
    return ray_session.get_runtime_context().gcs_address
