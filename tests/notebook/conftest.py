"""Notebook tests run on one torch thread (tiny tensors; see tests/layers/conftest.py) and stop every
dashboard they leave running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import streamlstm as sl


@pytest.fixture(autouse=True)
def _one_torch_thread_and_no_live_dashboards() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for dash in sl.notebook.live_dashboards().values():
        dash.stop()
