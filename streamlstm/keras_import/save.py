"""Writing a ``.keras`` file that Keras 3 loads: the reverse of :func:`streamlstm.load_keras`.

The file is a Sequential model: ``config.json`` in Keras 3's serialized form, ``metadata.json`` and
``model.weights.h5`` with each layer's variables at the paths Keras 3 reads (see
:mod:`streamlstm.keras_import.files`).
"""

from __future__ import annotations

import datetime
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch

from streamlstm.errors import ConfigError
from streamlstm.io.paths import require_directory
from streamlstm.keras_import.files import require_h5py
from streamlstm.keras_import.modules import (
    KerasActivation,
    KerasBidirectional,
    KerasDense,
    KerasDropout,
    KerasMasking,
    KerasModel,
    KerasTimeDistributed,
)
from streamlstm.layers import activations
from streamlstm.layers.base import snake_case
from streamlstm.layers.lstm import LSTM
from streamlstm.layers.rnn import RNN
from streamlstm.layers.stacked_rnn_cells import StackedRNNCells

__all__ = ["save_keras"]

_KERAS_VERSION = "3.5.0"  # the oldest Keras 3 whose config format this writes
_DROPPED = ("implementation", "time_major")  # Keras 2 only
_FAMILIES = {"initializer": "keras.initializers", "regularizer": "keras.regularizers",
             "constraint": "keras.constraints"}


