"""A small training run: an LSTM (+ torch.nn.Linear) learns a toy sequence task on CPU in seconds."""

from __future__ import annotations

import torch

import streamlstm as sl
from streamlstm.layers import constrain_after_step


class Model(torch.nn.Module):
    def __init__(self, **lstm_kwargs) -> None:
        super().__init__()
        self.lstm = sl.LSTM(16, seed=0, **lstm_kwargs)
        # Build before the optimizer collects the parameters (weights are created by build, as in Keras).
        self.lstm.build((None, None, 2))
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x, mask=None):
        return self.head(self.lstm(x, mask=mask)).squeeze(-1)


def toy_batch(generator: torch.Generator, with_mask: bool):
    """Target: the sum of the first feature over the last two real steps (one step of memory)."""
    x = torch.rand(32, 10, 2, generator=generator) * 2 - 1
    mask = None if not with_mask else torch.rand(32, 10, generator=generator) < 0.7
    real = torch.ones(32, 10) if mask is None else mask.float()
    rank_from_end = real.flip(1).cumsum(1).flip(1)  # 1 at the last real step, 2 at the one before
    return x, mask, (x[..., 0] * real * (rank_from_end <= 2)).sum(1)


def train(model: torch.nn.Module, with_mask: bool, steps: int = 100, **optimizer_hooks) -> tuple[float, float]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    handle = optimizer_hooks.get("hook", lambda opt: None)(optimizer)
    losses = []
    for _ in range(steps):
        x, mask, target = toy_batch(generator, with_mask)
        loss = torch.nn.functional.mse_loss(model(x, mask), target) + sum(model.lstm.losses, torch.tensor(0.0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if handle is not None:
        handle.remove()
    return sum(losses[:5]) / 5, sum(losses[-10:]) / 10


def test_lstm_learns_a_toy_sequence_task() -> None:
    model = Model()
    start, end = train(model, with_mask=False)
    assert model.lstm.last_path == "fused"
    assert end < 0.05 * start


def test_lstm_learns_with_a_mask() -> None:
    model = Model()
    start, end = train(model, with_mask=True)
    assert model.lstm.last_path == "fused"
    assert end < 0.05 * start


def test_constraints_hold_after_every_step() -> None:
    model = Model(kernel_constraint=sl.layers.constraints.MaxNorm(0.5), recurrent_constraint="non_neg",
                  bias_constraint={"class_name": "MinMaxNorm", "config": {"min_value": 0.5, "max_value": 1.5}})
    seen = []

    def hook(optimizer):
        handle = constrain_after_step(optimizer, model)
        # Runs after the constraint hook: record the weights each step leaves behind.
        optimizer.register_step_post_hook(lambda *_: seen.append(model.lstm.get_weights()))
        return handle

    train(model, with_mask=True, steps=20, hook=hook)
    assert len(seen) == 20
    for kernel, recurrent, bias in seen:
        assert (torch.from_numpy(kernel).norm(dim=0) <= 0.5 + 1e-5).all()
        assert (recurrent >= 0).all()
        assert 0.5 - 1e-5 <= float(torch.from_numpy(bias).norm()) <= 1.5 + 1e-5


def test_constraint_hook_can_be_removed() -> None:
    model = Model(recurrent_constraint="non_neg")
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    handle = constrain_after_step(optimizer, model)
    handle.remove()
    x, mask, target = toy_batch(torch.Generator().manual_seed(1), with_mask=False)
    model.lstm.cell.recurrent_kernel.data.fill_(-1.0)
    torch.nn.functional.mse_loss(model(x), target).backward()
    optimizer.step()
    assert (model.lstm.cell.recurrent_kernel < 0).any()


def test_generic_path_learns_too() -> None:
    model = Model(activation="relu")
    start, end = train(model, with_mask=True, steps=100)
    assert model.lstm.last_path == "generic"
    assert end < 0.1 * start
