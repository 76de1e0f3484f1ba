"""One shard of a :class:`~streamlstm.cluster.ShardedRuntime`: a Ray actor holding a StreamRuntime.

The actor is a thin owner of its runtime: public StreamRuntime methods, the checkpoint files, and the
shard's half of the one-round-trip feed (the protocol is in :mod:`streamlstm.cluster.sharded`):

- :meth:`Shard.step` first *settles* the feed the shard prepared last (commits it when every verdict
  is :data:`PREPARED`, else drops it), then prepares its part of the new batch and keeps it pending.
  The verdicts are the statuses every shard returned for that earlier batch: the driver passes their
  Ray object refs, and Ray hands the actor their values once all shards have answered.
- :meth:`Shard.settle` settles alone (before a query, a save, a reset); :meth:`Shard.settle_to`
  settles by sequence number after a failure (commit what the driver has returned to its caller).

Errors of a bad batch come back as values (not raised through Ray, which would wrap them): the status
``(error, row)`` names the row of the shard's part (-1 for none); the driver renumbers it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import torch

from streamlstm.cluster.layout import SharedBatch
from streamlstm.errors import StreamError, StreamLSTMError
from streamlstm.io.model_file import model_from_bytes
from streamlstm.io.runtime_file import load_runtime, save_runtime
from streamlstm.runtime import PreparedFeed, StreamRuntime

__all__ = ["PREPARED", "Shard"]

PREPARED = True   # the status of a part prepared without error (any other status is ``(error, row)``)


class Shard:
    """Holds one StreamRuntime; created by :class:`ShardedRuntime` through ``ray.remote``."""

    def __init__(self, model: bytes, options: dict[str, Any], threads: int, device: Any) -> None:
        torch.set_num_threads(threads)
        self.model_bytes, self.options, self.device = model, options, device
        self.runtime = self._fresh()
        self.pending: PreparedFeed | None = None
        self.pending_seq = -1   # the batch number of ``pending``

    def _fresh(self) -> StreamRuntime:
        return StreamRuntime(model_from_bytes(self.model_bytes, device=self.device), device=self.device,
                             **self.options)

    # -- feeding ---------------------------------------------------------------------------------
    def step(self, seq: int, part: pa.RecordBatch | SharedBatch, shard: int,
             *verdicts: Any) -> tuple[Any, pa.RecordBatch | None]:
        """Settle the pending feed by ``verdicts``, then prepare ``part`` (batch number ``seq``; a
        :class:`SharedBatch`: its rows of shard ``shard``) and keep it pending: ``(PREPARED, output)``, or
        ``((error, row of the part or -1), None)`` for a bad part. (Called with ``num_returns=2``: the
        status and the output are two objects, so that the next batch's verdicts carry only the statuses.)"""
        self.settle(*verdicts)
        if isinstance(part, SharedBatch):
            part = part.part(shard)
        try:
            self.pending = self.runtime.prepare(part)
        except StreamLSTMError as exc:
            row = exc.row if isinstance(exc, StreamError) and exc.row is not None else -1
            return (exc, row), None
        self.pending_seq = seq
        return PREPARED, self.pending.output

    def settle(self, *verdicts: Any) -> None:
        """Commit the pending feed if every verdict is :data:`PREPARED` (its batch was good on every
        shard), else drop it. Nothing pending: nothing to do."""
        prepared, self.pending = self.pending, None
        if prepared is None:
            return
        if verdicts and all(v is PREPARED for v in verdicts):
            prepared.commit()
        else:
            prepared.abort()

    def settle_to(self, landed: int) -> None:
        """After a failure: commit the pending feed if its batch number is at most ``landed`` (the driver
        returned that batch's output), else drop it."""
        self.settle(*([PREPARED] if self.pending_seq <= landed else []))

    def feed(self, part: pa.RecordBatch) -> int:
        """Feed ``part`` at once (replaying the driver's log after a restart); the rows fed."""
        self.settle()
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

    def reset(self, keys: list[Any] | None) -> int:
        return self.runtime.reset(keys)

    def stats(self) -> dict[str, Any]:
        return self.runtime.stats()

    def export_streams(self, key_groups: Iterable[int] | None = None) -> pa.Table:
        return self.runtime.export_streams(key_groups=key_groups)

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write this shard's runtime file (:func:`streamlstm.save_runtime`)."""
        save_runtime(self.runtime, path)

    def restore(self, paths: list[str], key_groups: list[int] | None) -> int:
        """Replace the runtime: the one saved at ``paths[0]`` (``key_groups`` None: this shard's own file,
        counters included), or a fresh one holding the streams of ``key_groups`` from every file of
        ``paths`` (another layout; counters start at zero). Returns the streams held."""
        self.settle()
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
