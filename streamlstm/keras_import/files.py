"""Reading Keras model files: the Keras 3 ``.keras`` zip and the legacy ``.h5`` file.

Both give a :class:`KerasFile`: the model config (``{"class_name": ..., "config": ...}``), the Keras
version that wrote it, and a weight store.

- ``.keras`` (Keras 3): a zip with ``config.json``, ``metadata.json`` (``keras_version``) and
  ``model.weights.h5``, where a layer's variables are the datasets ``<path>/vars/0``, ``1``, ... and
  ``<path>`` is built from snake_case class names numbered by order of appearance
  (``layers/lstm``, ``layers/lstm_1``, ``layers/bidirectional/forward_layer/cell``), not from layer names.
- ``.h5`` (tf.keras 2, or Keras 3's legacy writer): a ``model_config`` attribute (JSON), a
  ``keras_version`` attribute, and ``model_weights/<layer name>/`` groups whose ``weight_names``
  attribute lists the layer's weights in ``get_weights()`` order.

h5py is imported lazily; it is the ``keras`` extra (``pip install streamlstm[keras]``).

Untrusted files. HDF5 can make a dataset read its bytes from elsewhere: external storage (raw files
named in the dataset), virtual datasets (mapped from other HDF5 files) and external links. A model
file using any of them is refused before anything is read (:func:`refuse_outside_data`), so loading
a model file reads that file alone. Loading never runs code from the file (no pickle, no Lambda
layers, no custom objects); a hostile file can at most make the load fail or take memory.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.errors import KerasFileError

__all__ = ["KerasFile", "is_keras_signature", "read_keras_file", "refuse_outside_data", "require_h5py"]

_H5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"


def require_h5py() -> Any:
    """Import h5py, or say how to install it."""
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - the test environment installs the extra
        raise ImportError(
            "reading and writing Keras model files needs h5py: pip install 'streamlstm[keras]'"
        ) from exc
    return h5py


@dataclass
class KerasFile:
    """What a Keras model file holds, independent of its format.

    Attributes:
        path: the file read.
        format: ``"keras"`` (Keras 3 zip) or ``"h5"`` (legacy HDF5).
        keras_version: the version string that wrote the file (``"2.15.0"``, ``"3.4.1"``).
        config: the model's serialized config, ``{"class_name": "Sequential", "config": {...}}``.
        weights: ``{key: [arrays in get_weights() order]}``; the key is the Keras 3 variable path
            (``"layers/lstm/cell"``) for ``.keras`` files and the layer name for ``.h5`` files.
    """

    path: Path
    format: str
    keras_version: str
    config: dict[str, Any]
    weights: dict[str, list[np.ndarray]] = field(repr=False)

    @property
    def keras_major(self) -> int:
        """2 or 3; files that do not say are taken as Keras 2 (older tf.keras wrote no version)."""
        head = self.keras_version.split(".")[0]
        return int(head) if head.isdigit() else 2


def is_keras_signature(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 8 bytes) is a zip or an HDF5 file."""
    return head.startswith(_ZIP_SIGNATURE) or head == _H5_SIGNATURE


def read_keras_file(path: str | Path) -> KerasFile:
    """Read a ``.keras`` or legacy ``.h5`` model file, telling them apart by content, not by name."""
    path = Path(path)
    if path.is_dir():
        raise KerasFileError(
            f"{str(path)!r} is a directory (a TensorFlow SavedModel?); only .keras and .h5 model files "
            f"are supported: re-save the model with model.save('model.keras')"
        )
    try:
        with open(path, "rb") as handle:
            signature = handle.read(8)
    except OSError as exc:
        raise KerasFileError(f"cannot read Keras model file {str(path)!r}: {exc}") from exc
    if signature.startswith(_ZIP_SIGNATURE):
        return _read_zip(path)
    if signature == _H5_SIGNATURE:
        return _read_h5(path)
    raise KerasFileError(
        f"{str(path)!r} is not a Keras model file: expected a .keras zip or an HDF5 .h5 file, "
        f"found a file starting with {signature!r}"
    )


