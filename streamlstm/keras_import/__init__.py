"""Import trained Keras models (``.keras`` and legacy ``.h5``) as torch modules, without TensorFlow.

:func:`load_keras` reads the file (:mod:`~streamlstm.keras_import.files`), walks the model's layer
chain (:mod:`~streamlstm.keras_import.graph`), converts each layer with the file's Keras version
deciding semantics (:mod:`~streamlstm.keras_import.convert`) and returns a
:class:`~streamlstm.keras_import.modules.KerasModel`.
"""

from __future__ import annotations

from pathlib import Path

from streamlstm.errors import KerasFileError, UnsupportedKerasError
from streamlstm.keras_import.convert import SUPPORTED, convert_layer, keras3_weight_paths, snake_case
from streamlstm.keras_import.files import KerasFile, read_keras_file
from streamlstm.keras_import.graph import LayerSpec, model_chain
from streamlstm.keras_import.modules import (
    KerasActivation,
    KerasBidirectional,
    KerasDense,
    KerasDropout,
    KerasMasking,
    KerasModel,
    KerasTimeDistributed,
)
from streamlstm.keras_import.save import save_keras

__all__ = [
    "SUPPORTED",
    "KerasActivation",
    "KerasBidirectional",
    "KerasDense",
    "KerasDropout",
    "KerasMasking",
    "KerasModel",
    "KerasTimeDistributed",
    "load_keras",
    "save_keras",
]

_WEIGHTED = ("LSTM", "RNN", "Bidirectional", "Dense", "TimeDistributed")


def load_keras(path: str | Path) -> KerasModel:
    """Load a Keras model file as a torch module that returns what Keras's ``predict`` returns.

    Args:
        path (str | Path): a Keras 3 ``.keras`` file or a legacy ``.h5`` file (tf.keras 2, or Keras 3's
            legacy writer); the format is read from the content, not the name. Needs h5py
            (``pip install 'streamlstm[keras]'``); TensorFlow and Keras are not needed.

    Returns:
        A :class:`~streamlstm.keras_import.modules.KerasModel` in eval mode. Call it on
        [batch, time, features] inputs (numpy or torch); ``model.layers`` holds streamlstm LSTM/RNN
        layers and per-step modules, ``model.mask_value`` the leading Masking layer's value.

    Raises:
        KerasFileError: the file is missing, corrupt, or not a Keras model file.
        UnsupportedKerasError: a layer class or option outside :data:`SUPPORTED`; the message names the
            layer, its class and the option.

    Supported: Sequential and linear functional models of InputLayer, Masking, LSTM, RNN over LSTMCell
    or StackedRNNCells, Bidirectional(LSTM) (offline only), Dense, TimeDistributed(Dense), Dropout and
    Activation. ``hard_sigmoid`` means what it meant in the Keras version that wrote the file.
    """
    file = read_keras_file(path)
    chain = model_chain(file.config)
    layers, used_names = [], {}
    batch = None
    if chain.layers and chain.layers[0].class_name == "InputLayer":
        config = chain.layers[0].config
        batch = (config.get("batch_shape") or config.get("batch_input_shape") or [None])[0]
    for spec in chain.layers:
        module = convert_layer(spec, _weights(file, spec, used_names), file.keras_major, batch)
        if module is not None:
            layers.append(module)
    if not layers:
        raise UnsupportedKerasError(f"{str(file.path)!r}: the model has no layers besides its input")
    return KerasModel(layers, name=chain.name, keras_version=file.keras_version, output_indices=chain.output_indices)


def _weights(file: KerasFile, spec: LayerSpec, used_names: dict[str, int]) -> list:
    if file.format == "h5":
        return list(file.weights.get(spec.name, []))
    base = snake_case(spec.class_name)
    used_names[base] = used_names.get(base, -1) + 1
    prefix = "layers/" + base + (f"_{used_names[base]}" if used_names[base] else "")
    arrays = []
    for key in keras3_weight_paths(spec, prefix):
        if spec.class_name in _WEIGHTED and key not in file.weights:
            raise KerasFileError(
                f"{str(file.path)!r}: the weights of layer {spec.name!r} ({spec.class_name}) are missing "
                f"(expected variables at {key!r} in model.weights.h5)"
            )
        arrays.extend(file.weights.get(key, []))
    return arrays
