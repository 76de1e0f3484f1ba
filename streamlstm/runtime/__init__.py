"""The stream runtime: per-stream LSTM carries for many interleaved streams, fed by Arrow batches.

Data flows one way: Arrow batch -> :mod:`~streamlstm.runtime.schema` check -> :mod:`~streamlstm.runtime.keys`
lookup -> :mod:`~streamlstm.runtime.segments` layout -> :mod:`~streamlstm.runtime.execute` (gather carries,
run the :mod:`~streamlstm.runtime.compute` modes) -> commit into the :mod:`~streamlstm.runtime.state_table`
-> Arrow batch (:mod:`~streamlstm.runtime.report`).
"""

from __future__ import annotations

from streamlstm.runtime.runtime import StreamRuntime

__all__ = ["StreamRuntime"]
