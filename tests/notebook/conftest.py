"""Notebook tests stop every dashboard they leave running (one torch thread: see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import streamlstm as sl


@pytest.fixture(autouse=True)
def _no_live_dashboards() -> Iterator[None]:
    yield
    for dash in sl.notebook.live_dashboards().values():
        dash.stop()
