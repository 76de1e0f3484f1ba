"""How the rows of one batch become independent segments, in numpy without a loop over rows.

Rows of a key are that stream's next steps, in order of appearance. They are cut three times:

1. **lives**: an ``end`` row closes the stream; the key's later rows in the same batch form a new
   stream (zero state, no previous output, no earlier time).
2. **processing order**: within a life, rows run first to last, or last to first for go_backwards
   layers (one Keras stateful call per feed and life).
3. **segments**: a ``reset`` row starts a new segment in processing order.

A segment starts from the stream's stored carries only when it is the key's first segment, of its
first life, without a reset, and the key was already known; every other segment starts from zeros. So
segments never depend on each other and run side by side as rows of one padded batch (chunk mode) or
one round per position (step mode). The committed state of a key is its last segment's final state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RowPlan", "arange", "periodic_plan", "plan_rows", "recorded_period"]

PERIODIC_ROWS = 4096   # from this many rows a batch is checked for the recorded-live pattern (recorded_period)
_ARANGE = np.arange(1 << 16)
_ARANGE.flags.writeable = False
_ONES = np.ones(1 << 16, np.int64)
_ONES.flags.writeable = False
_TRUE = np.ones(1 << 16, bool)
_TRUE.flags.writeable = False
_FALSE = np.zeros(1 << 16, bool)
_FALSE.flags.writeable = False


def arange(n: int) -> np.ndarray:
    """``np.arange(n)``, a read-only view of a shared one when short (no allocation per batch)."""
    return _ARANGE[:n] if n <= len(_ARANGE) else np.arange(n)


def _flags(n: int, value: bool) -> np.ndarray:
    """``np.full(n, value)``, read-only (a view of a shared array when short)."""
    if n <= len(_TRUE):
        return (_TRUE if value else _FALSE)[:n]
    flags = np.full(n, value)
    flags.flags.writeable = False
    return flags


# The per-batch planning below runs on short arrays, where numpy's Python-level wrappers
# (np.flatnonzero, np.diff, np.ones, np.cumsum, ...) cost more than the work: it calls array methods
# and ufuncs directly.
def _starts(flags: np.ndarray) -> np.ndarray:
    """Positions of the True values of ``flags`` (``np.flatnonzero``)."""
    return flags.nonzero()[0]


def _lengths(first: np.ndarray, n: int) -> np.ndarray:
    """Lengths of the runs starting at ``first`` (increasing) in ``0 .. n - 1``."""
    lengths = np.empty(len(first), np.int64)
    np.subtract(first[1:], first[:-1], out=lengths[:-1])
    if len(first):
        lengths[-1] = n - first[-1]
    return lengths


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """bool [n]: where a run of equal values starts."""
    start = np.empty(len(sorted_values), bool)
    if len(start):
        start[0] = True
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=start[1:])
    return start


@dataclass
class RowPlan:
    """Row layout of one batch. "p" arrays are indexed by processing position 0..n-1."""

    num_rows: int
    proc_rows: np.ndarray | None    # [n] input row at each processing position; None = identity
    seg_first: np.ndarray           # [S] processing position of each segment's first row
    seg_len: np.ndarray             # [S]
    pos_in_seg: np.ndarray | None   # [n] per processing position; None = all zero (every segment one row)
    seg_carry: np.ndarray           # [S] bool: starts from the stored carries of ``seg_key``'s slot
    seg_key: np.ndarray             # [S] index of the segment's key (0..K-1)
    key_rows: np.ndarray            # [K] one input row per key (its first)
    key_last_row: np.ndarray        # [K] the key's last input row
    key_last_seg: np.ndarray        # [K] the segment whose final state is committed
    key_released: np.ndarray        # [K] bool: the key's last life ended in this batch
    key_of_row: np.ndarray          # [n] key index of each input row
    known_layout: str | None = None   # ``layout`` when the planner knows it (else found on first use)

    @property
    def num_segments(self) -> int:
        return len(self.seg_len)

    def _once(self, name: str, make: Callable[[], Any]) -> Any:
        """``make()``, computed on first use and kept in the instance (``functools.cached_property``
        takes a lock per read on Python 3.11, which shows at one row per stream)."""
        cached = self.__dict__.get(name)
        if cached is None:
            cached = self.__dict__[name] = make()
        return cached

    @property
    def max_len(self) -> int:
        return self._once("_max_len", lambda: int(self.seg_len.max()) if len(self.seg_len) else 0)

    @property
    def releases(self) -> bool:
        """Some key's stream ends in this batch (``key_released.any()``, found once per plan)."""
        return self._once("_releases", lambda: bool(self.key_released.any()))

    @property
    def carries(self) -> bool:
        """Every segment starts from its key's stored carries, as far as the rows tell (``seg_carry.all()``,
        found once per plan; new keys start from zeros all the same)."""
        return self._once("_carries", lambda: bool(self.seg_carry.all()))

    @property
    def layout(self) -> str:
        """"identity": ``proc_rows`` is 0..n-1; "time_major": row ``t * S + s`` is step ``t`` of segment
        ``s`` (S segments of equal length), so padded batches are a transposed view; else "permuted".
        Found on first use (step mode never asks)."""
        if self.known_layout is None:
            self.known_layout = _layout(self.proc_rows, self)
        return self.known_layout

    @property
    def period(self) -> int | None:
        """``P`` for the shared plan of batches recorded live (:func:`periodic_plan`), else None."""
        return self.__dict__.get("_period")

    @property
    def uniform(self) -> bool:
        """Every segment has the same length, so the padded batch is a plain reshape."""
        return len(self.seg_len) == 0 or self.max_len == int(self.seg_len.min())


