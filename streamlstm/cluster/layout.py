"""Which shard owns which key groups, and how a batch is cut into one part per shard.

``G`` key groups (:func:`streamlstm.key_group`) are dealt to ``N`` shards in contiguous ranges, as
Flink does: shard ``i`` owns groups ``[floor(i * G / N), floor((i + 1) * G / N))``. Rescaling from N to
M shards moves whole key groups; a stream never changes group, so a stream's rows always meet its state.

Cutting a batch (:class:`Splitter`) costs, on the driver: the key groups of the key column (one
vectorized hash) and a stable counting sort of the rows by shard. A batch whose rows all belong to one
shard goes whole, and its output comes back as it is. Otherwise the whole batch and the shard of each
row (:class:`SharedBatch`) go to the object store once, and every shard takes its own rows there: the
driver copies nothing per shard. (Arrow slices would be cheaper than takes, but a pickled slice
carries its whole parent buffers; a batch that is itself such a slice is cut on the driver, one
``take`` per shard.) The outputs are put back in input order by :func:`scatter_batches`. A fleet that
sends the same keys in the same order every batch pays for the hash and the sort once: the plan is
kept while the key column is equal to the previous batch's (checked with ``Array.equals``, a memory
comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from streamlstm.cluster.scatter import scatter_batches
from streamlstm.errors import ConfigError
from streamlstm.runtime.key_groups import key_group

__all__ = ["BatchSplit", "SharedBatch", "ShardLayout", "SplitPlan", "Splitter"]


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
class SplitPlan:
    """Where the rows of a batch go: ``rows[i]`` the input rows of shard ``i`` (in input order; shards
    without rows are absent), ``inverse`` the permutation that puts the shards' outputs, concatenated in
    shard order, back in input order, and ``shard_of_row`` the shard of every row (both None when one
    shard holds every row)."""

    num_rows: int
    rows: dict[int, np.ndarray]
    inverse: np.ndarray | None
    shard_of_row: np.ndarray | None = None

    @classmethod
    def of(cls, shard: np.ndarray, shards: int) -> SplitPlan:
        """The plan for rows whose shards are ``shard`` (int array, one per row)."""
        n = len(shard)
        counts = np.bincount(shard, minlength=shards)
        if shards == 1 or int(counts.max(initial=0)) == n:
            return cls(n, {int(shard[0]) if n else 0: np.arange(n)}, None)
        small = shard.astype(np.uint8 if shards < 256 else np.int32)
        # A stable sort of small integers is a radix sort in numpy: linear in the rows.
        order = np.argsort(small, kind="stable")
        rows, start = {}, 0
        for index, count in enumerate(counts.tolist()):
            if count:
                rows[index] = order[start:start + count]
            start += count
        inverse = np.empty(n, np.int64)
        inverse[order] = np.arange(n)
        return cls(n, rows, inverse, small)


@dataclass(frozen=True)
class SharedBatch:
    """A whole batch and the shard of each of its rows: one object sent to every shard of the batch,
    which takes its own rows (those of ``SplitPlan.rows[shard]``, in input order)."""

    batch: pa.RecordBatch
    shard_of_row: np.ndarray

    def part(self, shard: int) -> pa.RecordBatch:
        return self.batch.take(pa.array(np.flatnonzero(self.shard_of_row == shard)))


@dataclass(frozen=True)
class BatchSplit:
    """A batch cut by shard: ``parts[i]`` holds the rows of shard ``i`` (``plan.rows[i]``, in input order):
    the part itself, or a :class:`SharedBatch` that shard ``i`` cuts it from."""

    plan: SplitPlan
    parts: dict[int, pa.RecordBatch | SharedBatch]

    @property
    def rows(self) -> dict[int, np.ndarray]:
        return self.plan.rows

    @classmethod
    def whole(cls, batch: pa.RecordBatch, shard: int = 0) -> BatchSplit:
        """``batch`` whole to ``shard`` (e.g. shard 0, to name what is wrong with a batch)."""
        n = batch.num_rows if isinstance(batch, pa.RecordBatch) else 0
        return cls(SplitPlan(n, {shard: np.arange(n)}, None), {shard: batch})

    def part(self, shard: int) -> pa.RecordBatch | None:
        """The rows of ``shard`` as a batch (None: it has none)."""
        part = self.parts.get(shard)
        return part.part(shard) if isinstance(part, SharedBatch) else part

    def assemble(self, outputs: dict[int, pa.RecordBatch]) -> pa.RecordBatch:
        """The shards' output batches put back in input order: what one runtime would have returned."""
        if self.plan.inverse is None:
            return next(iter(outputs.values()))
        shards = sorted(outputs)
        return scatter_batches([outputs[s] for s in shards], [self.plan.rows[s] for s in shards], self.plan.inverse)


def _carries_more(batch: pa.RecordBatch) -> bool:
    """Whether pickling ``batch`` would carry much more than its rows (it is a slice of a larger batch)."""
    return batch.get_total_buffer_size() > 2 * batch.nbytes + 4096


class Splitter:
    """Cuts batches by the shard of their key column, keeping the last plan for an equal key column."""

    def __init__(self, key: str, layout: ShardLayout) -> None:
        self.key, self.layout = key, layout
        self._owner = layout.shard_of_group()
        self._last: tuple[pa.Array, SplitPlan] | None = None

    def plan(self, keys: pa.Array | pa.ChunkedArray) -> SplitPlan:
        """The plan for a key column (a bad one raises from :func:`key_group`)."""
        last = self._last
        if last is not None and (last[0] is keys or (len(last[0]) == len(keys) and last[0].equals(keys))):
            return last[1]
        plan = SplitPlan.of(self._owner[key_group(keys, self.layout.groups)], self.layout.shards)
        self._last = (keys, plan)
        return plan

    def split(self, batch: pa.RecordBatch) -> BatchSplit:
        """Cut ``batch`` (a missing key column raises KeyError, a bad one from :func:`key_group`)."""
        plan = self.plan(batch.column(self.key))
        if plan.inverse is None:
            return BatchSplit(plan, {next(iter(plan.rows)): batch})
        if _carries_more(batch):
            return BatchSplit(plan, {shard: batch.take(pa.array(rows)) for shard, rows in plan.rows.items()})
        return BatchSplit(plan, dict.fromkeys(plan.rows, SharedBatch(batch, plan.shard_of_row)))
