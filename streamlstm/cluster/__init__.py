"""Scaling out on Ray: :class:`ShardedRuntime` spreads a stream runtime's streams over actors by key
group (Ray is imported when one is made; install it with ``pip install 'streamlstm[ray]'``)."""

from __future__ import annotations

from streamlstm.cluster.layout import BatchSplit, ShardLayout
from streamlstm.cluster.sharded import ShardedRuntime

__all__ = ["BatchSplit", "ShardLayout", "ShardedRuntime"]