def _order_by_key(group: np.ndarray, first_row: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by key (stable), keys in order of first appearance; and where each key starts.

    First-appearance order makes a batch whose rows go "step t of every stream, then step t + 1" the
    exact transpose of the padded batch (the "time_major" layout), and a batch already grouped by
    stream the identity.

    Each row is tagged with its key's first row (``first_row`` when the lookup found it, else through
    a table indexed by value when the group values span a small range: slots of a batch's streams,
    mostly), and one stable sort of those tags (a radix sort when they fit 16 bits) gives the order;
    otherwise two sorts do."""
    n = len(group)
    tag = first_row
    if tag is None:
        low, high = int(group.min()), int(group.max())
        if high - low >= 4 * n + 4096:
            return _order_by_sorting(group)
        first = np.empty(high - low + 1, np.int64)
        shifted = group - low
        first[shifted[::-1]] = arange(n)[::-1]   # the last write wins: each value's first row
        tag = first[shifted]
    if n <= 1 << 16:
        tag = tag.astype(np.uint16)
    order = tag.argsort(kind="stable")
    return order, _run_starts(tag[order])


def _order_by_sorting(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_order_by_key` for group values spread over a wide range: two sorts."""
    n = len(group)
    order = group.argsort(kind="stable")
    key_start = _run_starts(group[order])
    key_first = _starts(key_start)
    firsts = order[key_first]
    if (firsts[1:] > firsts[:-1]).all():   # keys already in order of first appearance
        return order, key_start
    tag = firsts.repeat(_lengths(key_first, n))   # each row's key's first row
    order = order[tag.argsort(kind="stable")]
    return order, _run_starts(np.sort(tag))


