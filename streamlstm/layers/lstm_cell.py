"""The Keras LSTM cell: one time step.

Math (``a`` = activation, ``ra`` = recurrent_activation, inputs ``x`` [batch, input_dim])::

    z = x @ kernel + h @ recurrent_kernel + bias          # [batch, 4 * units]
    i, f, c~, o = split(z, 4)                             # Keras (and torch) gate order
    c' = ra(f) * c + ra(i) * a(c~)
    h' = ra(o) * a(c')
    return h', [h', c']                                   # the output IS the new h

Weights, as Keras lays them out: ``kernel`` (input_dim, 4u), ``recurrent_kernel`` (u, 4u), ``bias`` (4u,).
``torch.nn.LSTM`` holds the same numbers transposed: ``weight_ih = kernel.T``, ``weight_hh =
recurrent_kernel.T``, ``bias_ih = bias``, ``bias_hh = 0``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from streamlstm.errors import ConfigError, ShapeError
from streamlstm.layers import activations, constraints, initializers, regularizers
from streamlstm.layers.base import Layer, check_positive_int, check_rate
from streamlstm.layers.dropout import DropoutMasks, SeededGenerators
from streamlstm.layers.kernels import (
    GateMajorWeights,
    gate_major_cell,
    gate_major_weights,
    gates,
    native_cell,
)
from streamlstm.layers.serialization import register

__all__ = ["LSTMCell"]

_WEIGHTS = ("kernel", "recurrent_kernel", "bias")
# From this many rows a lone step of a standard cell takes the gate-major cell (one batched GEMM over
# [x | h], then gate math on contiguous blocks), below it torch's native cell (one dispatch, about 10
# operations inside ATen, whose per-gate activations run on strided slices; its fixed cost is lower).
# benchmarks/bench_kernels.py, loaded 2-core VM, F=8, 1 and 2 threads: against the native cell 0.9-1.07x
# at 64 rows, 1.0-1.2x at 100, 1.1-1.4x at 128-1,000, 1.5-1.8x at 4,000-10,000 (u=32 gains less
# than u=64 below ~128 rows, hence 96).
CELL_ROWS = 96
# The chained rounds of a live batch (632, 264, 80, 19, 4, 1 rows, each from the previous one's states,
# the runtime's step mode) measure the same way: 9-13% less with this threshold than with the native
# cell for every round (bench_kernels.py, second table).


def _version(tensor: torch.Tensor) -> int | None:
    """How many in-place changes ``tensor`` has seen (None for inference tensors, which do not count:
    reading their counter raises, which costs nothing on the common path, unlike asking first)."""
    try:
        return tensor._version  # noqa: SLF001 (torch's in-place counter)
    except RuntimeError:
        return None


@register
class LSTMCell(Layer):
    """Cell class for the LSTM layer, with the arguments and numbers of ``tf.keras.layers.LSTMCell``.

    Args:
        units (int): dimensionality of the output space and of each state.
        activation (str | callable, "tanh"): ``a`` above; ``None`` means linear.
        recurrent_activation (str | callable, "sigmoid"): ``ra`` above; ``"hard_sigmoid"`` is Keras 2's.
        use_bias (bool, True): whether ``bias`` exists.
        kernel_initializer, recurrent_initializer, bias_initializer (str | dict | callable):
            defaults "glorot_uniform", "orthogonal", "zeros".
        unit_forget_bias (bool, True): start the forget slice of the bias at 1 (other slices use
            ``bias_initializer``).
        kernel_regularizer, recurrent_regularizer, bias_regularizer (str | dict | callable, None):
            penalties read through ``losses``.
        kernel_constraint, recurrent_constraint, bias_constraint (str | dict | callable, None):
            applied by ``apply_constraints()``, never in the forward pass.
        dropout (float, 0.0): fraction of input units dropped (training only).
        recurrent_dropout (float, 0.0): fraction of recurrent units dropped (training only); when
            non-zero, implementation 1 is used, as in Keras.
        implementation (int, 2): 1 draws four input and four recurrent dropout masks (one per gate);
            2 draws one input mask. The numbers are otherwise the same. 0, deprecated in tf.keras 2, is
            taken as 1 with a ``FutureWarning`` (tf.keras 2 does the same), so old configs still load.
        seed (int, None): seeds the dropout masks (and the initializers when they have no seed).
        dtype, device, name, trainable: as :class:`~streamlstm.layers.base.Layer`.

    Call arguments:
        inputs: [batch, input_dim] tensor (or numpy array).
        states: ``[h, c]``, each [batch, units].
        training (bool, None): dropout is active when true; ``None`` follows ``module.training``
            (the PyTorch convention, where Keras would infer it from ``fit``/``predict``).

    Returns:
        ``(h', [h', c'])`` where the output is the very same tensor object as the new ``h``.

    Example:
        >>> cell = LSTMCell(4)
        >>> x, state = torch.ones(2, 3), cell.get_initial_state(batch_size=2)
        >>> out, state = cell(x, state)
        >>> out is state[0], tuple(out.shape)
        (True, (2, 4))
    """

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 unit_forget_bias: bool = True, kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, kernel_constraint: Any = None, recurrent_constraint: Any = None,
                 bias_constraint: Any = None, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 implementation: int = 2, seed: int | None = None, dtype: Any = None, device: Any = None,
                 name: str | None = None, trainable: bool = True) -> None:
        super().__init__(dtype=dtype, device=device, name=name, trainable=trainable)
        self.units = check_positive_int(units, "units")
        self.activation = activations.get(activation, "activation")
        self.recurrent_activation = activations.get(recurrent_activation, "recurrent_activation")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer, "recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "kernel_regularizer")
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer, "recurrent_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, "bias_regularizer")
        self.kernel_constraint = constraints.get(kernel_constraint, "kernel_constraint")
        self.recurrent_constraint = constraints.get(recurrent_constraint, "recurrent_constraint")
        self.bias_constraint = constraints.get(bias_constraint, "bias_constraint")
        self.dropout = check_rate(dropout, "dropout")
        self.recurrent_dropout = check_rate(recurrent_dropout, "recurrent_dropout")
        if implementation not in (0, 1, 2) or isinstance(implementation, bool):
            raise ConfigError(f"`implementation` must be 1 or 2, got {implementation!r}")
        if implementation == 0:
            warnings.warn("`implementation=0` is deprecated since Keras 2 and runs as implementation=1, as tf.keras 2 "
                          "does; pass implementation=1", FutureWarning, stacklevel=2)
            implementation = 1
        # Keras: recurrent dropout needs one mask per gate, which only implementation 1 has.
        self.implementation = 1 if self.recurrent_dropout else int(implementation)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"`seed` must be an integer or None, got {seed!r}")
        self.seed = seed
        self._generators = SeededGenerators(seed)
        self._input_masks = DropoutMasks(self.dropout, 4 if self.implementation == 1 else 1)
        self._recurrent_masks = DropoutMasks(self.recurrent_dropout, 4)
        self.input_dim: int | None = None

    # -- cell protocol ----------------------------------------------------------------------------
    @property
    def state_size(self) -> list[int]:
        return [self.units, self.units]

    @property
    def output_size(self) -> int:
        return self.units

    def get_initial_state(self, batch_size: int, dtype: torch.dtype | None = None,
                          device: Any = None) -> list[torch.Tensor]:
        """Zero ``[h, c]`` of shape [batch_size, units]."""
        dtype = dtype or self._factory["dtype"]
        device = device or self._factory["device"]
        return [torch.zeros(batch_size, self.units, dtype=dtype, device=device) for _ in range(2)]

    # -- building -----------------------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        """Create the weights for inputs whose last dimension is ``input_shape[-1]`` (or an int)."""
        input_dim = input_shape if isinstance(input_shape, int) else input_shape[-1]
        input_dim = check_positive_int(input_dim, "input_shape[-1]")
        if self.built:
            self.check_input_dim(input_dim)
            return
        u, factory = self.units, self._factory
        gen = self._generators.get(torch.device("cpu"))
        self.kernel = self._new_weight(self.kernel_initializer((input_dim, 4 * u), factory["dtype"], gen))
        self.recurrent_kernel = self._new_weight(self.recurrent_initializer((u, 4 * u), factory["dtype"], gen))
        if self.use_bias:
            bias = self.bias_initializer((4 * u,), factory["dtype"], gen)
            if self.unit_forget_bias:
                bias = torch.cat([bias[:u], torch.ones(u, dtype=bias.dtype), bias[2 * u:]])
            self.bias = self._new_weight(bias)
        else:
            self.bias = None
        self.input_dim = input_dim
        self.built = True

    def _new_weight(self, value: torch.Tensor) -> torch.nn.Parameter:
        return torch.nn.Parameter(value.to(device=self._factory["device"]), requires_grad=self.trainable)

    def build_from_state_dict(self, state_dict, prefix) -> None:
        kernel = state_dict.get(prefix + "kernel")
        if kernel is not None:
            self.build(int(kernel.shape[0]))

    def check_input_dim(self, input_dim: int) -> None:
        if input_dim != self.input_dim:
            raise ShapeError(
                f"`inputs` last dimension must be {self.input_dim} (the input_dim this layer was built with), "
                f"got {input_dim}"
            )

    def weight_list(self) -> list[tuple[str, torch.nn.Parameter]]:
        if not self.built:
            return []
        return [(name, getattr(self, name)) for name in _WEIGHTS if getattr(self, name) is not None]

    def weight_penalties(self) -> list[torch.Tensor]:
        pairs = zip(self.weight_list(), (self.kernel_regularizer, self.recurrent_regularizer, self.bias_regularizer))
        return [reg(param) for (_, param), reg in pairs if reg is not None]

    def constrained_weights(self) -> list[tuple[torch.nn.Parameter, Any]]:
        pairs = zip(self.weight_list(), (self.kernel_constraint, self.recurrent_constraint, self.bias_constraint))
        return [(param, con) for (_, param), con in pairs if con is not None]

    # -- the math -----------------------------------------------------------------------------------
    def reset_dropout_mask(self) -> None:
        """Forget the cached dropout masks; the next training step draws new ones."""
        self._input_masks.reset()
        self._recurrent_masks.reset()

    def project_inputs(self, inputs: torch.Tensor, training: bool) -> torch.Tensor:
        """``x @ kernel + bias`` for inputs [..., input_dim] (any leading dims, e.g. [batch, time]),
        with this call's input dropout masks applied (the same mask at every time step)."""
        if not (training and self.dropout):
            if self.bias is None:
                return inputs @ self.kernel
            return torch.addmm(self.bias, inputs.reshape(-1, inputs.shape[-1]), self.kernel).view(
                *inputs.shape[:-1], 4 * self.units)
        like = inputs if inputs.dim() == 2 else inputs[:, 0]
        masks = [m.view(m.shape[0], *([1] * (inputs.dim() - 2)), m.shape[1])
                 for m in self._input_masks.get(like, self._generators)]
        if len(masks) == 1:
            z = (inputs * masks[0]) @ self.kernel
        else:
            z = torch.cat([(inputs * m) @ k for m, k in zip(masks, self.kernel.chunk(4, dim=1))], dim=-1)
        return z if self.bias is None else z + self.bias

    def recurrent_step(self, z_inputs: torch.Tensor, states: list[torch.Tensor],
                       training: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step from the projected inputs ``z_inputs`` [batch, 4u] and ``[h, c]``."""
        h, c = states
        if training and self.recurrent_dropout:
            masks = self._recurrent_masks.get(h, self._generators)
            z_rec = torch.cat([(h * m) @ r for m, r in zip(masks, self.recurrent_kernel.chunk(4, dim=1))], dim=-1)
        else:
            z_rec = h @ self.recurrent_kernel
        h_new, c_new = gates(z_inputs + z_rec, c, self.activation, self.recurrent_activation)
        return h_new, [h_new, c_new]

    @property
    def is_standard(self) -> bool:
        """activation tanh and recurrent_activation sigmoid: PyTorch's native kernels (and cuDNN) compute
        this cell, so the fused paths may take it."""
        activation, recurrent_activation = self.activation, self.recurrent_activation
        cached = self.__dict__.get("_standard")   # (activation, recurrent_activation, answer)
        if cached is None or cached[0] is not activation or cached[1] is not recurrent_activation:
            answer = activations.is_tanh(activation) and activations.is_sigmoid(recurrent_activation)
            cached = self.__dict__["_standard"] = (activation, recurrent_activation, answer)
        return cached[2]

    def input_dropout_masks(self, like: torch.Tensor) -> list[torch.Tensor]:
        """This call's input dropout masks for inputs like ``like`` [batch, input_dim] (drawn once per
        call, after :meth:`reset_dropout_mask`)."""
        return self._input_masks.get(like, self._generators)

    def _derived(self, name: str, make: Any) -> Any:
        """``make(kernel, recurrent_kernel, bias)`` (detached), cached until a weight changes: it is
        replaced (another tensor, e.g. a new Parameter: the cache holds the old one, so ``is`` tells),
        given other memory (``.data`` set, ``.to``) or updated in place (``load_state_dict``,
        optimizers, ``copy_``: each bumps the tensor's ``_version``)."""
        params = self._parameters
        kernel, recurrent, bias = params["kernel"], params["recurrent_kernel"], params.get("bias")
        stamp = (_version(kernel), _version(recurrent), kernel.data_ptr(), recurrent.data_ptr(),
                 None if bias is None else (_version(bias), bias.data_ptr()))
        cached = self.__dict__.get(name)   # (kernel, recurrent, bias, stamp, value)
        if cached is None or cached[0] is not kernel or cached[1] is not recurrent or cached[2] is not bias \
                or cached[3] != stamp:
            value = make(kernel.detach(), recurrent.detach(), None if bias is None else bias.detach())
            cached = self.__dict__[name] = (kernel, recurrent, bias, stamp, value)
        return cached[4]

    def torch_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kernel.T, recurrent_kernel.T)`` made contiguous (torch's layout, which the native cell reads
        fastest), detached, cached until the weights change."""
        return self._derived("_torch_layout", lambda k, r, b: (k.T.contiguous(), r.T.contiguous()))

    def gate_major_weights(self) -> GateMajorWeights:
        """The weights in the gate-major layout of :func:`~streamlstm.layers.kernels.gate_major_cell`,
        cached until they change (as :meth:`torch_weights`)."""
        return self._derived("_gate_major", gate_major_weights)

    def step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One inference step (no dropout, no validation): ``(h', c')`` for inputs ``x`` [batch, input_dim].

        The kernel is chosen by shape, the numbers are the same to float rounding: for a standard cell
        torch's native cell below ``CELL_ROWS`` rows, the one-GEMM gate-major cell from there on;
        otherwise :meth:`recurrent_step`."""
        if self.is_standard:
            if x.shape[0] >= CELL_ROWS:
                return gate_major_cell(x, h, c, self.gate_major_weights())
            weight_ih, weight_hh = self.torch_weights()
            return native_cell(x, h, c, weight_ih, weight_hh, self._parameters.get("bias"))
        h_new, (_, c_new) = self.recurrent_step(self.project_inputs(x, False), [h, c], False)
        return h_new, c_new

    def forward(self, inputs: Any, states: Any, training: bool | None = None):
        inputs = torch.as_tensor(inputs)
        if inputs.dim() != 2:
            raise ShapeError(f"`inputs` must be [batch, input_dim] (rank 2), got shape {tuple(inputs.shape)}")
        if not self.built:
            self.build(inputs.shape[-1])
        self.check_input_dim(inputs.shape[-1])
        states = self._check_states(states, inputs.shape[0])
        inputs = inputs.to(self.kernel.dtype)
        training = self.training if training is None else bool(training)
        return self.recurrent_step(self.project_inputs(inputs, training), states, training)

    def _check_states(self, states: Any, batch: int) -> list[torch.Tensor]:
        if isinstance(states, torch.Tensor) or not isinstance(states, (list, tuple)) or len(states) != 2:
            got = f"a list of {len(states)}" if isinstance(states, (list, tuple)) else type(states).__name__
            raise ShapeError(f"`states` must be a list [h, c], got {got}")
        out = []
        for name, state in zip("hc", states):
            state = torch.as_tensor(state).to(self.kernel.dtype)
            if tuple(state.shape) != (batch, self.units):
                raise ShapeError(f"`states` {name} must have shape {(batch, self.units)}, got {tuple(state.shape)}")
            out.append(state)
        return out

    # -- configuration ------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "implementation": self.implementation,
            "seed": self.seed,
            **self.base_config(),
        }

    def extra_repr(self) -> str:
        defaults = LSTMCell(1).get_config()
        config = self.get_config()
        parts = [str(self.units)] + [f"{k}={v!r}" for k, v in config.items()
                                     if k not in ("units", *self.base_config()) and v != defaults[k]]
        parts += self.base_repr()
        if self.input_dim is not None:
            parts.append(f"input_dim={self.input_dim}")
        return ", ".join(parts)
