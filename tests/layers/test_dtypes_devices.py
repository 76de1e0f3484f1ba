"""dtypes (float32 default, float64, float16/bfloat16 on CPU), .to(), numpy inputs, CUDA (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_helpers import assert_all_close, call_both, make_lstm, make_mask, tolerance

import streamlstm as sl
from streamlstm.layers import force_generic

LOW_PRECISION = [torch.float16, torch.bfloat16]
gpu = pytest.mark.gpu


def test_float32_by_default() -> None:
    layer = sl.LSTM(3)
    out = layer(torch.randn(2, 4, 2))
    assert out.dtype == torch.float32 and layer.cell.kernel.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, "float64", *LOW_PRECISION])
def test_dtype_argument(dtype) -> None:
    layer = sl.LSTM(3, dtype=dtype, return_state=True)
    expected = dtype if isinstance(dtype, torch.dtype) else torch.float64
    out, h, c = layer(torch.randn(2, 4, 2))  # float32 inputs are cast to the weights' dtype
    assert {t.dtype for t in (out, h, c, layer.cell.kernel)} == {expected}


@pytest.mark.parametrize("built", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, *LOW_PRECISION])
def test_to_dtype_before_or_after_build(built, dtype) -> None:
    layer = sl.LSTM(3, stateful=True, return_state=True)
    if built:
        layer(torch.randn(2, 4, 2))  # stores float32 carries too
    layer.to(dtype)
    out, h, c = layer(torch.randn(2, 4, 2))
    assert {t.dtype for t in (out, h, c, *layer.parameters(), *layer.states)} == {dtype}
    assert layer.cell.get_initial_state(1)[0].dtype == dtype


def test_double_and_half_methods() -> None:
    layer = sl.RNN([sl.LSTMCell(3), sl.LSTMCell(2)]).double()
    assert layer(torch.randn(2, 4, 2)).dtype == torch.float64
    assert layer.float()(torch.randn(2, 4, 2)).dtype == torch.float32


def test_float64_fused_equals_generic_tightly() -> None:
    layer = make_lstm(5, 3, dtype=torch.float64, return_sequences=True, return_state=True, go_backwards=True)
    x = torch.randn(4, 12, 3, dtype=torch.float64)
    fused, generic = call_both(layer, x, mask=make_mask("holes", 4, 12, seed=4))
    assert_all_close(fused, generic, **tolerance(torch.float64))


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("kind", ["none", "left_padded", "holes", "fully_masked_row"])
def test_low_precision_paths_agree_with_float64(dtype, kind) -> None:
    """torch's CPU kernels run float16 and bfloat16 LSTMs; both paths stay near the float64 numbers."""
    reference = make_lstm(5, 3, dtype=torch.float64, return_sequences=True, return_state=True)
    layer = make_lstm(5, 3, return_sequences=True, return_state=True).to(dtype)
    layer.set_weights(reference.get_weights())
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    mask = make_mask(kind, 4, 10, seed=6)
    expected = reference(x, mask=mask)
    fused, generic = call_both(layer, x.to(dtype), mask=mask)
    assert all(t.dtype == dtype for t in fused + generic)
    tol = tolerance(dtype)
    assert_all_close([t.double() for t in fused], expected, **tol)
    assert_all_close([t.double() for t in generic], expected, **tol)
    assert_all_close(fused, generic, **tol)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_gradients(dtype) -> None:
    layer = make_lstm(4, 3).to(dtype)
    x = torch.randn(2, 6, 3, dtype=dtype, requires_grad=True)
    layer(x, mask=make_mask("holes", 2, 6, seed=1)).float().sum().backward()
    assert x.grad.dtype == dtype and all(p.grad.dtype == dtype for p in layer.parameters())


@pytest.mark.parametrize("array_dtype", [np.float32, np.float64, np.int64])
def test_numpy_inputs(array_dtype) -> None:
    layer = make_lstm(3, 2, return_sequences=True)
    x = np.random.default_rng(0).normal(size=(2, 4, 2)).round().astype(array_dtype)
    out = layer(x, mask=np.array([[1, 1, 0, 1], [0, 1, 1, 1]], bool))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    expected = layer(torch.from_numpy(x.astype(np.float32)), mask=torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]]).bool())
    torch.testing.assert_close(out, expected)


