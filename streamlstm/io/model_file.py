"""``save_model`` / ``load_model``: a model as one file of JSON config plus raw tensors, no pickle.

Format (``format_version`` 2): an Arrow IPC file (``pyarrow.ipc.new_file``) whose schema metadata holds

- ``streamlstm.format`` = ``"model"``, ``streamlstm.format_version`` = ``"2"``;
- ``streamlstm.model_config`` = JSON: a streamlstm layer in Keras serialized form
  (``{"class_name": "LSTM", "config": {...}}``, see :func:`streamlstm.layers.serialize`), or
  ``{"class_name": "Sequential", "config": {"layers": [...]}}`` whose members are such layers or torch
  modules named ``"torch.nn.<Class>"`` with their constructor arguments (:data:`TORCH_MODULES`), or
  ``{"class_name": "keras.Model", ...}`` for a model from :func:`streamlstm.load_keras` (see
  :mod:`streamlstm.keras_import.config`).

and one record batch with a row per ``state_dict`` tensor: ``name`` (string), ``dtype`` (string, e.g.
``"float32"``), ``shape`` (list<int64>) and ``data`` (large_binary: the C-contiguous little-endian
bytes), followed by the checksum trailer of :mod:`streamlstm.io.checksum`. Loading checks the trailer,
then Arrow's full validation, then rebuilds the model from the config and loads the tensors with
``strict=True``; any failure is one :class:`~streamlstm.errors.FileError` naming the file. Version 1
files (no trailer) still load, with the same checks but the checksum.

:func:`load_model` also reads Keras model files: a file whose content is a zip or HDF5 file goes through
:func:`streamlstm.load_keras` (the content decides, not the name; :func:`save_model` refuses a Keras
name such as ``m.keras``, which would mislead).
"""

from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.errors import ArgumentTypeError, ConfigError, FileError
from streamlstm.io.checksum import decoding, load_ipc, seal
from streamlstm.io.paths import require_directory
from streamlstm.keras_import.config import MODEL_CLASS, model_config, model_from_config
from streamlstm.keras_import.files import is_keras_signature
from streamlstm.keras_import.modules import KerasModel
from streamlstm.layers import RNN, Layer
from streamlstm.layers.serialization import deserialize, serialize

__all__ = ["KERAS_SUFFIXES", "TORCH_MODULES", "load_model", "model_from_bytes", "model_to_bytes", "save_model",
           "tensors_from_bytes", "tensors_to_bytes", "write_atomic"]

FORMAT_VERSION = 2
_READS = (1, 2)
_SEALED_SINCE = 2   # the first version with a checksum trailer
_TENSOR_SCHEMA = pa.schema({"name": pa.string(), "dtype": pa.string(), "shape": pa.list_(pa.int64()),
                            "data": pa.large_binary()})

