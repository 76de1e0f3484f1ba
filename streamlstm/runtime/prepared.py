"""A batch on its way through :class:`~streamlstm.runtime.runtime.StreamRuntime`: its plan (keys placed,
rows laid out; cached for the next batch with the same keys) and a prepared feed (computed, not applied)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from streamlstm.errors import StreamError
from streamlstm.runtime import report, segments
from streamlstm.runtime.execute import Outcome
from streamlstm.runtime.keys import KeyIndex, Lookup
from streamlstm.runtime.placement import Placement
from streamlstm.runtime.schema import ParsedBatch
from streamlstm.runtime.segments import RowPlan, periodic_plan
from streamlstm.runtime.store import StreamStore

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

    def next_for(self, keys: pa.Array) -> BatchPlan | None:
        """This plan for the next batch, whose key column is ``keys``: :meth:`again` for the same
        column, :meth:`continued` for the rest of a recording; None when neither applies."""
        mine = self.placement.keys
        if mine is keys or (len(mine) == len(keys) and mine.equals(keys)):
            return self.again()
        return self.continued(keys)

    def again(self) -> BatchPlan:
        """This plan for the next batch with the same keys: every key now has its slot."""
        if self.committed is None:
            return self
        old, per_row = self.placement, self.committed[self.rows.key_of_row]
        lookup = Lookup(per_row, per_row, np.empty(0, np.int64), old.lookup.distinct)
        placement = Placement(old.keys, old.kind, lookup, old.key_rows, self.committed, old.released,
                              flagged=old.flagged)   # the same streams: has_output as the commit left it
        return BatchPlan(placement, self.row_plans, self.generation)

    def continued(self, keys: pa.Array) -> BatchPlan | None:
        """The plan of the next batch of a recording of ``P`` streams stored as recorded live, when this
        plan is such a batch's (its rows have period ``P``: :func:`~streamlstm.runtime.segments.periodic_plan`),
        it was committed with int keys, and ``keys`` go on where this batch stopped: row ``i`` holds the
        key of this batch's row ``n + i``, so key ``(n + i) % P`` of this batch. Else None (the batch
        then takes the full lookup). Valid while the store's ``generation`` is unchanged (the caller
        checks): every key still has its slot.

        Nothing is looked up: the keys are compared with the expected ones (one pass), each key's slot
        is this plan's, rotated by ``n % P``, and the rows get the shared plan of their length; the
        same placement and plans as the full lookup and :func:`~streamlstm.runtime.segments.plan_rows`
        would give (tests/runtime/test_recorded_keys.py)."""
        period, count = self.rows.period, len(keys)
        if period is None or self.placement.kind != "int" or count <= period or count < segments.PERIODIC_ROWS:
            return None
        shift = self.rows.num_rows % period
        head = KeyIndex.int_values(self.placement.keys)[:period]
        expected = np.concatenate([head[shift:], head[:shift]])
        values, whole = KeyIndex.int_values(keys), count - count % period
        if not ((values[:whole].reshape(-1, period) == expected).all()
                and (values[whole:] == expected[:count - whole]).all()):
            return None
        slots = self.placement.key_slots if self.committed is None else self.committed
        key_slots = np.concatenate([slots[shift:], slots[:shift]])
        row_plans = {backwards: periodic_plan(count, period, backwards) for backwards in self.row_plans}
        rows = next(iter(row_plans.values()))
        lookup = Lookup(key_slots, key_slots, np.empty(0, np.int64), False).repeated(count)
        placement = Placement(keys, "int", lookup, rows.key_rows, key_slots, rows.key_released,
                              flagged=self.placement.flagged)   # the same streams: has_output as it was
        if self.committed is None:   # this placement's slots, turned: their range is known from its own
            placement.turn_of(self.placement, shift)
        return BatchPlan(placement, row_plans)


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