def test_numpy_views_and_lists() -> None:
    layer = make_lstm(3, 2)
    x = np.random.default_rng(0).normal(size=(2, 4, 2)).astype(np.float32)
    torch.testing.assert_close(layer(x[:, ::-1]), layer(torch.from_numpy(x.copy()).flip(1)))
    torch.testing.assert_close(layer(x[:1, :1, ::-1]), layer(torch.from_numpy(x[:1, :1, ::-1].copy())))
    torch.testing.assert_close(layer(x.tolist()), layer(torch.from_numpy(x)))
    state = [np.zeros((2, 3), np.float64)] * 2
    torch.testing.assert_close(layer(x, initial_state=state), layer(x))


# -- CUDA ------------------------------------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("kind", ["none", "right_padded", "left_padded", "holes", "fully_masked_row", "all_masked"])
def test_cuda_fused_equals_generic_and_cpu(kind) -> None:
    cpu = make_lstm(6, 3, return_sequences=True, return_state=True, dtype=torch.float64)
    gpu_layer = make_lstm(6, 3, return_sequences=True, return_state=True, dtype=torch.float64).to("cuda")
    x, mask = torch.randn(5, 9, 3, dtype=torch.float64), make_mask(kind, 5, 9, seed=2)
    state = [torch.randn(5, 6, dtype=torch.float64) for _ in range(2)]
    expected = cpu(x, mask=mask, initial_state=state)
    cuda_mask = None if mask is None else mask.cuda()
    fused, generic = call_both(gpu_layer, x.cuda(), mask=cuda_mask, initial_state=[s.cuda() for s in state])
    assert all(t.device.type == "cuda" for t in fused)
    assert_all_close([t.cpu() for t in fused], expected, rtol=1e-10, atol=1e-12)
    assert_all_close([t.cpu() for t in generic], expected, rtol=1e-10, atol=1e-12)


@gpu
def test_cuda_float32_matches_cpu() -> None:
    cpu = make_lstm(32, 8, return_sequences=True)
    gpu_layer = make_lstm(32, 8, return_sequences=True).cuda()
    x, mask = torch.randn(16, 40, 8), make_mask("holes", 16, 40, seed=3)
    got = gpu_layer(x.cuda(), mask=mask.cuda())
    assert gpu_layer.last_path == "fused"
    torch.testing.assert_close(got.cpu(), cpu(x, mask=mask), rtol=1e-4, atol=1e-5)


@gpu
def test_cuda_gradients_agree_between_paths() -> None:
    layer = make_lstm(8, 4, return_state=True, dtype=torch.float64).cuda()
    x = torch.randn(3, 7, 4, dtype=torch.float64, device="cuda")
    mask = make_mask("holes", 3, 7, seed=1).cuda()

    def grads(generic: bool):
        leaf = x.clone().requires_grad_()
        for p in layer.parameters():
            p.grad = None
        if generic:
            with force_generic():
                out = layer(leaf, mask=mask)
        else:
            out = layer(leaf, mask=mask)
        sum(t.sum() for t in out).backward()
        return [leaf.grad] + [p.grad.clone() for p in layer.parameters()]

    assert_all_close(grads(False), grads(True), rtol=1e-10, atol=1e-12)


@gpu
def test_cuda_unbuilt_to_device_and_stateful_carries() -> None:
    layer = sl.LSTM(4, stateful=True).to("cuda")
    layer(torch.randn(2, 3, 2, device="cuda"))
    assert layer.cell.kernel.device.type == "cuda"
    assert all(s.device.type == "cuda" for s in layer.states)
    layer.to("cpu")
    out = layer(torch.randn(2, 3, 2))  # the stored carries follow the input's device
    assert out.device.type == "cpu"


@gpu
def test_cuda_dropout_with_seed() -> None:
    def run():
        layer = sl.LSTM(4, dropout=0.5, recurrent_dropout=0.3, seed=2).cuda()
        return layer(torch.ones(3, 5, 2, device="cuda"), training=True)

    torch.testing.assert_close(run(), run())