def plan_rows(group: np.ndarray, distinct: bool, reset: np.ndarray | None, end: np.ndarray | None,
              backwards: bool, first_row: np.ndarray | None = None) -> RowPlan:
    """The plan for rows whose keys are ``group`` (equal values = same key); ``first_row``: each row's
    key's first row when known (see :class:`~streamlstm.runtime.keys.Lookup`)."""
    n = len(group)
    if distinct:
        return _one_row_per_key(n, reset, end)
    if (reset is None or not reset.any()) and (end is None or not end.any()):
        period = recorded_period(group) if n >= PERIODIC_ROWS else None
        if period is not None:
            return periodic_plan(n, period, backwards)
        return _one_segment_per_key(group, backwards, first_row)
    order, key_start = _order_by_key(group, first_row)
    life_start = key_start.copy()
    if end is not None:
        life_start[1:] |= end[order][:-1]
    life_first = np.flatnonzero(life_start)
    life_len = np.diff(np.append(life_first, n))
    life_of = np.cumsum(life_start) - 1
    proc_rows = order
    if backwards:  # reverse each life in place
        position = np.arange(n) - life_first[life_of]
        target = life_first[life_of] + life_len[life_of] - 1 - position
        proc_rows = np.empty_like(order)
        proc_rows[target] = order
    seg_start = life_start.copy()
    if reset is not None:
        seg_start |= reset[proc_rows]
    seg_first = np.flatnonzero(seg_start)
    seg_len = np.diff(np.append(seg_first, n))
    seg_of = np.cumsum(seg_start) - 1
    pos_in_seg = np.arange(n) - seg_first[seg_of]
    key_of_p = np.cumsum(key_start) - 1            # keys keep their blocks in processing order
    key_first = np.flatnonzero(key_start)
    key_last = np.append(key_first[1:], n) - 1
    first_reset = reset[proc_rows[seg_first]] if reset is not None else np.zeros(len(seg_first), bool)
    key_of_row = np.empty(n, np.int64)
    key_of_row[order] = key_of_p
    plan = RowPlan(
        num_rows=n, proc_rows=proc_rows, seg_first=seg_first, seg_len=seg_len,
        pos_in_seg=None if (seg_len == 1).all() else pos_in_seg,
        seg_carry=key_start[seg_first] & ~first_reset,
        seg_key=key_of_p[seg_first], key_rows=order[key_first], key_last_row=order[key_last],
        key_last_seg=seg_of[key_last],
        key_released=end[order[key_last]] if end is not None else np.zeros(len(key_first), bool),
        key_of_row=key_of_row,
    )
    return plan


def _one_segment_per_key(group: np.ndarray, backwards: bool, first_row: np.ndarray | None = None) -> RowPlan:
    """The plan when no row resets or ends a stream: each key's rows are one segment (the common case
    of live traffic, with half the operations of the general plan)."""
    n = len(group)
    order, key_start = _order_by_key(group, first_row)
    seg_first = _starts(key_start)
    keys = len(seg_first)
    seg_len = _lengths(seg_first, n)
    key_of_p = np.repeat(arange(keys), seg_len)   # (a bool cumsum converts first: several times slower)
    pos_in_seg = arange(n) - seg_first[key_of_p]
    key_of_row = np.empty(n, np.int64)
    key_of_row[order] = key_of_p
    seg_last = seg_first + seg_len - 1
    proc_rows = order
    if backwards:   # each key's rows last to first
        proc_rows = order[seg_last[key_of_p] - pos_in_seg]
    per_key = arange(keys)
    plan = RowPlan(
        num_rows=n, proc_rows=proc_rows, seg_first=seg_first, seg_len=seg_len,
        pos_in_seg=None if keys == n else pos_in_seg, seg_carry=_flags(keys, True),
        seg_key=per_key, key_rows=order[seg_first], key_last_row=order[seg_last],
        key_last_seg=per_key, key_released=_flags(keys, False), key_of_row=key_of_row,
    )
    plan.__dict__["_seg_of"] = key_of_p   # the segment of each processing position, for step_layout
    plan.__dict__["_max_len"] = int(seg_len.max())
    return plan


