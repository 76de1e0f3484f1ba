"""Keras layer configs and weights -> torch modules, with the file's Keras version deciding semantics.

Version rules (the Keras version that wrote the file, not its format, decides):

- ``hard_sigmoid``: Keras 2 ``clip(0.2 x + 0.5, 0, 1)`` (streamlstm's ``"hard_sigmoid"``); Keras 3
  ``relu6(x + 3) / 6`` (``"keras3_hard_sigmoid"``), wherever an activation is named.
- Keras 3 configs have no ``implementation`` or ``time_major`` and add ``seed``, ``zero_output_for_mask``
  and dtype policies written as dicts; Keras 2 configs write dtypes as strings and leave
  ``zero_output_for_mask`` out. Both force ``zero_output_for_mask = return_sequences`` on the two halves
  of a Bidirectional, whatever the config says.
- Keras 3 ``.keras`` files store weights by variable path (snake_case class names numbered by order of
  appearance); legacy ``.h5`` files by layer name. Both give arrays in ``get_weights()`` order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from streamlstm.errors import KerasFileError, StreamLSTMError, UnsupportedKerasError
from streamlstm.keras_import.graph import LayerSpec
from streamlstm.keras_import.modules import (
    KerasActivation,
    KerasBidirectional,
    KerasDense,
    KerasDropout,
    KerasMasking,
    KerasTimeDistributed,
)
from streamlstm.layers import initializers
from streamlstm.layers.base import snake_case
from streamlstm.layers.lstm import LSTM
from streamlstm.layers.lstm_cell import LSTMCell
from streamlstm.layers.rnn import RNN

__all__ = ["SUPPORTED", "convert_layer", "keras3_weight_paths", "snake_case"]

SUPPORTED = ("InputLayer", "Masking", "LSTM", "RNN(LSTMCell or StackedRNNCells of LSTMCell)", "Bidirectional(LSTM)",
             "Dense", "TimeDistributed(Dense)", "Dropout", "Activation")

# Keys every Keras layer config may carry that do not change inference.
_COMMON = {"name", "trainable", "dtype", "batch_input_shape", "batch_shape", "input_shape", "input_dim",
           "input_length", "build_config", "module", "registered_name"}
_IGNORED_LSTM = {"use_cudnn"}  # a device choice; the numbers are the same
_RNN_KEYS = {"return_sequences", "return_state", "go_backwards", "stateful", "unroll", "time_major",
             "zero_output_for_mask"}
_CELL_KEYS = {"units", "activation", "recurrent_activation", "use_bias", "kernel_initializer",
              "recurrent_initializer", "bias_initializer", "unit_forget_bias", "kernel_regularizer",
              "recurrent_regularizer", "bias_regularizer", "kernel_constraint", "recurrent_constraint",
              "bias_constraint", "dropout", "recurrent_dropout", "implementation", "seed"}
_DENSE_KEYS = {"units", "activation", "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",
               "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint",
               "quantization_config", "lora_rank", "lora_alpha"}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def unsupported(spec: LayerSpec, option: str, detail: str) -> UnsupportedKerasError:
    return UnsupportedKerasError(
        f"layer {spec.name!r} ({spec.class_name}): {option} {detail}; supported layers: {', '.join(SUPPORTED)}"
    )


def activation_name(value: Any, major: int, spec: LayerSpec, option: str) -> str:
    """A Keras activation as a streamlstm name, with the file's hard_sigmoid."""
    if isinstance(value, dict):  # Keras 3 may serialize a function as {"class_name": "function", "config": name}
        value = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
    if value is None:
        return "linear"
    if not isinstance(value, str):
        raise unsupported(spec, f"`{option}`", f"= {value!r} is not a named activation")
    if value == "hard_sigmoid" and major >= 3:
        return "keras3_hard_sigmoid"
    return value


def layer_dtype(spec: LayerSpec) -> torch.dtype:
    """The layer's dtype policy (a string in Keras 2, a DTypePolicy dict in Keras 3) as a torch dtype."""
    policy = spec.config.get("dtype") or "float32"
    if isinstance(policy, dict):
        policy = (policy.get("config") or {}).get("name", "float32")
    if policy not in _DTYPES:
        raise unsupported(spec, "`dtype`", f"policy {policy!r} is not supported (float32 and float64 are)")
    return _DTYPES[policy]


def _check_keys(spec: LayerSpec, config: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(config) - allowed - _COMMON - _IGNORED_LSTM)
    if unknown:
        raise unsupported(spec, "option(s)", f"{', '.join(map(repr, unknown))} are not supported")


