"""Layer tests run on one torch thread: their tensors are tiny, and on a shared 2-core CI machine
intra-op threads spinning against other processes made the suite ~10x slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
