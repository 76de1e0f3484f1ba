"""The precision policy (``streamlstm.layers.kernels``): cuDNN's LSTM runs at the precision that
``torch.get_float32_matmul_precision()`` gives the GEMMs, whatever the global cuDNN setting says.

No CUDA here, and no mocks: the calls run on tensors of PyTorch's ``meta`` device (shapes only), which
take the same non-CPU branch a CUDA tensor takes, and a ``TorchFunctionMode`` (PyTorch's own hook on
every torch function call) records the cuDNN RNN setting at the moment the native LSTM kernel is
called. The CUDA numbers themselves are checked by ``benchmarks/gpu_check.py`` where a GPU is lent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import streamlstm as sl
from streamlstm.layers import fused_lstm
from streamlstm.layers.kernels import (
    _CudnnRnnSetting,
    _SequenceUnderPolicy,
    _under_policy,
    cudnn_rnn_precision,
    native_sequence,
)

RNN = torch.backends.cudnn.rnn
CONV = torch.backends.cudnn.conv
WAIT = 30.0   # seconds; only reached if something is broken


class LSTMKernelWatch(TorchFunctionMode):
    """Records ``torch.backends.cudnn.rnn.fp32_precision`` inside every call of PyTorch's LSTM kernel
    (``torch._VF.lstm`` is ``torch.lstm``); ``inside`` runs there too, when given."""

    def __init__(self, inside=None) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.inside = inside

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.lstm:
            self.seen.append(RNN.fp32_precision)
            if self.inside is not None:
                self.inside()
        return func(*args, **(kwargs or {}))


class GemmWatch(TorchDispatchMode):
    """Records the cuDNN RNN setting at every matrix product PyTorch's autograd runs (``aten.mm``): on
    ``meta`` tensors the LSTM's backward is made of them, where CUDA runs cuDNN's backward kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.mm.default:
            self.seen.append(RNN.fp32_precision)
        return func(*args, **(kwargs or {}))


@pytest.fixture(autouse=True)
def _restore_global_precision() -> Iterator[None]:
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32, RNN.fp32_precision,
             CONV.fp32_precision)
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]
    RNN.fp32_precision, CONV.fp32_precision = saved[2], saved[3]


def settings() -> tuple[bool, str, str]:
    return torch.backends.cudnn.allow_tf32, RNN.fp32_precision, CONV.fp32_precision


def sequence_args(device: str = "meta", batch: int = 3, time: int = 4, features: int = 2, units: int = 5):
    def t(*shape):
        return torch.randn(*shape, device=device)

    return t(batch, time, features), t(batch, units), t(batch, units), t(features, 4 * units), \
        t(units, 4 * units), t(4 * units)


def test_highest_runs_cudnn_in_exact_float32_although_allow_tf32_is_on() -> None:
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True   # PyTorch's default: cuDNN may use TF32
    before = settings()
    assert before == (True, "tf32", "tf32")
    with LSTMKernelWatch() as watch:
        out, h_n, c_n = native_sequence(*sequence_args())
    assert watch.seen == ["ieee"]
    assert out.shape == (3, 4, 5) and h_n.shape == c_n.shape == (3, 5)
    assert settings() == before   # the global setting is back after the call


@pytest.mark.parametrize("precision", ["high", "medium"])
def test_high_and_medium_allow_tf32_although_the_global_flag_is_off(precision) -> None:
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = False
    before = settings()
    with LSTMKernelWatch() as watch:
        native_sequence(*sequence_args())
    assert watch.seen == ["tf32"]
    assert settings() == before == (False, "none", "none")


@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
def test_one_knob_decides_for_cublas_and_cudnn(precision) -> None:
    """cuBLAS (the step path's GEMMs) reads the same setting natively: both allow TF32 or neither does."""
    torch.set_float32_matmul_precision(precision)
    assert (cudnn_rnn_precision() == "tf32") is torch.backends.cuda.matmul.allow_tf32
    assert cudnn_rnn_precision() == ("ieee" if precision == "highest" else "tf32")


def test_the_lstm_layer_and_the_fused_adapter_call_cudnn_under_the_policy() -> None:
    torch.backends.cudnn.allow_tf32 = True
    layer = sl.LSTM(5, return_sequences=True, return_state=True)
    layer.build((None, None, 2))
    layer.to("meta")
    x, h0, c0, kernel, recurrent_kernel, bias = sequence_args()
    with LSTMKernelWatch() as watch:
        out, h, c = layer(x)
        fused_lstm(x, None, h0, c0, kernel, recurrent_kernel, bias)
    assert layer.last_path == "fused" and out.shape == (3, 4, 5) and h.device.type == "meta"
    assert watch.seen == ["ieee", "ieee"]
    assert settings() == (True, "tf32", "tf32")


