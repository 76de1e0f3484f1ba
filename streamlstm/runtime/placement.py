"""What a batch hands the :class:`~streamlstm.runtime.store.StreamStore`: where its keys live
(:class:`Placement`, resolved by the store's lookup; its derived facts are computed once and kept while
the store's ``generation`` is unchanged) and when its streams were used (:class:`Stamp`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from streamlstm.runtime.keys import Lookup
from streamlstm.runtime.slabs import contiguous_start, range_order, turned_range, whole_rotation

__all__ = ["Placement", "Stamp"]


@dataclass
class Stamp:
    """When a batch's streams were last used: per key its last row in the batch (``last_rows``; the
    row stamp for LRU is ``rows_before + last_rows``), the batch number, the clock, and the time
    column's last value per key (or None)."""

    last_rows: np.ndarray
    rows_before: int
    batch: int
    now: float
    times: np.ndarray | None = None

    @property
    def last_used(self) -> np.ndarray:
        return self.rows_before + self.last_rows


@dataclass
class Placement:
    """A batch's keys resolved against the store: ``keys`` (the batch's key column, of ``kind``),
    ``lookup``, and per key of the batch one row (``key_rows``), its slot or -1 when new
    (``key_slots``) and whether its stream ends in the batch (``released``).

    The runtime keeps a placement for the next batch with the same key column while the store's
    ``generation`` is unchanged, so what is derived from it is computed once (cached properties)."""

    keys: pa.Array
    kind: str
    lookup: Lookup
    key_rows: np.ndarray
    key_slots: np.ndarray
    released: np.ndarray

    flagged: bool = False   # a commit left has_output True for every key (kept while generation is unchanged)

    # Derived once, on first use (plain attributes: functools.cached_property takes a lock per read on
    # Python 3.11, which shows at one row per feed).
    @property
    def settled(self) -> bool:
        """Every key is held and none is released: the commit only writes carries and stamps."""
        value = self.__dict__.get("_settled")
        if value is None:
            # No new rows: every key was found, so every slot is >= 0.
            value = self.__dict__["_settled"] = not len(self.lookup.new_rows) and not self.released.any()
        return value

    @property
    def start(self) -> int | None:
        """The first slot when the keys' slots are consecutive (reads and writes are then slices)."""
        if "_start" not in self.__dict__:
            self.__dict__["_start"] = contiguous_start(self.key_slots)
        return self.__dict__["_start"]

    @property
    def rotation(self) -> tuple[int, int] | None:
        """:func:`whole_rotation` of the keys' slots when they are not consecutive (a recording's batch
        that starts mid-round): ``(first slot, offset)``, else None."""
        if "_rotation" not in self.__dict__:
            self.__dict__["_rotation"] = whole_rotation(self.key_slots) if self.start is None else None
        return self.__dict__["_rotation"]

    @property
    def slot_range(self) -> tuple[int, np.ndarray, np.ndarray] | None:
        """:func:`~streamlstm.runtime.slabs.range_order` of the keys' slots (one range of slots in some
        order: a fleet whose rows come in a new order every batch), from the lookup when it found it
        (then its rows are the keys: every key distinct), else found on first use."""
        if "_slot_range" not in self.__dict__:
            known = self.lookup.slot_range
            self.__dict__["_slot_range"] = known if known is not None and len(self.key_slots) == len(known[1]) \
                else range_order(self.key_slots)
        return self.__dict__["_slot_range"]

    def flag_as(self, before: Placement) -> None:
        """Know that has_output is True for every key when ``before`` (a placement committed since the
        store's ``generation`` last changed) knew it for its keys and both hold the same range of slots,
        in any order (a fleet whose rows come in a new order every batch): the commit then writes states
        only."""
        span = self.slot_range if self.lookup.slot_range is not None else None   # not looked for otherwise
        if before.flagged and span is not None and len(before.key_slots) == len(span[1]):
            known = before.slot_range
            self.flagged = known is not None and known[0] == span[0]

    def in_order(self, order: np.ndarray) -> tuple[np.ndarray, int | None]:
        """The keys' slots in ``order`` (``key_slots[order]``) and their :func:`contiguous_start`; no pass
        over the slots when ``order`` is :attr:`slot_range`'s, as computed (execute's slot order)."""
        span = self.__dict__.get("_slot_range")
        if span is not None and order is span[1]:
            return np.arange(span[0], span[0] + len(order)), span[0]
        written = self.key_slots[order]
        return written, contiguous_start(written)

    @property
    def turn(self) -> tuple[int | None, int]:
        """``(first, offset)`` when the keys' slots are one range, key ``i`` holding slot ``first + (i +
        offset) % n`` (offset 0: :attr:`start`; else :attr:`rotation`); ``(None, 0)`` otherwise."""
        start = self.start
        return (start, 0) if start is not None else self.rotation or (None, 0)

    def turn_of(self, before: Placement, shift: int) -> None:
        """Know :attr:`start` and :attr:`rotation` without a pass over the slots when they are ``before``'s
        turned by ``shift`` (``key_slots[i] = before.key_slots[(i + shift) % n]``: a recording's next
        batch, see :meth:`BatchPlan.continued <streamlstm.runtime.prepared.BatchPlan.continued>`) and
        ``before``'s are one range of slots, rotated or not."""
        first, offset = before.turn
        if first is not None:
            self.__dict__["_start"], self.__dict__["_rotation"] = turned_range(first, offset + shift,
                                                                               len(self.key_slots))

    @property
    def created(self) -> int:
        """How many keys are new."""
        return int((self.key_slots < 0).sum())
