"""One shard of a :class:`~streamlstm.cluster.ShardedRuntime`: a Ray actor holding a StreamRuntime.

The actor is a thin owner of its runtime: every method is a public StreamRuntime method, plus the
two-phase feed (:meth:`Shard.prepare`, then :meth:`Shard.commit` or :meth:`Shard.abort`) and the
checkpoint files. Errors of a bad batch come back as values (not raised through Ray, which would wrap
them), with the row they name (``StreamError.row``) translated from the shard's part to the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.errors import StreamError, StreamLSTMError
from streamlstm.io.model_file import model_from_bytes
from streamlstm.io.runtime_file import load_runtime, save_runtime
from streamlstm.runtime import PreparedFeed, StreamRuntime

__all__ = ["Shard", "renumber_rows"]


def renumber_rows(error: StreamLSTMError, rows: np.ndarray) -> tuple[StreamLSTMError, int]:
    """``error`` naming the row of the whole batch (``rows[i]``) instead of row ``i`` of the shard's part,
    and that row (-1 when the error names none: it does not depend on the part, e.g. a schema error)."""
    row = error.row if isinstance(error, StreamError) else None
    if row is None or not 0 <= row < len(rows):
        return error, -1
    whole = int(rows[row])
    return type(error)(str(error).replace(f"row {row}", f"row {whole}", 1), row=whole), whole


class Shard:
    """Holds one StreamRuntime; created by :class:`ShardedRuntime` through ``ray.remote``."""

    def __init__(self, model: bytes, options: dict[str, Any], threads: int, device: Any) -> None:
        torch.set_num_threads(threads)
        self.model_bytes, self.options, self.device = model, options, device
        self.runtime = self._fresh()
        self.pending: PreparedFeed | None = None

    def _fresh(self) -> StreamRuntime:
        return StreamRuntime(model_from_bytes(self.model_bytes, device=self.device), device=self.device,
                             **self.options)

    # -- feeding ---------------------------------------------------------------------------------
    def prepare(self, part: pa.RecordBatch, rows: np.ndarray) -> pa.RecordBatch | tuple[StreamLSTMError, int]:
        """Prepare ``part`` (the batch's ``rows``); its output, or ``(error, first row)`` for a bad batch."""
        self.abort()
        try:
            self.pending = self.runtime.prepare(part)
        except StreamLSTMError as exc:
            return renumber_rows(exc, rows)
        return self.pending.output

    def commit(self) -> int:
        """Apply the prepared part; the rows applied."""
        prepared, self.pending = self.pending, None
        return prepared.commit().num_rows

    def abort(self) -> None:
        if self.pending is not None:
            self.pending.abort()
            self.pending = None

    def feed(self, part: pa.RecordBatch) -> int:
        """Feed ``part`` at once (replaying the driver's log after a restart); the rows fed."""
        self.abort()
        return self.runtime.feed(part).num_rows

    # -- streams ---------------------------------------------------------------------------------
    def ping(self) -> bool:
        return True

    def size(self) -> int:
        return len(self.runtime)

    def contains(self, key: Any) -> bool:
        return key in self.runtime

    def keys(self) -> list[Any]:
        return self.runtime.keys()

    def state(self, key: Any) -> Any:
        return self.runtime.state(key)

    def reset(self, keys: list[Any] | None) -> None:
        self.abort()
        self.runtime.reset(keys)

    def stats(self) -> dict[str, Any]:
        return self.runtime.stats()

    def export_streams(self, key_groups: Iterable[int] | None = None) -> pa.Table:
        return self.runtime.export_streams(key_groups=key_groups)

    def import_streams(self, table: pa.Table) -> int:
        self.abort()
        return self.runtime.import_streams(table)

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write this shard's runtime file (:func:`streamlstm.save_runtime`)."""
        save_runtime(self.runtime, path)

    def restore(self, paths: list[str], key_groups: list[int] | None) -> int:
        """Replace the runtime: the one saved at ``paths[0]`` (``key_groups`` None: this shard's own file,
        counters included), or a fresh one holding the streams of ``key_groups`` from every file of
        ``paths`` (another layout; counters start at zero). Returns the streams held."""
        self.abort()
        if key_groups is None:
            self.runtime = load_runtime(paths[0], device=self.device)
            return len(self.runtime)
        runtime = None
        for path in paths:
            saved = load_runtime(path, device=self.device)
            streams = saved.export_streams(key_groups=key_groups)
            if not streams.num_rows:
                continue
            if runtime is None:   # a model that has held streams is built; a fresh one may not be yet
                runtime = StreamRuntime(saved.model, device=self.device, **self.options)
            runtime.import_streams(streams)
        runtime = runtime if runtime is not None else self._fresh()
        self.runtime = runtime
        return len(runtime)

