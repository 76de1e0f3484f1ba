"""Fixtures of the serve tests (helpers: ``serve_helpers``). The test process and the servers run torch on
one thread: the tensors are small, and on a shared 2-core machine intra-op threads spinning against
other processes made feeds 10-50x slower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serve_helpers import F

import streamlstm as sl


@pytest.fixture(scope="package")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LSTM(8) + Linear(8, 2) model over F=4 features, saved with sl.save_model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(sl.LSTM(8, return_sequences=True), torch.nn.Linear(8, 2))
    model[0].build((None, None, F))
    path = tmp_path_factory.mktemp("serve-model") / "model.slm"
    sl.save_model(model, path)
    return path

