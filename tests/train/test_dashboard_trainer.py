"""The notebook Dashboard takes a StreamTrainer in place of a runtime: every batch is learned and the
status line shows the loss."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from train_helpers import make_model, train_batch

import streamlstm as sl

pytest.importorskip("ipywidgets")


def test_a_dashboard_learns_every_batch_and_shows_the_loss() -> None:
    rng = np.random.default_rng(0)
    batches = [train_batch([1, 2, 1, 2], rng.uniform(-1, 1, (4, 3)), rng.uniform(-1, 1, (4, 1))) for _ in range(5)]
    model = make_model(3, 4)
    trainer = sl.StreamTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), key="id", features="x",
                               target="y")
    dash = sl.notebook.Dashboard(trainer, iter(batches), key="trainer-test")
    try:
        assert asyncio.run(dash.run()) == 5
        assert trainer.stats()["updates"] == 5
        assert dash.runtime is trainer.runtime and sorted(trainer.runtime.keys()) == [1, 2]
        assert f"<span class='sl-loss'>{trainer.last_loss:.4g}</span>" in dash.controls.status.value
    finally:
        dash.stop()