def recorded_period(group: np.ndarray) -> int | None:
    """``P`` when the rows go "one row of each of P streams, then the same P streams in the same order
    again, ..." (``group[i] == group[i % P]`` with ``group[:P]`` distinct and ``P < n``): a recording of
    P streams stored as recorded live, cut into batches at any row. Else None.

    ``P`` can only be the first repeat of the first row's key; the two checks are then one comparison
    of the batch with itself shifted by ``P`` and one of ``P`` keys: a few passes over the keys, instead
    of the sorts of a plan."""
    n = len(group)
    if n < 2:
        return None
    again = (group[1:] == group[0]).argmax() + 1   # 1 when there is no repeat: then the check fails
    period = int(again)
    if period >= n or group[period] != group[0] or not (group[period:] == group[:n - period]).all():
        return None
    head = group[:period]
    low, high = int(head.min()), int(head.max())
    if high - low < 4 * period + 4096:
        distinct = int(np.bincount(head - low).max()) == 1
    else:
        ordered = np.sort(head)
        distinct = bool((ordered[1:] != ordered[:-1]).all())
    return period if distinct else None


@functools.lru_cache(maxsize=4)
def periodic_plan(n: int, period: int, backwards: bool) -> RowPlan:
    """The plan of every batch of ``n`` rows with period ``period`` (see :func:`recorded_period`).

    A plan depends on which rows share a key and in what order keys first appear, never on the key
    values (those are placed by the lookup: key ``k`` of the plan is the batch's row ``k``). So every
    such batch has the plan of ``0, 1, .., P - 1, 0, 1, ..``: it is made once, with its layouts
    (``step_layout``, ``ragged_layout``, cached on it), and shared; nothing writes a plan's arrays. A
    replay cut into batches of a fixed size has at most two such shapes (the full batches and the
    last one), per direction of the layers, which is why four are kept (each holds a few int64
    arrays of ``n``)."""
    plan = _one_segment_per_key(arange(n) % period, backwards)
    plan.__dict__["_period"] = period
    for values in vars(plan).values():   # shared between batches and runtimes: a write would be a bug
        if isinstance(values, np.ndarray):
            values.flags.writeable = False
    return plan


def _layout(proc_rows: np.ndarray | None, plan: RowPlan) -> str:
    if proc_rows is None:
        return "identity"
    n = len(proc_rows)
    if (proc_rows == arange(n)).all():
        return "identity"
    if plan.uniform:
        segments, steps = plan.num_segments, plan.max_len
        if (proc_rows.reshape(segments, steps) == np.arange(n).reshape(steps, segments).T).all():
            return "time_major"
    return "permuted"


def _one_row_per_key(n: int, reset: np.ndarray | None, end: np.ndarray | None) -> RowPlan:
    if reset is None and end is None and n <= len(_ARANGE):
        return _distinct_plan(n)
    return _distinct_rows(n, reset, end)


@functools.lru_cache(maxsize=8)
def _distinct_plan(n: int) -> RowPlan:
    """The plan of every batch of ``n`` distinct keys without reset or end columns (a live fleet, in
    any order: its keys are placed by the lookup), made once with its step layout and shared, as
    :func:`periodic_plan` is; its arrays are read-only views of shared ones."""
    plan = _distinct_rows(n, None, None)   # its step layout is derived on first use, once for all sharing it
    plan.__dict__.update(_releases=False, _carries=True)   # no end or reset column
    return plan


def _distinct_rows(n: int, reset: np.ndarray | None, end: np.ndarray | None) -> RowPlan:
    rows = arange(n)
    return RowPlan(
        num_rows=n, proc_rows=None, seg_first=rows, seg_len=_ONES[:n] if n <= len(_ONES) else np.ones(n, np.int64),
        pos_in_seg=None,
        seg_carry=_flags(n, True) if reset is None else ~reset, seg_key=rows, key_rows=rows,
        key_last_row=rows, key_last_seg=rows,
        key_released=_flags(n, False) if end is None else end.copy(), key_of_row=rows, known_layout="identity",
    )
