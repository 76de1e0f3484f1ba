"""Weight initializers by their Keras names, with Keras's formulas.

Every initializer is called as ``init(shape, dtype=torch.float32, generator=None)`` and returns a new
tensor. For a 2-D shape ``(fan_in, fan_out)``; the LSTM kernel ``(input_dim, 4 * units)`` therefore has
``fan_out = 4 * units`` exactly as in Keras.

- ``glorot_uniform``: U(-L, L), ``L = sqrt(6 / (fan_in + fan_out))``.
- ``glorot_normal``: truncated N(0, s), ``s = sqrt(2 / (fan_in + fan_out)) / .87962566``.
- ``he_*`` / ``lecun_*``: the same with ``scale / fan_in`` (scale 2 for He, 1 for LeCun).
- ``orthogonal(gain)``: QR of a normal matrix over the whole 2-D shape, signs fixed by ``diag(R)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from streamlstm.layers.registry import Configurable, Registry, serialize

__all__ = ["get", "names", "serialize"]

_registry = Registry("initializer")
Shape = Sequence[int]
_TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


class Initializer(Configurable):
    """Base class: subclasses implement ``sample(shape, dtype, generator)``."""

    seed: int | None = None

    def __call__(self, shape: Shape, dtype: torch.dtype | None = None, generator: torch.Generator | None = None):
        if self.seed is not None:
            generator = torch.Generator().manual_seed(int(self.seed))
        return self.sample(tuple(int(s) for s in shape), dtype or torch.float32, generator)

    def sample(self, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(shape, mean, std, dtype, generator) -> torch.Tensor:
    out = torch.empty(shape, dtype=torch.float64)
    torch.nn.init.trunc_normal_(out, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=generator)
    return (out * std + mean).to(dtype)


@_registry.register("Zeros", "zeros")
class Zeros(Initializer):
    def sample(self, shape, dtype, generator):
        return torch.zeros(shape, dtype=dtype)


@_registry.register("Ones", "ones")
class Ones(Initializer):
    def sample(self, shape, dtype, generator):
        return torch.ones(shape, dtype=dtype)


@_registry.register("Constant", "constant")
class Constant(Initializer):
    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def sample(self, shape, dtype, generator):
        return torch.full(shape, float(self.value), dtype=dtype)


@_registry.register("RandomNormal", "random_normal")
class RandomNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def sample(self, shape, dtype, generator):
        out = torch.randn(shape, dtype=torch.float64, generator=generator)
        return (out * self.stddev + self.mean).to(dtype)


@_registry.register("RandomUniform", "random_uniform")
class RandomUniform(Initializer):
    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None) -> None:
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def sample(self, shape, dtype, generator):
        out = torch.rand(shape, dtype=torch.float64, generator=generator)
        return (out * (self.maxval - self.minval) + self.minval).to(dtype)


@_registry.register("TruncatedNormal", "truncated_normal")
class TruncatedNormal(Initializer):
    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def sample(self, shape, dtype, generator):
        return _truncated_normal(shape, self.mean, self.stddev, dtype, generator)


@_registry.register("VarianceScaling", "variance_scaling")
class VarianceScaling(Initializer):
    """Keras ``VarianceScaling``: variance ``scale / n`` with n from ``mode`` (fan_in, fan_out, fan_avg)."""

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal",
                 seed: int | None = None) -> None:
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"`mode` must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                f"`distribution` must be 'truncated_normal', 'untruncated_normal' or 'uniform', got {distribution!r}"
            )
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed

    def sample(self, shape, dtype, generator):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return RandomUniform(-limit, limit).sample(shape, dtype, generator)
        if self.distribution == "untruncated_normal":
            return RandomNormal(0.0, math.sqrt(variance)).sample(shape, dtype, generator)
        return _truncated_normal(shape, 0.0, math.sqrt(variance) / _TRUNCATED_STD, dtype, generator)


def _variance_scaling_preset(name: str, scale: float, mode: str, distribution: str) -> type:
    def __init__(self, seed: int | None = None) -> None:
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self) -> dict:
        return {"seed": self.seed}

    cls = type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config})
    return _registry.register(name)(cls)


GlorotUniform = _variance_scaling_preset("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variance_scaling_preset("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _variance_scaling_preset("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _variance_scaling_preset("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _variance_scaling_preset("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _variance_scaling_preset("LecunNormal", 1.0, "fan_in", "truncated_normal")


@_registry.register("Orthogonal", "orthogonal")
class Orthogonal(Initializer):
    """``gain * Q`` from the QR decomposition of a normal matrix flattened to ``(prod(shape[:-1]), shape[-1])``."""

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        self.gain, self.seed = gain, seed

    def sample(self, shape, dtype, generator):
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = torch.randn(max(rows, cols), min(rows, cols), dtype=torch.float64, generator=generator)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))
        if rows < cols:
            q = q.T
        return (self.gain * q).reshape(shape).to(dtype)


@_registry.register("Identity", "identity")
class Identity(Initializer):
    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def sample(self, shape, dtype, generator):
        if len(shape) != 2:
            raise ValueError(f"the identity initializer needs a 2-D shape, got {shape}")
        return (self.gain * torch.eye(*shape, dtype=torch.float64)).to(dtype)


def get(identifier: object, argument: str = "initializer") -> Initializer:
    return _registry.get(identifier, argument, allow_none=False)


def names() -> list[str]:
    return _registry.names()
