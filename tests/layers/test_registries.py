"""Registries: activations, initializers, regularizers and constraints by Keras name, with Keras formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from streamlstm.errors import ArgumentTypeError, ConfigError
from streamlstm.layers import activations, constraints, initializers, regularizers

X = torch.linspace(-4.0, 4.0, 81, dtype=torch.float64)


# -- activations -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("tanh", np.tanh(X.numpy())),
    ("sigmoid", 1 / (1 + np.exp(-X.numpy()))),
    ("hard_sigmoid", np.clip(0.2 * X.numpy() + 0.5, 0, 1)),
    ("keras3_hard_sigmoid", np.clip(X.numpy() + 3, 0, 6) / 6),
    ("relu", np.maximum(X.numpy(), 0)),
    ("linear", X.numpy()),
    ("softsign", X.numpy() / (1 + np.abs(X.numpy()))),
    ("softplus", np.log1p(np.exp(X.numpy()))),
    ("elu", np.where(X.numpy() > 0, X.numpy(), np.expm1(X.numpy()))),
    ("selu", 1.0507009873554805 * np.where(X.numpy() > 0, X.numpy(), 1.6732632423543772 * np.expm1(X.numpy()))),
    ("swish", X.numpy() / (1 + np.exp(-X.numpy()))),
    ("gelu", X.numpy() * 0.5 * (1 + np.vectorize(math.erf)(X.numpy() / math.sqrt(2)))),
    ("exponential", np.exp(X.numpy())),
])
def test_activation_formulas(name, expected) -> None:
    np.testing.assert_allclose(activations.get(name)(X).numpy(), expected, rtol=1e-7, atol=1e-7)


def test_activation_names_none_and_callables() -> None:
    assert activations.get(None)(X) is X  # None is linear, as in Keras
    assert activations.get(torch.relu) is torch.relu
    assert activations.get("silu") is activations.get("swish")
    assert set(activations.names()) >= {"tanh", "sigmoid", "hard_sigmoid", "relu", "linear", "softsign", "softplus",
                                        "elu", "selu", "swish", "gelu", "exponential"}
    assert activations.serialize(activations.get("hard_sigmoid")) == "hard_sigmoid"


def test_unknown_and_wrong_type_activation() -> None:
    with pytest.raises(ConfigError, match=r"`activation`: unknown activation 'nope'; expected one of .*tanh"):
        activations.get("nope", "activation")
    with pytest.raises(ArgumentTypeError, match=r"`recurrent_activation` .* got int"):
        activations.get(3, "recurrent_activation")


# -- initializers --------------------------------------------------------------------------------------

def sample(name, shape=(200, 400), **config):
    init = initializers.get({"class_name": name, "config": config} if config else name)
    return init(shape, torch.float64, torch.Generator().manual_seed(0)).numpy()


def test_glorot_uniform_limit_and_variance() -> None:
    w = sample("glorot_uniform")
    limit = math.sqrt(6 / (200 + 400))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert w.var() == pytest.approx(limit**2 / 3, rel=0.02)


def test_lstm_kernel_fan_out_is_four_units() -> None:
    """The kernel (input_dim, 4u) has fan_out = 4u, as in Keras."""
    import streamlstm as sl

    cell = sl.LSTMCell(64, seed=0)
    cell.build((None, 32))
    limit = math.sqrt(6 / (32 + 256))
    assert cell.kernel.abs().max().item() <= limit
    assert cell.kernel.abs().max().item() > 0.99 * limit


@pytest.mark.parametrize(("name", "variance"), [
    ("glorot_normal", 2 / 600),
    ("he_normal", 2 / 200),
    ("he_uniform", 2 / 200),
    ("lecun_normal", 1 / 200),
    ("lecun_uniform", 1 / 200),
])
def test_variance_scaling_presets(name, variance) -> None:
    w = sample(name)
    assert w.mean() == pytest.approx(0.0, abs=0.01 * math.sqrt(variance))
    assert w.var() == pytest.approx(variance, rel=0.03)
    if name.endswith("normal"):  # truncated at two standard deviations of the untruncated normal
        assert np.abs(w).max() <= 2 * math.sqrt(variance) / 0.87962566103423978 + 1e-12
    else:
        assert np.abs(w).max() <= math.sqrt(3 * variance)


@pytest.mark.parametrize("shape", [(8, 32), (32, 8), (16, 16)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_orthogonal_is_orthogonal(shape, gain) -> None:
    w = sample("Orthogonal", shape, gain=gain)
    small = min(shape)
    gram = w @ w.T if shape[0] <= shape[1] else w.T @ w
    np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=1e-10)


def test_simple_initializers() -> None:
    assert not sample("zeros", (3, 4)).any()
    np.testing.assert_array_equal(sample("ones", (3, 4)), np.ones((3, 4)))
    np.testing.assert_array_equal(sample("Constant", (3, 4), value=2.5), np.full((3, 4), 2.5))
    np.testing.assert_array_equal(sample("Identity", (3, 4), gain=2.0), 2.0 * np.eye(3, 4))
    normal = sample("RandomNormal", mean=1.0, stddev=0.2)
    assert normal.mean() == pytest.approx(1.0, abs=0.01) and normal.std() == pytest.approx(0.2, rel=0.02)
    uniform = sample("RandomUniform", minval=-0.1, maxval=0.3)
    assert uniform.min() >= -0.1 and uniform.max() <= 0.3 and uniform.mean() == pytest.approx(0.1, abs=0.01)
    truncated = sample("TruncatedNormal", stddev=0.5)
    assert np.abs(truncated).max() <= 1.0


def test_initializer_seed_and_config_round_trip() -> None:
    init = initializers.get({"class_name": "GlorotUniform", "config": {"seed": 3}})
    torch.testing.assert_close(init((4, 5)), init((4, 5)))  # a seeded initializer repeats itself
    again = initializers.get(initializers.serialize(init))
    torch.testing.assert_close(again((4, 5)), init((4, 5)))
    assert initializers.serialize(initializers.get("orthogonal")) == {
        "class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None}}
    assert isinstance(initializers.get(initializers.HeNormal), initializers.HeNormal)


def test_unknown_initializer() -> None:
    with pytest.raises(ConfigError, match=r"`kernel_initializer`: unknown initializer 'glorot'; expected one of"):
        initializers.get("glorot", "kernel_initializer")
    with pytest.raises(ConfigError, match=r"`bias_initializer` must name an initializer, got None"):
        initializers.get(None, "bias_initializer")


# -- regularizers --------------------------------------------------------------------------------------

W = torch.tensor([[1.0, -2.0], [0.5, -0.25]], dtype=torch.float64)


@pytest.mark.parametrize(("identifier", "expected"), [
    ("l1", 0.01 * 3.75),
    ("l2", 0.01 * (1 + 4 + 0.25 + 0.0625)),
    ("l1_l2", 0.01 * 3.75 + 0.01 * 5.3125),
    ({"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.2}}, 0.1 * 3.75 + 0.2 * 5.3125),
    ({"class_name": "L1L2", "config": {"l2": 0.2}}, 0.2 * 5.3125),
    (regularizers.L1(0.5), 0.5 * 3.75),
    (lambda w: w.sum(), -0.75),
])
def test_regularizer_formulas(identifier, expected) -> None:
    assert regularizers.get(identifier)(W).item() == pytest.approx(expected)


def test_regularizer_serialization() -> None:
    for name in ("l1", "l2", "l1_l2"):
        reg = regularizers.get(name)
        again = regularizers.get(regularizers.serialize(reg))
        assert again(W).item() == pytest.approx(reg(W).item())
    assert regularizers.get(None) is None
    with pytest.raises(ConfigError, match="unknown regularizer 'l3'"):
        regularizers.get("l3", "kernel_regularizer")


# -- constraints ----------------------------------------------------------------------------------------

K = torch.tensor([[3.0, 0.1, -1.0], [4.0, -0.1, 0.0]], dtype=torch.float64)  # column norms 5, 0.1414, 1
NORMS = K.norm(dim=0, keepdim=True)
EPS = 1e-7


def test_max_norm() -> None:
    got = constraints.get({"class_name": "MaxNorm", "config": {"max_value": 2.0}})(K)
    torch.testing.assert_close(got, K * NORMS.clamp(max=2.0) / (EPS + NORMS))
    assert got.norm(dim=0).max() <= 2.0
    row_wise = constraints.MaxNorm(1.0, axis=1)(K)
    assert row_wise.norm(dim=1).max() <= 1.0 + 1e-9


def test_non_neg_and_unit_norm() -> None:
    torch.testing.assert_close(constraints.get("non_neg")(K), K.clamp(min=0))
    unit = constraints.get("unit_norm")(K)
    torch.testing.assert_close(unit.norm(dim=0), torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_min_max_norm(rate) -> None:
    got = constraints.MinMaxNorm(0.5, 2.0, rate=rate)(K)
    desired = rate * NORMS.clamp(0.5, 2.0) + (1 - rate) * NORMS
    torch.testing.assert_close(got, K * desired / (EPS + NORMS))


def test_constraint_names_and_serialization() -> None:
    assert constraints.names() == ["max_norm", "min_max_norm", "non_neg", "unit_norm"]
    con = constraints.get("max_norm")
    assert constraints.serialize(con) == {"class_name": "MaxNorm", "config": {"max_value": 2.0, "axis": 0}}
    torch.testing.assert_close(constraints.get(constraints.serialize(con))(K), con(K))
    with pytest.raises(ConfigError, match="unknown constraint"):
        constraints.get("max", "kernel_constraint")
    with pytest.raises(ConfigError, match="needs a 'class_name' key"):
        constraints.get({"config": {}}, "kernel_constraint")
