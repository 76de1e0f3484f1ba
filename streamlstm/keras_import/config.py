"""Config round trip of an imported Keras model, for :func:`streamlstm.save_model` (weights travel apart).

:func:`model_config` describes a :class:`~streamlstm.keras_import.modules.KerasModel` as JSON-ready
data; :func:`model_from_config` rebuilds it without weights (recurrent layers unbuilt, Dense kernels
zero), ready for ``load_state_dict``. Members are written as ``{"class_name": ..., "config": ...}``:
streamlstm recurrent layers in their own serialized form (:func:`streamlstm.layers.serialize`), the
other modules under ``"keras.<Layer>"`` names with their constructor arguments. Activations are stored
by their version-resolved streamlstm names (``"keras3_hard_sigmoid"``), so a saved model computes what
the original file meant, whichever Keras version wrote it.
"""

from __future__ import annotations

from typing import Any

import torch

from streamlstm.errors import ConfigError
from streamlstm.keras_import.modules import (
    KerasActivation,
    KerasBidirectional,
    KerasDense,
    KerasDropout,
    KerasMasking,
    KerasModel,
    KerasTimeDistributed,
)
from streamlstm.layers.rnn import RNN
from streamlstm.layers.serialization import deserialize, serialize

__all__ = ["MODEL_CLASS", "model_config", "model_from_config"]

MODEL_CLASS = "keras.Model"   # the class name a model file gives an imported Keras model
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_config(model: KerasModel) -> dict[str, Any]:
    """``{"class_name": "keras.Model", "config": {...}}`` for ``model`` (see the module docstring)."""
    return {"class_name": MODEL_CLASS, "config": {
        "name": model.name, "keras_version": model.keras_version, "output_indices": list(model.output_indices),
        "layers": [_member_config(layer) for layer in model.layers]}}


def model_from_config(data: dict[str, Any]) -> KerasModel:
    """The model :func:`model_config` described, without its weights."""
    config = data["config"]
    return KerasModel([_member(layer) for layer in config["layers"]], name=config.get("name", "model"),
                      keras_version=config.get("keras_version", ""), output_indices=config.get("output_indices"))


def _member_config(layer: torch.nn.Module) -> dict[str, Any]:
    if isinstance(layer, RNN):
        return serialize(layer)
    if isinstance(layer, KerasMasking):
        config: dict[str, Any] = {"mask_value": layer.mask_value}
    elif isinstance(layer, KerasDense):
        config = {"in_features": layer.in_features, "units": layer.units, "activation": layer.activation_name,
                  "use_bias": layer.use_bias, "dtype": str(layer.kernel.dtype).removeprefix("torch.")}
    elif isinstance(layer, KerasTimeDistributed):
        config = {"layer": _member_config(layer.layer)}
    elif isinstance(layer, KerasActivation):
        config = {"activation": layer.activation_name}
    elif isinstance(layer, KerasDropout):
        config = {"rate": layer.rate}
    elif isinstance(layer, KerasBidirectional):
        config = {"forward_layer": serialize(layer.forward_layer), "backward_layer": serialize(layer.backward_layer),
                  "merge_mode": layer.merge_mode}
    else:
        raise ConfigError(f"cannot save a Keras model containing {type(layer).__name__}; supported: streamlstm "
                          f"recurrent layers and the modules load_keras creates")
    return {"class_name": f"keras.{type(layer).__name__.removeprefix('Keras')}", "config": config}


def _member(data: dict[str, Any]) -> torch.nn.Module:
    name, config = data.get("class_name"), dict(data.get("config") or {})
    if name == "keras.Masking":
        return KerasMasking(**config)
    if name == "keras.Dense":
        dtype = config.pop("dtype", "float32")
        if dtype not in _DTYPES:
            raise ConfigError(f"Dense `dtype` must be one of {sorted(_DTYPES)}, got {dtype!r} in the model file")
        return KerasDense(**config, dtype=_DTYPES[dtype])
    if name == "keras.TimeDistributed":
        return KerasTimeDistributed(_member(config["layer"]))
    if name == "keras.Activation":
        return KerasActivation(**config)
    if name == "keras.Dropout":
        return KerasDropout(**config)
    if name == "keras.Bidirectional":
        return KerasBidirectional(deserialize(config["forward_layer"]), deserialize(config["backward_layer"]),
                                  config.get("merge_mode", "concat"))
    return deserialize(data)   # a streamlstm layer; raises naming the class when unknown
