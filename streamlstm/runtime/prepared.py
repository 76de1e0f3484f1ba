"""A batch on its way through :class:`~streamlstm.runtime.runtime.StreamRuntime`: its plan (keys placed,
rows laid out; cached for the next batch with the same keys) and a prepared feed (computed, not applied)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from streamlstm.errors import StreamError
from streamlstm.runtime import report
from streamlstm.runtime.execute import Outcome
from streamlstm.runtime.keys import Lookup
from streamlstm.runtime.schema import ParsedBatch
from streamlstm.runtime.segments import RowPlan
from streamlstm.runtime.store import Placement, StreamStore

__all__ = ["BatchPlan", "PreparedFeed"]


@dataclass
class BatchPlan:
    """A batch's keys placed and its rows laid out; kept after a commit for the next batch with the
    same key column (a fleet reporting in the same order every batch), with what execute derived from
    it (``memo``)."""

    placement: Placement
    row_plans: dict[bool, RowPlan]
    generation: int = -1
    memo: dict = field(default_factory=dict)
    committed: np.ndarray | None = None   # the keys' slots after the commit, when some were new
    rows: RowPlan = field(init=False)     # the plan of the first direction (keys and lives are the same)

    def __post_init__(self) -> None:
        self.rows = next(iter(self.row_plans.values()))

    def again(self) -> BatchPlan:
        """This plan for the next batch with the same keys: every key now has its slot."""
        if self.committed is None:
            return self
        old, per_row = self.placement, self.committed[self.rows.key_of_row]
        lookup = Lookup(per_row, per_row, np.empty(0, np.int64), old.lookup.distinct)
        placement = Placement(old.keys, old.kind, lookup, old.key_rows, self.committed, old.released)
        return BatchPlan(placement, self.row_plans, self.generation)


class PreparedFeed:
    """A batch parsed, checked and computed by :meth:`StreamRuntime.prepare`, not applied yet.

    :meth:`commit` applies it and returns the output batch :meth:`StreamRuntime.feed` would have
    returned; :meth:`abort` drops it. Only one of them, once. ``state`` is "prepared", "committed" or
    "aborted"; the other attributes are the runtime's working data."""

    def __init__(self, runtime: Any, token: tuple[Any, int], parsed: ParsedBatch) -> None:
        self.runtime, self.token, self.parsed = runtime, token, parsed
        self.state = "prepared"
        self.kept: np.ndarray | None = None        # rows not dropped as late (None: all)
        self.dropped = 0
        self.computed: ParsedBatch | None = None   # the rows computed (``parsed`` less late rows)
        self.plan: BatchPlan | None = None
        self.outcome: Outcome | None = None
        self.fresh: tuple[StreamStore, report.OutputBuilder] | None = None   # the first batch's store
        self.output: pa.RecordBatch | None = None

    @property
    def num_rows(self) -> int:
        return self.parsed.num_rows

    def commit(self) -> pa.RecordBatch:
        """Apply the batch (see :meth:`StreamRuntime.commit`)."""
        return self.runtime.commit(self)

    def abort(self) -> None:
        """Drop the batch: nothing of it is applied (idempotent; an error after a commit)."""
        if self.state == "committed":
            raise StreamError("this prepared feed was committed already; it cannot be aborted")
        self.state = "aborted"

    def __repr__(self) -> str:
        return f"PreparedFeed(rows={self.num_rows:,}, state={self.state!r})"
