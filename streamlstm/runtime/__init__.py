"""The stream runtime: per-stream LSTM carries for many interleaved streams, fed by Arrow batches.

Data flows one way: Arrow batch -> :mod:`~streamlstm.runtime.schema` check -> key lookup in the
:mod:`~streamlstm.runtime.store` -> :mod:`~streamlstm.runtime.segments` layout ->
:mod:`~streamlstm.runtime.execute` (gather carries, run the :mod:`~streamlstm.runtime.compute` modes) ->
:meth:`StreamStore.commit <streamlstm.runtime.store.StreamStore.commit>` -> Arrow batch
(:mod:`~streamlstm.runtime.report`). A batch with the same key column as the previous one reuses its
placement and row layout (a cache inside this one path).

The :class:`~streamlstm.runtime.store.StreamStore` is the one owner of stream state (key index, carry
slabs, bookkeeping, key groups); :mod:`~streamlstm.runtime.transfer` moves streams out and in.
"""

from __future__ import annotations

from streamlstm.runtime.runtime import PreparedFeed, StreamRuntime

__all__ = ["PreparedFeed", "StreamRuntime"]
