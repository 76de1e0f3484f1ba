"""Sharded checkpoints on disk: a directory of per-shard runtime files and ``manifest.json``.

================================ =================================================================
``manifest.json``                written last and atomically: the checkpoint is the one it names
``model.streamlstm``             the model (:func:`streamlstm.save_model`)
``shard-IIII-of-NNNN.SEQ.arrow`` shard ``IIII``'s runtime file (:func:`streamlstm.save_runtime`),
                                 taken after batch ``SEQ``
================================ =================================================================

The manifest holds ``format`` ("streamlstm.sharded_checkpoint"), ``format_version`` (1),
``key_groups`` (G, fixed for the life of the state), ``shards`` (one ``{"file", "key_groups":
[first, stop)}`` per shard), ``batches`` (the batch sequence number: batches fed since the runtime
began), ``config`` (:meth:`StreamRuntime.config() <streamlstm.StreamRuntime.config>`), ``counters`` (the
totals of every counter) and ``base`` (the part of ``counters`` no shard file holds: counters carried
over a rescale). Files of older checkpoints are removed once the manifest names the new ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlstm.errors import ConfigError
from streamlstm.io.model_file import write_atomic

__all__ = ["MANIFEST", "MODEL_FILE", "Manifest", "read_manifest", "shard_file_name", "write_manifest"]

MANIFEST = "manifest.json"
MODEL_FILE = "model.streamlstm"
FORMAT = "streamlstm.sharded_checkpoint"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    key_groups: int
    ranges: list[tuple[int, int]]
    files: list[str]
    batches: int
    config: dict[str, Any]
    counters: dict[str, float]
    base: dict[str, float]

    def paths(self, directory: Path) -> list[str]:
        return [str(directory / name) for name in self.files]


def shard_file_name(shard: int, shards: int, batches: int) -> str:
    return f"shard-{shard:04d}-of-{shards:04d}.{batches}.arrow"


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write the manifest atomically, then remove the shard files it does not name."""
    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "key_groups": manifest.key_groups,
            "shards": [{"file": f, "key_groups": list(r)} for f, r in zip(manifest.files, manifest.ranges)],
            "batches": manifest.batches, "config": manifest.config, "counters": manifest.counters,
            "base": manifest.base}
    write_atomic(directory / MANIFEST, json.dumps(body, indent=1).encode())
    keep = set(manifest.files)
    for path in directory.glob("shard-*.arrow"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(directory)!r} holds no readable sharded checkpoint ({MANIFEST}): {exc}") from exc
    if body.get("format") != FORMAT or body.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{str(path)!r} is not a sharded checkpoint manifest of format_version {FORMAT_VERSION} "
                          f"(format {body.get('format')!r}, format_version {body.get('format_version')!r})")
    missing = [s["file"] for s in body["shards"] if not os.path.isfile(directory / s["file"])]
    if missing:
        raise ConfigError(f"sharded checkpoint {str(directory)!r} lacks shard file(s) {missing}")
    return Manifest(body["key_groups"], [tuple(s["key_groups"]) for s in body["shards"]],
                    [s["file"] for s in body["shards"]], body["batches"], body["config"], body["counters"],
                    body["base"])
