"""Which shard owns which key groups, and how a batch is cut into one part per shard.

``G`` key groups (:func:`streamlstm.key_group`) are dealt to ``N`` shards in contiguous ranges, as
Flink does: shard ``i`` owns groups ``[floor(i * G / N), floor((i + 1) * G / N))``. Rescaling from N to
M shards moves whole key groups; a stream never changes group, so a stream's rows always meet its state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from streamlstm.errors import ConfigError
from streamlstm.runtime.key_groups import key_group

__all__ = ["BatchSplit", "ShardLayout"]


@dataclass(frozen=True)
class ShardLayout:
    """``shards`` shards over ``groups`` key groups, in contiguous ranges.

    Example:
        >>> ShardLayout(groups=8, shards=3).ranges()
        [(0, 2), (2, 5), (5, 8)]
    """

    groups: int
    shards: int

    def __post_init__(self) -> None:
        for name, value in (("shards", self.shards), ("key_groups", self.groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")
        if self.shards > self.groups:
            raise ConfigError(f"`shards` must be at most `key_groups` ({self.groups}): every shard owns at least "
                              f"one key group, got shards={self.shards}")

    def ranges(self) -> list[tuple[int, int]]:
        """``(first, stop)`` key groups of each shard."""
        g, n = self.groups, self.shards
        return [(i * g // n, (i + 1) * g // n) for i in range(n)]

    def groups_of(self, shard: int) -> list[int]:
        first, stop = self.ranges()[shard]
        return list(range(first, stop))

    def shard_of_group(self) -> np.ndarray:
        """int64 [groups]: the shard of every key group."""
        owner = np.empty(self.groups, np.int64)
        for shard, (first, stop) in enumerate(self.ranges()):
            owner[first:stop] = shard
        return owner


@dataclass(frozen=True)
class BatchSplit:
    """A batch cut by shard: ``rows[i]`` are the input rows of shard ``i`` (in input order), ``parts[i]``
    the rows themselves; shards without rows have none."""

    num_rows: int
    rows: dict[int, np.ndarray]
    parts: dict[int, pa.RecordBatch]

    @classmethod
    def of(cls, batch: pa.RecordBatch, key: str, layout: ShardLayout) -> BatchSplit:
        """Cut ``batch`` by the shard of each row's key (a bad key column raises from :func:`key_group`)."""
        shard = layout.shard_of_group()[key_group(batch.column(key), layout.groups)]
        if layout.shards == 1 or not len(shard):
            return cls(batch.num_rows, {0: np.arange(batch.num_rows)}, {0: batch})
        order = np.argsort(shard, kind="stable")
        counts = np.bincount(shard, minlength=layout.shards)
        rows, parts, start = {}, {}, 0
        for index, count in enumerate(counts.tolist()):
            if count:
                picked = order[start:start + count]
                rows[index] = picked
                parts[index] = batch if count == batch.num_rows else batch.take(pa.array(picked))
            start += count
        return cls(batch.num_rows, rows, parts)

    def assemble(self, outputs: dict[int, pa.RecordBatch]) -> pa.RecordBatch:
        """The shards' output batches put back in input order: what one runtime would have returned."""
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        shards = sorted(outputs)
        table = pa.Table.from_batches([outputs[s] for s in shards])
        inverse = np.empty(self.num_rows, np.int64)
        inverse[np.concatenate([self.rows[s] for s in shards])] = np.arange(self.num_rows)
        return table.take(pa.array(inverse)).combine_chunks().to_batches()[0]
