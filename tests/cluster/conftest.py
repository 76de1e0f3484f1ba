"""Ray, started once for the whole test session (local, 2 CPUs); every sharded runtime's actors ask for
a tenth of a CPU so that several runtimes fit at once.

Starting an actor costs a process that imports torch (seconds on a busy machine), so the tests share a
few sharded runtimes (``shared_sharded``), each test feeding streams of its own (fresh keys); only the
tests that kill, save or load shards make their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import ACTOR_CPUS, COLUMNS, SHARED_MODEL


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


@pytest.fixture(scope="session")
def shared_sharded(ray_session: Any) -> Iterator[Any]:
    """``get(shards, kind)``: the session's ShardedRuntime of ``shards`` shards for int or str keys (made on
    first use; columns :data:`cluster_helpers.COLUMNS`, 16 key groups, late rows raise), over ``SHARED_MODEL``."""
    import streamlstm as sl

    made: dict = {}

    def get(shards: int, kind: str = "int") -> Any:
        if (shards, kind) not in made:
            made[shards, kind] = sl.ShardedRuntime(SHARED_MODEL, shards=shards, key_groups=16, num_cpus=ACTOR_CPUS,
                                                   **COLUMNS)
        return made[shards, kind]

    yield get
    for runtime in made.values():
        runtime.close()
