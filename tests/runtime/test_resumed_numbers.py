"""A runtime rebuilt from a state_dict computes the next batches bit for bit like the runtime that kept
running: the continuing one reuses its plan (``BatchPlan.again``/``continued``), its adopted and
rotated carry rows and its kernels' cached weights, the rebuilt one starts with none of them, and
none of that may change a number (a resumed replay must equal an uninterrupted one exactly)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_helpers import make_batch, outputs

import streamlstm as sl

WIDTH, UNITS = 8, 32


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    layer = sl.LSTM(UNITS, return_sequences=True, seed=3)
    layer.build((None, None, WIDTH))
    return torch.nn.Sequential(layer, torch.nn.Linear(UNITS, 2)).eval()


def _recording(streams: int, steps: int, interleaved: bool, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys, inputs and resets: ``streams`` streams recorded live (the same key order every round), or
    interleaved at random with a few resets."""
    rng = np.random.default_rng(seed)
    keys = np.tile(np.arange(streams), steps)
    if interleaved:
        keys = keys[np.argsort(rng.random(len(keys)), kind="stable")]
    x = rng.standard_normal((len(keys), WIDTH)).astype(np.float32)
    reset = (rng.random(len(keys)) < 0.02) if interleaved else np.zeros(len(keys), bool)
    return keys, x, reset


def _runtime(model: torch.nn.Module, mode: str) -> sl.StreamRuntime:
    return sl.StreamRuntime(model, key="id", features="x", reset="r", mode=mode)


@settings(max_examples=12, deadline=None)
@given(streams=st.sampled_from([7, 130, 400]), interleaved=st.booleans(), batch_rows=st.integers(50, 1700),
       resume_after=st.integers(1, 4), mode=st.sampled_from(["auto", "step", "chunk"]), seed=st.integers(0, 99))
def test_a_runtime_rebuilt_from_its_state_dict_continues_bit_for_bit(streams, interleaved, batch_rows,
                                                                     resume_after, mode, seed):
    keys, x, reset = _recording(streams, 2 + 4 * batch_rows // streams, interleaved, seed)
    cuts = list(range(0, len(keys), batch_rows))
    batches = [make_batch(keys[lo:lo + batch_rows], x[lo:lo + batch_rows], reset=reset[lo:lo + batch_rows])
               for lo in cuts]
    resume_after = min(resume_after, len(batches) - 1)
    model = _model()
    running = _runtime(model, mode)
    with torch.inference_mode():
        for batch in batches[:resume_after]:
            running.feed(batch)
        saved = running.state_dict()
        rebuilt = _runtime(_model(), mode)
        rebuilt.load_state_dict(saved)
        for number, batch in enumerate(batches[resume_after:], resume_after):
            expected, got = outputs(running.feed(batch)), outputs(rebuilt.feed(batch))
            assert np.array_equal(got, expected), f"batch {number} of {len(batches)}: max |diff| " \
                                                  f"{np.abs(got - expected).max():.3g}"
