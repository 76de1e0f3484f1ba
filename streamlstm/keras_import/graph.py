"""The layer chain of a Sequential or simple linear functional Keras model config.

A functional model is accepted when it is a chain: one input, every layer fed by the first output of
the layer before it, and the model's outputs all taken from the last layer (several outputs only for
``LSTM(return_state=True)`` or ``Bidirectional(merge_mode=None)``). Keras 3 records the mask that
Masking computes as separate ``NotEqual``/``Any`` operation layers feeding a ``mask=`` keyword; those
are the Masking rule itself, which the imported model applies, so they are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamlstm.errors import UnsupportedKerasError

__all__ = ["Chain", "LayerSpec", "model_chain"]

_MODEL_CLASSES = ("Sequential", "Functional", "Model")
_MASK_OPS = ("NotEqual", "Any")  # Keras 3 functional graphs spell Masking's mask out with these


@dataclass
class LayerSpec:
    """One layer of the chain: its Keras class, config, and name (the legacy .h5 weight key)."""

    class_name: str
    config: dict[str, Any]
    name: str


@dataclass
class Chain:
    name: str
    layers: list[LayerSpec]
    output_indices: list[int]


def model_chain(model_config: dict[str, Any]) -> Chain:
    """The chain of layers (InputLayer included, first) and which outputs of the last one the model returns."""
    class_name = model_config.get("class_name")
    config = model_config.get("config") or {}
    if class_name not in _MODEL_CLASSES:
        raise UnsupportedKerasError(
            f"model class {class_name!r} is not supported; supported: Sequential and linear functional models "
            f"(keras.Model(inputs, outputs) built from one chain of layers)"
        )
    raw_layers = config["layers"] if isinstance(config, dict) else config
    name = config.get("name", "model") if isinstance(config, dict) else "model"
    if class_name == "Sequential":
        return Chain(name, [_spec(layer) for layer in raw_layers], [0])
    return _functional_chain(name, config, raw_layers)


def _spec(layer: dict[str, Any]) -> LayerSpec:
    config = layer.get("config") or {}
    return LayerSpec(layer.get("class_name", "?"), config, layer.get("name") or config.get("name", "?"))


def _history(entry: Any) -> tuple[str, int, int]:
    """(layer name, node index, tensor index) from a Keras 2 list or a Keras 3 __keras_tensor__ dict."""
    if isinstance(entry, dict):
        entry = entry["config"]["keras_history"]
    return entry[0], int(entry[1]), int(entry[2])


def _inbound(layer: dict[str, Any]) -> tuple[str, int, int] | None:
    """Where a layer's single input comes from; None for an InputLayer."""
    nodes = layer.get("inbound_nodes") or []
    name = layer.get("name")
    if not nodes:
        return None
    if len(nodes) != 1:
        raise UnsupportedKerasError(
            f"layer {name!r} ({layer.get('class_name')}) is called {len(nodes)} times (shared layer); "
            f"only linear models, each layer called once, are supported"
        )
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        tensors = [a for a in node.get("args", []) if isinstance(a, dict) and a.get("class_name") == "__keras_tensor__"]
        extra = sorted(set(node.get("kwargs") or {}) - {"training", "mask"})
    else:  # Keras 2: [[name, node, tensor, kwargs], ...]
        tensors = node
        extra = sorted(set(node[0][3] if len(node) == 1 and len(node[0]) > 3 else {}) - {"training", "mask"})
    if len(tensors) != 1 or extra:
        raise UnsupportedKerasError(
            f"layer {name!r} ({layer.get('class_name')}) takes {len(tensors)} inputs"
            f"{' and keyword(s) ' + ', '.join(extra) if extra else ''}; only linear models "
            f"(one input per layer) are supported"
        )
    return _history(tensors[0])


def _functional_chain(name: str, config: dict[str, Any], raw_layers: list[dict[str, Any]]) -> Chain:
    by_name = {layer.get("name") or layer["config"]["name"]: layer for layer in raw_layers}
    outputs = config.get("output_layers") or []
    if outputs and isinstance(outputs[0], str):
        outputs = [outputs]
    inputs = config.get("input_layers") or []
    if inputs and isinstance(inputs[0], str):
        inputs = [inputs]
    if len(inputs) != 1:
        raise UnsupportedKerasError(f"the model has {len(inputs)} inputs; only single-input models are supported")
    last = {_history(o)[0] for o in outputs}
    if len(last) != 1:
        raise UnsupportedKerasError(
            f"the model's outputs come from {len(last)} layers ({', '.join(sorted(last))}); only linear models, "
            f"with every output taken from the last layer, are supported"
        )
    chain, current = [], last.pop()
    while current is not None:
        layer = by_name[current]
        chain.append(_spec(layer))
        source = _inbound(layer)
        if source is not None and source[2] != 0:
            raise UnsupportedKerasError(
                f"layer {current!r} takes output {source[2]} of layer {source[0]!r}; only linear models, "
                f"each layer fed by the first output of the one before, are supported"
            )
        current = source[0] if source else None
    chain.reverse()
    unused = [n for n, layer in by_name.items()
              if n not in {spec.name for spec in chain} and layer.get("class_name") not in _MASK_OPS]
    if unused:
        raise UnsupportedKerasError(
            f"layer(s) {', '.join(map(repr, unused))} are not on the chain from the input to the output; "
            f"only linear models are supported"
        )
    return Chain(name, chain, [_history(o)[2] for o in outputs])