TORCH_MODULES: dict[str, tuple[type, tuple[str, ...]]] = {
    "Linear": (torch.nn.Linear, ("in_features", "out_features", "bias")),
    "Identity": (torch.nn.Identity, ()),
    "ReLU": (torch.nn.ReLU, ()),
    "Tanh": (torch.nn.Tanh, ()),
    "Sigmoid": (torch.nn.Sigmoid, ()),
    "SiLU": (torch.nn.SiLU, ()),
    "GELU": (torch.nn.GELU, ("approximate",)),
    "ELU": (torch.nn.ELU, ("alpha",)),
    "LeakyReLU": (torch.nn.LeakyReLU, ("negative_slope",)),
    "Softplus": (torch.nn.Softplus, ("beta", "threshold")),
    "Softmax": (torch.nn.Softmax, ("dim",)),
    "Dropout": (torch.nn.Dropout, ("p",)),
    "LayerNorm": (torch.nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine")),
}

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_ARROW_MAGIC = b"ARROW1"   # the first bytes of an Arrow IPC file

_DTYPES = {name: getattr(torch, name) for name in ("float16", "bfloat16", "float32", "float64", "int8", "int16",
                                                   "int32", "int64", "uint8", "bool")}


def _module_config(module: torch.nn.Module) -> dict[str, Any]:
    if isinstance(module, KerasModel):
        return model_config(module)
    if isinstance(module, (RNN, Layer)):
        return serialize(module)
    if isinstance(module, torch.nn.Sequential):
        return {"class_name": "Sequential", "config": {"layers": [_module_config(m) for m in module]}}
    name = type(module).__name__
    if name not in TORCH_MODULES or type(module) is not TORCH_MODULES[name][0]:
        supported = ", ".join(["streamlstm layers", "Sequential", "models from load_keras",
                               *sorted(f"torch.nn.{n}" for n in TORCH_MODULES)])
        raise ConfigError(f"cannot save a model containing {type(module).__module__}.{name}; supported: {supported}")
    config = {}
    for arg in TORCH_MODULES[name][1]:
        value = getattr(module, arg)
        if arg == "bias":
            value = value is not None
        config[arg] = list(value) if isinstance(value, tuple) else value
    return {"class_name": f"torch.nn.{name}", "config": config}


def _build(config: dict[str, Any]) -> torch.nn.Module:
    name = config.get("class_name")
    if name == "Sequential":
        return torch.nn.Sequential(*[_build(member) for member in config["config"]["layers"]])
    if name == MODEL_CLASS:
        return model_from_config(config)
    if isinstance(name, str) and name.startswith("torch.nn."):
        short = name[len("torch.nn."):]
        if short not in TORCH_MODULES:
            raise ConfigError(f"unknown module class {name!r} in the model file")
        return TORCH_MODULES[short][0](**config["config"])
    return deserialize(config)


def _tensor_table(state: dict[str, torch.Tensor]) -> pa.RecordBatch:
    names, dtypes, shapes, blobs = [], [], [], []
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
        names.append(name)
        dtypes.append(dtype)
        shapes.append(list(tensor.shape))
        blobs.append(raw.numpy().astype(raw.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    return pa.record_batch({"name": pa.array(names, pa.string()), "dtype": pa.array(dtypes, pa.string()),
                            "shape": pa.array(shapes, pa.list_(pa.int64())),
                            "data": pa.array(blobs, pa.large_binary())})


def _tensors(table: pa.Table) -> dict[str, torch.Tensor]:
    if table.num_rows == 0:
        return {}
    if not table.schema.equals(_TENSOR_SCHEMA, check_metadata=False):
        raise ValueError(f"the tensor table must have the schema {_TENSOR_SCHEMA}, got {table.schema}")
    state = {}
    columns = (table.column(c).to_pylist() for c in ("name", "dtype", "shape", "data"))
    for name, dtype, shape, blob in zip(*columns):
        if dtype not in _DTYPES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {dtype!r}")
        if name in state:
            raise ValueError(f"tensor {name!r} appears twice")
        torch_dtype = _DTYPES[dtype]
        np_dtype = np.int16 if torch_dtype == torch.bfloat16 else torch.empty(0, dtype=torch_dtype).numpy().dtype
        array = np.frombuffer(blob, dtype=np.dtype(np_dtype).newbyteorder("<")).astype(np_dtype).reshape(shape)
        tensor = torch.from_numpy(array.copy())
        state[name] = tensor.view(torch.bfloat16) if torch_dtype == torch.bfloat16 else tensor
    return state


def tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """Named tensors as an Arrow IPC file: the tensor table of a model file (see the module docstring)."""
    batch = _tensor_table(tensors)
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def tensors_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """The inverse of :func:`tensors_to_bytes`."""
    try:
        reader = pa.ipc.open_file(pa.BufferReader(data))
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"not a streamlstm tensor table: {exc}") from exc
    table = reader.read_all()
    return _tensors(table.combine_chunks().to_batches()[0]) if table.num_rows else {}


def model_to_bytes(model: torch.nn.Module) -> bytes:
    """The model file's bytes (see the module docstring)."""
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    config = _module_config(model)
    batch = _tensor_table(model.state_dict())
    metadata = {b"streamlstm.format": b"model", b"streamlstm.format_version": str(FORMAT_VERSION).encode(),
                b"streamlstm.model_config": json.dumps(config).encode()}
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, batch.schema.with_metadata(metadata)) as writer:
        writer.write_batch(batch)
    return seal(sink.getvalue())


def model_from_bytes(data: bytes, device: Any = None, *, name: str = "the model file") -> torch.nn.Module:
    """Rebuild a model from :func:`model_to_bytes` output, in eval mode.

    Raises:
        FileError: ``data`` is damaged, not a model file, or holds a model that cannot be rebuilt
            (the message starts with ``name``).
    """
    _, metadata, table = load_ipc(data, name, b"model", _READS, _SEALED_SINCE)
    with decoding(name, "a model"):
        model = _build(json.loads(metadata[b"streamlstm.model_config"]))
        state = _tensors(table)
        model.load_state_dict(state, strict=True)   # builds streamlstm layers from the tensor shapes
        floating = {t.dtype for t in state.values() if t.is_floating_point()}
        if len(floating) == 1:
            model.to(floating.pop())
            model.load_state_dict(state, strict=True)  # exact values in the saved dtype
    if device is not None:
        model.to(device)
    return model.eval()


def write_atomic(path: str | os.PathLike, data: bytes | Any) -> None:
    """Write ``data`` (bytes, or a callable taking a binary file) to ``path`` via a temp file + rename.

    The directory must exist (:mod:`streamlstm.io.paths`). The file gets the mode any new file gets
    under the process umask (``mkstemp``'s 0600 would make saved models private by accident)."""
    target = require_directory(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(handle, "wb") as sink:
            if isinstance(data, (bytes, bytearray)):
                sink.write(data)
            else:
                data(sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def save_model(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` (a streamlstm layer or a Sequential of supported modules) to ``path`` atomically.

    Example:
        >>> import tempfile, os, torch, streamlstm as sl
        >>> model = torch.nn.Sequential(sl.LSTM(4, return_sequences=True), torch.nn.Linear(4, 1))
        >>> _ = model[0].build((None, None, 3))
        >>> path = os.path.join(tempfile.mkdtemp(), "model.slm")
        >>> sl.save_model(model, path)
        >>> loaded = sl.load_model(path)
        >>> bool(torch.equal(loaded[0].cell.kernel, model[0].cell.kernel))
        True
    """
    if Path(path).suffix.lower() in KERAS_SUFFIXES:
        raise ConfigError(f"save_model writes streamlstm's own model format, not a Keras file, so {Path(path).name!r} "
                          f"would mislead: name it .slm, or call streamlstm.save_keras(model, path) for a Keras "
                          f"file")
    write_atomic(path, model_to_bytes(model))


def load_model(path: str | os.PathLike, device: Any = None) -> torch.nn.Module:
    """Read a model written by :func:`save_model`, or a Keras ``.keras``/``.h5`` model file (through
    :func:`streamlstm.load_keras`), in eval mode, on ``device`` when given.

    Raises:
        FileError: not a readable streamlstm model file: damaged (checksum, Arrow validation, content),
            another kind of file, or an unsupported ``format_version``; the message names the file.
        KerasImportError: a Keras file that cannot be imported (see :func:`streamlstm.load_keras`).
    """
    path = Path(path)
    if _is_keras_file(path):
        from streamlstm.keras_import import load_keras

        model = load_keras(path)
        return model.to(device) if device is not None else model
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileError(f"model file {path} cannot be read: {exc.strerror or exc}") from exc
    return model_from_bytes(data, device=device, name=f"model file {path}")


def _is_keras_file(path: Path) -> bool:
    """Decided by the content, not the name: an Arrow file (what :func:`save_model` writes) is streamlstm's
    even when named ``m.keras``; a zip or HDF5 file is Keras's. Only content neither names (empty,
    unreadable, foreign) falls back to the suffix, to pick whose error message explains it."""
    try:
        with open(path, "rb") as source:
            head = source.read(8)
    except OSError:
        return False   # reading the whole file below raises the error that names it
    if head.startswith(_ARROW_MAGIC):
        return False
    return is_keras_signature(head) or path.suffix.lower() in KERAS_SUFFIXES
