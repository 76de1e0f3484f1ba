"""Server checkpoints: the runtime's state, committed atomically with the replay checkpoint machinery.

A server's checkpoint directory is a :class:`streamlstm.io.checkpoint.Checkpoint` directory without
output parts: ``checkpoint.json`` (the commit record) names ``runtime-NNNNNN.state`` (a
:func:`streamlstm.save_runtime` file). In the record, ``batches`` is the server's *version* (state
changes: micro-batches fed and resets, counted since the first start), ``input_rows`` the rows fed, and
``run`` the model file's digest and the runtime options, which a resumed server must match.

Each commit writes the state file, syncs it, then replaces the record (temp + fsync + rename): a
server killed at any moment (even ``kill -9`` mid-write) restarts with ``--resume`` from the last
committed checkpoint, whole, and loses only the state changes after it.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from streamlstm.errors import CheckpointError
from streamlstm.io.checkpoint import Checkpoint, CheckpointRecord

__all__ = ["ServerCheckpoints"]


class ServerCheckpoints:
    """The checkpoint directory of one server.

    Args:
        directory (str | Path): created if missing.
        model_path (str | Path): the model file (its digest must match on resume).
        options (dict): the runtime options (key, features, ...; must match on resume).
        resume (bool): continue from the checkpoint in ``directory``; without it one there is an error.
    """

    def __init__(self, directory: str | os.PathLike, model_path: str | os.PathLike, options: dict[str, Any],
                 *, resume: bool) -> None:
        digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
        self._store = Checkpoint(directory, {"serve": True, "model": digest, **options}, resume=resume)
        self.directory = self._store.directory
        self.resume = resume
        self.committed_version: int | None = None
        self._record = CheckpointRecord()

    def open(self) -> Path | None:
        """The state file to resume from, or None to start empty."""
        if not self.resume and self._store.record_path.exists():
            raise CheckpointError(f"{self.directory} holds the checkpoint of a server; add --resume to continue "
                                  f"its streams, or delete {self.directory} to start with none")
        record = self._store.open()
        if record is None:
            return None
        self._record = record
        self.committed_version = record.batches
        return self._store.state_path(record)

    @property
    def version(self) -> int:
        """The version of the checkpoint resumed from (0 when none)."""
        return self._record.batches

    def commit(self, runtime: Any, version: int) -> dict[str, Any]:
        """Write ``runtime`` (no feed may run meanwhile) as the new checkpoint; returns a summary."""
        started = time.perf_counter()
        stats = runtime.stats()
        self._record.batches = version
        self._record.input_rows = int(stats["rows"])
        try:
            self._record = self._store.commit(runtime, self._record)
        except OSError as exc:   # disk full, directory removed: the previous checkpoint stays whole
            raise CheckpointError(f"cannot write a checkpoint in {self.directory}: "
                                  f"{exc.strerror or exc}") from exc
        self.committed_version = version
        return {"path": str(self._store.state_path(self._record)), "rows": self._record.input_rows,
                "streams": int(stats["streams"]), "version": version,
                "seconds": round(time.perf_counter() - started, 6)}