def save_keras(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model`` as a Keras 3 ``.keras`` file (a Sequential model).

    Args:
        model: a model from :func:`streamlstm.load_keras` (single output), or one streamlstm
            :class:`~streamlstm.LSTM` / :class:`~streamlstm.RNN` over LSTM cells (built).
        path (str | Path): the file to write.

    Raises:
        ConfigError: something Keras 3 cannot express (Keras 2's ``hard_sigmoid``, ``time_major``,
            several outputs) or an unbuilt layer.
    """
    layers = list(model.layers) if isinstance(model, KerasModel) else [model]
    if isinstance(model, KerasModel) and model.output_indices != [0]:
        raise ConfigError("save_keras writes single-output models; this one returns several outputs")
    entries, weights, used = [], {}, {}
    for layer in layers:
        class_name, config = _layer_config(layer)
        base = _unique(snake_case(class_name), used)
        entries.append({"module": "keras.layers", "class_name": class_name, "config": dict(config, name=base),
                        "registered_name": None})
        _layer_weights(layer, f"layers/{base}", weights)
    features = _input_features(layers[0] if not isinstance(layers[0], KerasMasking) else layers[1])
    # Keras needs a static batch size for stateful layers: the one the layer was built or first called with.
    batch = next((layer.batch_size for layer in layers if isinstance(layer, RNN) and layer.stateful), None)
    dtype = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    input_layer = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                   "config": {"batch_shape": [batch, None, features], "dtype": "float32", "sparse": False,
                              "name": "input_layer"}}
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": getattr(model, "name", "sequential"), "trainable": True, "dtype": dtype,
                         "layers": [input_layer, *entries]},
              "build_config": {"input_shape": [batch, None, features]}}
    metadata = {"keras_version": _KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    with zipfile.ZipFile(require_directory(path), "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", _weights_file(weights))


def _unique(base: str, used: dict[str, int]) -> str:
    used[base] = used.get(base, -1) + 1
    return base + (f"_{used[base]}" if used[base] else "")


def _activation(fn: Any) -> str:
    """A Keras 3 activation name from a streamlstm activation function or name."""
    name = fn if isinstance(fn, str) else activations.serialize(fn)
    if name == "hard_sigmoid":
        raise ConfigError("Keras 2's hard_sigmoid (clip(0.2x+0.5, 0, 1)) has no Keras 3 name; save_keras cannot "
                          "write it (Keras 3's hard_sigmoid is streamlstm's keras3_hard_sigmoid)")
    return "hard_sigmoid" if name == "keras3_hard_sigmoid" else name


def _keras_object(value: Any, family: str) -> Any:
    if isinstance(value, dict):
        return {"module": _FAMILIES[family], "class_name": value["class_name"], "config": value.get("config") or {},
                "registered_name": None}
    return value


def _cell_config(cell: Any) -> dict[str, Any]:
    config = {k: v for k, v in cell.get_config().items() if k not in _DROPPED}
    config["activation"] = _activation(cell.activation)
    config["recurrent_activation"] = _activation(cell.recurrent_activation)
    for key, value in config.items():
        family = key.rsplit("_", 1)[-1]
        if family in _FAMILIES:
            config[key] = _keras_object(value, family)
    return config


def _recurrent_config(layer: RNN) -> tuple[str, dict[str, Any]]:
    if layer.time_major:
        raise ConfigError("Keras 3 has no time_major; save_keras cannot write a time_major layer")
    flags = {k: v for k, v in RNN.get_config(layer).items() if k not in ("cell", "activity_regularizer", *_DROPPED)}
    if isinstance(layer, LSTM):
        config = _cell_config(layer.cell)
        config["activity_regularizer"] = _keras_object(layer.get_config()["activity_regularizer"], "regularizer")
        return "LSTM", {**config, **flags}
    cells = layer.cell.cells if isinstance(layer.cell, StackedRNNCells) else [layer.cell]
    cell_entries = [{"module": "keras.layers", "class_name": "LSTMCell", "config": _cell_config(c),
                     "registered_name": None} for c in cells]
    cell = cell_entries[0] if not isinstance(layer.cell, StackedRNNCells) else {
        "module": "keras.layers", "class_name": "StackedRNNCells", "config": {"cells": cell_entries},
        "registered_name": None}
    return "RNN", {**flags, "cell": cell}


def _layer_config(layer: torch.nn.Module) -> tuple[str, dict[str, Any]]:
    if isinstance(layer, RNN):
        return _recurrent_config(layer)
    if isinstance(layer, KerasBidirectional):
        if layer.merge_mode is None:
            raise ConfigError("save_keras writes single-output models; Bidirectional(merge_mode=None) has two")
        _, inner = _recurrent_config(layer.forward_layer)
        _, backward = _recurrent_config(layer.backward_layer)
        wrap = {"module": "keras.layers", "registered_name": None}
        return "Bidirectional", {"merge_mode": layer.merge_mode,
                                 "layer": {**wrap, "class_name": "LSTM", "config": dict(inner, name="forward_lstm")},
                                 "backward_layer": {**wrap, "class_name": "LSTM",
                                                    "config": dict(backward, name="backward_lstm")}}
    if isinstance(layer, KerasDense):
        return "Dense", {"units": layer.units, "activation": _activation(layer.activation_name),
                         "use_bias": layer.use_bias}
    if isinstance(layer, KerasTimeDistributed):
        _, inner = _layer_config(layer.layer)
        return "TimeDistributed", {"layer": {"module": "keras.layers", "class_name": "Dense",
                                             "config": dict(inner, name="dense"), "registered_name": None}}
    if isinstance(layer, KerasMasking):
        return "Masking", {"mask_value": layer.mask_value}
    if isinstance(layer, KerasDropout):
        return "Dropout", {"rate": layer.rate}
    if isinstance(layer, KerasActivation):
        return "Activation", {"activation": _activation(layer.activation_name)}
    raise ConfigError(f"save_keras cannot write a {type(layer).__name__}; it writes the layers load_keras imports")


def _layer_weights(layer: torch.nn.Module, path: str, out: dict[str, list]) -> None:
    out[path] = []
    if isinstance(layer, RNN):
        if not layer.built:
            raise ConfigError(f"save_keras needs built layers: call build(input_shape) on the {type(layer).__name__}")
        if isinstance(layer.cell, StackedRNNCells):
            out[f"{path}/cell"] = []
            used: dict[str, int] = {}
            for cell in layer.cell.cells:
                out[f"{path}/cell/cells/{_unique('lstm_cell', used)}"] = [p for _, p in cell.weight_list()]
        else:
            out[f"{path}/cell"] = [p for _, p in layer.cell.weight_list()]
    elif isinstance(layer, KerasBidirectional):
        _layer_weights(layer.forward_layer, f"{path}/forward_layer", out)
        _layer_weights(layer.backward_layer, f"{path}/backward_layer", out)
    elif isinstance(layer, KerasDense):
        out[path] = [p for p in (layer.kernel, layer.bias) if p is not None]
    elif isinstance(layer, KerasTimeDistributed):
        _layer_weights(layer.layer, f"{path}/layer", out)


def _input_features(layer: torch.nn.Module) -> int:
    if isinstance(layer, KerasBidirectional):
        layer = layer.forward_layer
    if isinstance(layer, KerasTimeDistributed):
        layer = layer.layer
    if isinstance(layer, RNN):
        first = layer.cell.cells[0] if isinstance(layer.cell, StackedRNNCells) else layer.cell
        return int(first.kernel.shape[0])
    if isinstance(layer, KerasDense):
        return int(layer.kernel.shape[0])
    raise ConfigError(f"save_keras cannot tell the input size from a leading {type(layer).__name__}")


def _weights_file(weights: dict[str, list]) -> bytes:
    h5py = require_h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as store:
        store.create_group("vars")
        for path, params in weights.items():
            group = store.require_group(f"{path}/vars")
            for index, param in enumerate(params):
                group.create_dataset(str(index), data=param.detach().cpu().float().numpy())
    return buffer.getvalue()