def test_the_backward_kernel_runs_under_the_policy_too() -> None:
    """Autograd runs the backward after the call; it must not fall back to the global TF32 setting."""
    torch.backends.cudnn.allow_tf32 = True
    x, h0, c0, kernel, recurrent_kernel, bias = sequence_args()
    for leaf in (x, kernel, recurrent_kernel, bias):
        leaf.requires_grad_()
    with LSTMKernelWatch() as forward:
        out, h_n, c_n = native_sequence(x, h0, c0, kernel, recurrent_kernel, bias)
    assert settings() == (True, "tf32", "tf32")
    with GemmWatch() as backward:
        (out.sum() + h_n.sum() + c_n.sum()).backward()
    assert forward.seen == ["ieee"]
    assert backward.seen and set(backward.seen) == {"ieee"}
    assert settings() == (True, "tf32", "tf32")
    assert [t.grad.shape for t in (x, kernel, recurrent_kernel, bias)] == [
        t.shape for t in (x, kernel, recurrent_kernel, bias)]


def test_the_policy_path_has_the_kernels_numbers_and_exact_gradients() -> None:
    """The autograd function CUDA takes when gradients are needed, run here on CPU float64 numbers:
    the same outputs as the plain kernel, and gradients that pass torch's numerical gradcheck. Inputs
    in torch's layout (x, h0, c0, W_ih, W_hh, b_ih, b_hh); b_hh takes no gradient, as in the layers."""
    torch.manual_seed(0)
    batch, time, features, units = 2, 3, 2, 3
    shapes = [(batch, time, features), (1, batch, units), (1, batch, units), (4 * units, features),
              (4 * units, units), (4 * units,), (4 * units,)]
    tensors = [torch.randn(*shape, dtype=torch.float64, requires_grad=index < 6)
               for index, shape in enumerate(shapes)]
    expected = torch.lstm(tensors[0], tensors[1:3], tensors[3:], True, 1, 0.0, False, False, True)
    got = _SequenceUnderPolicy.apply(True, *tensors)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda *t: _SequenceUnderPolicy.apply(True, *t), tensors, atol=1e-8, rtol=1e-6)


def test_the_setting_is_restored_when_the_kernel_raises() -> None:
    torch.backends.cudnn.allow_tf32 = True

    def fail() -> None:
        raise RuntimeError("kernel failed")

    with LSTMKernelWatch(inside=fail) as watch, pytest.raises(RuntimeError, match="kernel failed"):
        native_sequence(*sequence_args())
    assert watch.seen == ["ieee"]
    assert settings() == (True, "tf32", "tf32")


@pytest.mark.parametrize(("start", "precision", "inside"), [(True, "ieee", (False, "none", "none")),
                                                          (False, "tf32", (True, "tf32", "tf32"))])
def test_torch_before_per_operator_settings_gets_the_legacy_flag(start, precision, inside) -> None:
    """torch < 2.9 has no ``cudnn.rnn.fp32_precision``; there cuDNN's RNN reads ``cudnn.allow_tf32``.
    That flag still drives the RNN setting in this torch, so the fallback is checked for real here."""
    torch.backends.cudnn.allow_tf32 = start
    before, seen = settings(), []
    _under_policy(precision, lambda: seen.append(settings()), _CudnnRnnSetting(per_operator=False))
    assert seen == [inside]
    assert settings() == before


def test_cpu_tensors_leave_the_cudnn_setting_alone() -> None:
    """cuDNN never runs on CPU tensors: no setting is touched (the 1-row latency path pays nothing)."""
    torch.backends.cudnn.allow_tf32 = True
    with LSTMKernelWatch() as watch:
        native_sequence(*sequence_args("cpu"))
    assert watch.seen == ["tf32"]


def test_concurrent_calls_each_run_under_the_policy_and_the_setting_is_restored() -> None:
    """Thread A is held inside its kernel call while B calls: B must not start its call (and save A's
    temporary setting as "the original") until A has put the global setting back."""
    torch.backends.cudnn.allow_tf32 = True
    a_inside, release_a, b_inside = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def call(name: str, inside) -> None:
        try:
            with LSTMKernelWatch(inside=inside) as watch:
                native_sequence(*sequence_args())
            seen[name] = watch.seen
        except BaseException as exc:   # reported by the main thread
            errors.append(exc)

    def hold_a() -> None:
        a_inside.set()
        assert release_a.wait(WAIT)

    a = threading.Thread(target=call, args=("a", hold_a))
    b = threading.Thread(target=call, args=("b", b_inside.set))
    a.start()
    assert a_inside.wait(WAIT)
    b.start()
    # B may not enter its kernel while A is inside. (Without the lock it would within this wait.)
    assert not b_inside.wait(0.2)
    release_a.set()
    a.join(WAIT)
    b.join(WAIT)
    assert not a.is_alive() and not b.is_alive() and not errors
    assert seen == {"a": ["ieee"], "b": ["ieee"]}
    assert settings() == (True, "tf32", "tf32")
