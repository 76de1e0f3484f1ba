"""StreamTrainer.learn equals a hand-written truncated-BPTT loop in plain torch (``torch.nn.LSTMCell``
over the dense per-stream series), for random window sizes, interleavings of rows, resets and masks:
the prequential outputs, the weights after every batch and the carries."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from train_helpers import make_model, train_batch

import streamlstm as sl

F, U = 3, 5
LR = 0.2


class Reference:
    """The dense loop: an LSTMCell (bias_hh frozen at 0) and a Linear, carries per stream in a tensor."""

    def __init__(self, model: torch.nn.Sequential, streams: int, momentum: float) -> None:
        kernel, recurrent, bias = (torch.from_numpy(w) for w in model[0].get_weights())
        self.cell = torch.nn.LSTMCell(F, U)
        self.dense = torch.nn.Linear(U, 1)
        with torch.no_grad():
            self.cell.weight_ih.copy_(kernel.T)
            self.cell.weight_hh.copy_(recurrent.T)
            self.cell.bias_ih.copy_(bias)
            self.cell.bias_hh.zero_()
            self.dense.load_state_dict(model[1].state_dict())
        self.cell.bias_hh.requires_grad_(False)
        params = [self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih, *self.dense.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=LR, momentum=momentum)
        self.h = torch.zeros(streams, U)
        self.c = torch.zeros(streams, U)

    def learn(self, keys: np.ndarray, x: np.ndarray, y: np.ndarray, real: np.ndarray,
              reset: np.ndarray) -> np.ndarray:
        """One window: the rows of each stream in order, step by step; returns outputs in row order."""
        h, c = list(self.h), list(self.c)   # per stream, built up with gradients inside the window
        outputs = [None] * len(keys)
        for row, key in enumerate(keys):
            if reset[row]:
                h[key], c[key] = torch.zeros(U), torch.zeros(U)
            if real[row]:
                h_new, c_new = self.cell(torch.from_numpy(x[row])[None], (h[key][None], c[key][None]))
                h[key], c[key] = h_new[0], c_new[0]
            outputs[row] = (h[key], real[row])
        # masked rows repeat h (the streams here always had a real step before, see the strategy)
        predictions = self.dense(torch.stack([o for o, _ in outputs]))
        counts = torch.from_numpy(real)
        if real.any():   # no row counts: no step (the carries still advance)
            loss = (predictions[counts] - torch.from_numpy(y[real])).square().mean()
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.h = torch.stack([v.detach() for v in h])
        self.c = torch.stack([v.detach() for v in c])
        return predictions.detach().numpy()

    def keras_weights(self) -> list[np.ndarray]:
        cell = self.cell
        return [cell.weight_ih.detach().numpy().T, cell.weight_hh.detach().numpy().T, cell.bias_ih.detach().numpy(),
                self.dense.weight.detach().numpy(), self.dense.bias.detach().numpy()]


@st.composite
def schedules(draw):
    streams = draw(st.integers(1, 4))
    batches = draw(st.integers(1, 4))
    plan = []
    for _ in range(batches):
        lengths = [draw(st.integers(0, 4)) for _ in range(streams)]
        if not sum(lengths):
            lengths[0] = 1
        keys = np.repeat(np.arange(streams), lengths)
        order = np.argsort(np.array(draw(st.permutations(range(len(keys))))), kind="stable")
        keys = keys[np.lexsort((order, keys))]                  # each stream's rows in order...
        keys = np.array(draw(st.permutations(keys.tolist())))   # ...then interleaved at random
        reset = np.array([draw(st.booleans()) and draw(st.booleans()) for _ in keys])
        real = np.array([draw(st.integers(0, 4)) > 0 for _ in keys])
        plan.append((keys, reset, real))
    return streams, plan, draw(st.sampled_from([0.0, 0.9])), draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None)
@given(schedules())
def test_learn_equals_a_hand_written_tbptt_loop(schedule) -> None:
    streams, plan, momentum, seed = schedule
    rng = np.random.default_rng(seed)
    model = make_model(F, U, seed=seed)
    reference = Reference(model, streams, momentum)
    trainer = sl.StreamTrainer(model, torch.optim.SGD(model.parameters(), lr=LR, momentum=momentum),
                               key="id", features="x", target="y", mask="real", reset="reset")
    started = np.zeros(streams, bool)   # masked rows before a stream's first real step repeat zeros
    for keys, reset, real in plan:
        real = real.copy()
        for row, key in enumerate(keys):   # keep every masked row after a real step of its stream's life
            if reset[row]:
                started[key] = False
            real[row] = real[row] or not started[key]
            started[key] = True
        x = rng.uniform(-1, 1, (len(keys), F)).astype(np.float32)
        y = rng.uniform(-1, 1, (len(keys), 1)).astype(np.float32)
        expected = reference.learn(keys, x, y, real, reset)
        out = trainer.learn(train_batch(keys, x, y, real=real, reset=reset))
        got = np.stack(out.column("output").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        weights = [*model[0].get_weights(), model[1].weight.detach().numpy(), model[1].bias.detach().numpy()]
        for mine, theirs in zip(weights, reference.keras_weights()):
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)
        for key in np.unique(keys):
            (h, c), = trainer.runtime.state(int(key))
            np.testing.assert_allclose(h, reference.h[key].numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(c, reference.c[key].numpy(), rtol=1e-5, atol=1e-5)