def _cell_kwargs(spec: LayerSpec, config: dict[str, Any], major: int) -> dict[str, Any]:
    kwargs = {k: v for k, v in config.items() if k in _CELL_KEYS}
    for key in ("activation", "recurrent_activation"):
        if key in kwargs:
            kwargs[key] = activation_name(kwargs[key], major, spec, key)
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        # Initializers do not matter for a loaded model: keep the file's when streamlstm knows it (for the
        # record), else the default. Keras 3 adds keys such as input_axes=None; None values are dropped.
        value = kwargs.get(key)
        if isinstance(value, dict):
            value = {"class_name": value.get("class_name"),
                     "config": {k: v for k, v in (value.get("config") or {}).items() if v is not None}}
            kwargs[key] = value
        try:
            initializers.get(value, key)
        except (StreamLSTMError, TypeError):
            kwargs.pop(key, None)
    return kwargs


def _lstm(spec: LayerSpec, config: dict[str, Any], major: int, dtype: torch.dtype) -> LSTM:
    _check_keys(spec, config, _CELL_KEYS | _RNN_KEYS | {"activity_regularizer"})
    kwargs = _cell_kwargs(spec, config, major)
    kwargs.update({k: v for k, v in config.items() if k in _RNN_KEYS})
    return _build(spec, lambda: LSTM(dtype=dtype, activity_regularizer=config.get("activity_regularizer"), **kwargs))


def _cell(spec: LayerSpec, cell: dict[str, Any], major: int, dtype: torch.dtype) -> Any:
    name, config = cell.get("class_name"), cell.get("config") or {}
    if name == "StackedRNNCells":
        return [_cell(spec, c, major, dtype) for c in config.get("cells", [])]
    if name != "LSTMCell":
        raise unsupported(spec, "`cell`", f"{name!r} is not supported (LSTMCell and StackedRNNCells of LSTMCell are)")
    _check_keys(spec, config, _CELL_KEYS)
    return _build(spec, lambda: LSTMCell(dtype=dtype, **_cell_kwargs(spec, config, major)))


def _rnn(spec: LayerSpec, config: dict[str, Any], major: int, dtype: torch.dtype) -> RNN:
    _check_keys(spec, config, _RNN_KEYS | {"cell"})
    cell = _cell(spec, config["cell"], major, dtype)
    flags = {k: v for k, v in config.items() if k in _RNN_KEYS}
    return _build(spec, lambda: RNN(cell, dtype=dtype, **flags))