def refuse_outside_data(store: Any, path: Path, h5py: Any) -> None:
    """Raise :class:`KerasFileError` when the HDF5 ``store`` has an external link, a virtual dataset or a
    dataset with external storage: each would read data from outside the model file."""
    found: list[str] = []

    def visit(name: str, link: Any) -> None:
        if isinstance(link, h5py.ExternalLink):
            found.append(f"{name!r} is an external link to {link.filename!r}")
        elif isinstance(link, h5py.HardLink):
            item = store.get(name)
            if isinstance(item, h5py.Dataset):
                if item.is_virtual:
                    found.append(f"dataset {name!r} is virtual (mapped from other files)")
                elif item.id.get_create_plist().get_external_count():
                    found.append(f"dataset {name!r} has external storage (its bytes live in other files)")

    store.visititems_links(visit)
    if found:
        raise KerasFileError(f"{str(path)!r} reads data from outside the model file, which is refused: "
                             f"{found[0]}")


def _read_zip(path: Path) -> KerasFile:
    h5py = require_h5py()
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = {"config.json", "model.weights.h5"} - names
            if missing:
                raise KerasFileError(
                    f"{str(path)!r} is a zip but not a .keras model: missing {', '.join(sorted(missing))}"
                )
            config = _json(archive.read("config.json"), path, "config.json")
            metadata = _json(archive.read("metadata.json"), path, "metadata.json") if "metadata.json" in names else {}
            blob = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise KerasFileError(f"{str(path)!r} is a corrupt .keras file: {exc}") from exc
    try:
        with h5py.File(io.BytesIO(blob), "r") as store:
            refuse_outside_data(store, path, h5py)
            weights = {}
            store.visititems(lambda name, obj: _collect_vars(name, obj, weights, h5py))
    except OSError as exc:
        raise KerasFileError(f"{str(path)!r}: model.weights.h5 is corrupt: {exc}") from exc
    version = str(metadata.get("keras_version", "3"))
    return KerasFile(path, "keras", version, config, weights)


def _collect_vars(name: str, obj: Any, weights: dict[str, list[np.ndarray]], h5py: Any) -> None:
    if isinstance(obj, h5py.Group) and name.rsplit("/", 1)[-1] == "vars":
        arrays = [np.asarray(obj[str(i)]) for i in range(len(obj)) if str(i) in obj]
        if arrays:
            weights[name[: -len("/vars")] if name != "vars" else ""] = arrays


def _read_h5(path: Path) -> KerasFile:
    h5py = require_h5py()
    try:
        with h5py.File(path, "r") as store:
            refuse_outside_data(store, path, h5py)
            if "model_config" not in store.attrs:
                hint = " (a weights-only file from save_weights?)" if "layer_names" in store.attrs else ""
                raise KerasFileError(
                    f"{str(path)!r} is an HDF5 file without a 'model_config' attribute{hint}; "
                    f"load_keras needs a whole model saved with model.save()"
                )
            config = _json(store.attrs["model_config"], path, "model_config")
            version = _text(store.attrs.get("keras_version", "2"))
            group = store["model_weights"] if "model_weights" in store else store
            weights = {}
            for layer_name in group.attrs.get("layer_names", []):
                layer_group = group[_text(layer_name)]
                names = [_text(n) for n in layer_group.attrs.get("weight_names", [])]
                weights[_text(layer_name)] = [np.asarray(layer_group[n]) for n in names]
    except OSError as exc:
        raise KerasFileError(f"{str(path)!r} is a corrupt HDF5 file: {exc}") from exc
    except KeyError as exc:
        raise KerasFileError(f"{str(path)!r}: weights are missing from the HDF5 file: {exc}") from exc
    return KerasFile(path, "h5", version, config, weights)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _json(raw: Any, path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(_text(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise KerasFileError(f"{str(path)!r}: {what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise KerasFileError(f"{str(path)!r}: {what} must hold a JSON object, got {type(data).__name__}")
    return data
