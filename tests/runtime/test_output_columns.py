"""The output columns wrap the computed tensors' memory (no copy) when they can: the values stay valid
after every tensor of the feed is gone, and outputs that are not contiguous float32 (a float64 model, a
strided head) are converted first, to the same numbers."""

from __future__ import annotations

import gc

import numpy as np
import torch
from runtime_helpers import F, make_batch

import streamlstm as sl


class EveryOther(torch.nn.Module):
    """A per-step head whose output is a strided view of its input (not contiguous)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, ::2]


def _values(batch, column: str = "output") -> np.ndarray:
    array = batch.column(column)
    return array.flatten().to_numpy().reshape(len(array), -1)


def test_outputs_stay_valid_after_the_feeds_tensors_are_gone() -> None:
    torch.manual_seed(0)
    layer = sl.LSTM(5, input_shape=(None, F))
    runtime = sl.StreamRuntime(layer, key="id", features="x")
    x = np.random.default_rng(0).normal(size=(4, F)).astype(np.float32)
    with torch.no_grad():
        want = layer(torch.from_numpy(x)[:, None, :]).numpy()
    out = runtime.feed(make_batch(np.arange(4), x))
    del runtime
    gc.collect()
    for _ in range(20):   # new tensors of the same size would reuse freed memory
        torch.randn(4, 5).add_(1.0)
    np.testing.assert_allclose(_values(out), want, rtol=1e-6, atol=1e-7)


def test_strided_and_float64_outputs_are_converted_to_the_same_numbers() -> None:
    torch.manual_seed(1)
    layer = sl.LSTM(6, input_shape=(None, F))
    x = np.random.default_rng(1).normal(size=(3, F)).astype(np.float32)
    for model, dtype in ((torch.nn.Sequential(layer, EveryOther()), torch.float32),
                         (torch.nn.Sequential(layer, EveryOther()).to(torch.float64), torch.float64)):
        runtime = sl.StreamRuntime(model, key="id", features="x", return_state=True)
        out = runtime.feed(make_batch(np.arange(3), x))
        with torch.no_grad():
            h = layer(torch.from_numpy(x).to(dtype)[:, None, :])
        assert out.schema.field("output").type.list_size == 3
        np.testing.assert_allclose(_values(out), h[:, ::2].float().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(_values(out, "h_0"), h.float().numpy(), rtol=1e-6, atol=1e-7)