def _build(spec: LayerSpec, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except (StreamLSTMError, TypeError) as exc:  # an option value our layers refuse (e.g. an unknown activation)
        raise UnsupportedKerasError(f"layer {spec.name!r} ({spec.class_name}): {exc}") from exc


def _recurrent(spec: LayerSpec, inner: dict[str, Any], major: int, dtype: torch.dtype) -> RNN:
    inner_spec = LayerSpec(inner.get("class_name", "?"), inner.get("config") or {}, spec.name)
    if inner_spec.class_name == "LSTM":
        return _lstm(inner_spec, inner_spec.config, major, dtype)
    if inner_spec.class_name == "RNN":
        return _rnn(inner_spec, inner_spec.config, major, dtype)
    raise unsupported(spec, "`layer`", f"{inner_spec.class_name!r} is not supported in Bidirectional (LSTM is)")


def _bidirectional(spec: LayerSpec, major: int, dtype: torch.dtype) -> KerasBidirectional:
    config = spec.config
    _check_keys(spec, config, {"layer", "backward_layer", "merge_mode"})
    layer_config = dict(config["layer"], config=dict(config["layer"].get("config") or {}))
    if "backward_layer" in config and config["backward_layer"]:
        backward_config = dict(config["backward_layer"], config=dict(config["backward_layer"].get("config") or {}))
    else:  # Keras 2 writes only the forward layer: the backward one is its copy reading the other way
        backward_config = dict(layer_config, config=dict(layer_config["config"]))
        backward_config["config"]["go_backwards"] = not layer_config["config"].get("go_backwards", False)
    for part in (layer_config, backward_config):
        inner = part["config"]
        if inner.get("return_state") or inner.get("time_major"):
            option = "return_state" if inner.get("return_state") else "time_major"
            raise unsupported(spec, f"`{option}=True`", "is not supported inside Bidirectional")
        inner["zero_output_for_mask"] = bool(inner.get("return_sequences", False))  # as Keras forces it
    forward = _recurrent(spec, layer_config, major, dtype)
    backward = _recurrent(spec, backward_config, major, dtype)
    return KerasBidirectional(forward, backward, config.get("merge_mode", "concat"))


def _dense(spec: LayerSpec, config: dict[str, Any], major: int, dtype: torch.dtype,
           weights: list[np.ndarray]) -> KerasDense:
    _check_keys(spec, config, _DENSE_KEYS)
    if config.get("quantization_config") or config.get("lora_rank"):
        raise unsupported(spec, "`quantization_config`/`lora_rank`", "is not supported (plain Dense is)")
    if not weights:
        raise KerasFileError(f"layer {spec.name!r} (Dense): no weights in the file")
    dense = _build(spec, lambda: KerasDense(
        int(weights[0].shape[0]), int(config["units"]), activation_name(config.get("activation"), major, spec,
                                                                        "activation"),
        bool(config.get("use_bias", True)), dtype=dtype))
    _assign(spec, [("kernel", dense.kernel), ("bias", dense.bias)], weights)
    return dense


def _assign(spec: LayerSpec, params: list[tuple[str, torch.nn.Parameter | None]],
            weights: list[np.ndarray]) -> None:
    params = [(n, p) for n, p in params if p is not None]
    if len(params) != len(weights) or any(tuple(p.shape) != w.shape for (_, p), w in zip(params, weights)):
        expected = ", ".join(f"{n} {tuple(p.shape)}" for n, p in params)
        raise KerasFileError(
            f"layer {spec.name!r} ({spec.class_name}): the file's weights {[w.shape for w in weights]} do not "
            f"match the config ({expected})"
        )
    with torch.no_grad():
        for (_, param), value in zip(params, weights):
            param.copy_(torch.from_numpy(np.asarray(value)))


def _set_recurrent(spec: LayerSpec, layer: RNN, weights: list[np.ndarray], batch: int | None = None) -> None:
    if not weights:
        raise KerasFileError(f"layer {spec.name!r} ({spec.class_name}): no weights in the file")
    layer.build((batch, None, int(weights[0].shape[0])))  # a stateful layer keeps the model's fixed batch size
    _assign(spec, layer.weight_list(), weights)


def convert_layer(spec: LayerSpec, weights: list[np.ndarray], major: int,
                  batch: int | None = None) -> torch.nn.Module | None:
    """One Keras layer as a torch module with its weights (``get_weights()`` order); None for InputLayer.

    ``batch`` is the model's fixed batch size (from its InputLayer), which stateful layers keep.
    """
    name, config = spec.class_name, spec.config
    if name == "InputLayer":
        return None
    dtype = layer_dtype(spec)
    if name in ("LSTM", "RNN"):
        layer = _lstm(spec, config, major, dtype) if name == "LSTM" else _rnn(spec, config, major, dtype)
        _set_recurrent(spec, layer, weights, batch)
        return layer
    if name == "Bidirectional":
        layer = _bidirectional(spec, major, dtype)
        half = len(weights) // 2
        _set_recurrent(spec, layer.forward_layer, weights[:half])
        _set_recurrent(spec, layer.backward_layer, weights[half:])
        return layer
    if name == "Dense":
        return _dense(spec, config, major, dtype, weights)
    if name == "TimeDistributed":
        _check_keys(spec, config, {"layer"})
        inner = config.get("layer") or {}
        if inner.get("class_name") != "Dense":
            raise unsupported(spec, "`layer`", f"{inner.get('class_name')!r} is not supported (Dense is)")
        return KerasTimeDistributed(_dense(spec, inner.get("config") or {}, major, dtype, weights))
    if name == "Masking":
        _check_keys(spec, config, {"mask_value"})
        return KerasMasking(config.get("mask_value", 0.0))
    if name == "Dropout":
        _check_keys(spec, config, {"rate", "noise_shape", "seed"})
        return KerasDropout(config.get("rate", 0.0))
    if name == "Activation":
        _check_keys(spec, config, {"activation"})
        return _build(spec, lambda: KerasActivation(activation_name(config.get("activation"), major, spec,
                                                                    "activation")))
    raise UnsupportedKerasError(
        f"layer {spec.name!r}: class {name!r} is not supported; supported layers: {', '.join(SUPPORTED)}"
    )


def keras3_weight_paths(spec: LayerSpec, prefix: str) -> list[str]:
    """The ``.keras`` variable paths holding this layer's weights, in ``get_weights()`` order."""
    name, config = spec.class_name, spec.config
    if name in ("LSTM", "RNN"):
        cell = config.get("cell") or {}
        if cell.get("class_name") == "StackedRNNCells":
            used: dict[str, int] = {}
            paths = []
            for sub in (cell.get("config") or {}).get("cells", []):
                base = snake_case(sub.get("class_name", ""))
                used[base] = used.get(base, -1) + 1
                paths.append(f"{prefix}/cell/cells/{base}" + (f"_{used[base]}" if used[base] else ""))
            return paths
        return [f"{prefix}/cell"]
    if name == "Bidirectional":
        return [f"{prefix}/forward_layer/cell", f"{prefix}/backward_layer/cell"]
    if name == "TimeDistributed":
        return [f"{prefix}/layer"]
    return [prefix]
