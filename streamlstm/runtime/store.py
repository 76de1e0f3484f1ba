"""StreamStore: the one owner of every stream's state.

It holds three things, and nothing else writes them:

- the **key index** (:class:`~streamlstm.runtime.keys.KeyIndex`): stream key -> slot;
- the **carry slabs** (:class:`~streamlstm.runtime.slabs.CarrySlabs`): each slot's LSTM states and
  ``has_output`` flags;
- the **bookkeeping** per slot, as numpy arrays that others may read but never write: ``live``,
  ``key_group`` (see :func:`~streamlstm.runtime.key_groups.key_group`), ``last_used`` (row stamp, for
  LRU eviction), ``last_batch`` and ``last_seen`` (batch number and clock, for TTL eviction),
  ``last_time`` and ``has_time`` (the time column's last value).

The public methods are the whole interface: :meth:`lookup` and :meth:`find` resolve keys, :meth:`gather`
reads carries, :meth:`commit` writes a batch's results (the single writer of a feed), :meth:`release`,
:meth:`zero`, :meth:`put` (set one stream's carries), :meth:`export` and :meth:`import_streams` move
streams between stores, and :meth:`compact` gives memory back after streams left (the slabs' and the
process heap's, see :mod:`~streamlstm.runtime.heap`).

``generation`` changes whenever a slot that held a stream is freed or moved, so a plan cached for a
batch of keys (their slots) stays valid while it is unchanged. ``version`` changes on every write, so a
batch computed from the carries (a prepared feed) can tell whether they are still the ones it read.

Slots are handed out lowest first from a free stack; capacity doubles when it runs out (untouched
capacity costs no memory, see :mod:`~streamlstm.runtime.slabs`), and :meth:`compact` shrinks it when
fewer than a quarter of the slots are live.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.arrow import as_tensor
from streamlstm.errors import StateError
from streamlstm.runtime import heap
from streamlstm.runtime.key_groups import key_group_of_hashes, stable_hash
from streamlstm.runtime.keys import KeyIndex, Lookup
from streamlstm.runtime.placement import Placement, Stamp
from streamlstm.runtime.slabs import CarrySlabs, index_tensor

__all__ = ["StreamStore"]

_BOOKKEEPING = ("live", "key_group", "last_used", "last_batch", "last_seen", "last_time", "has_time")


class StreamStore:
    """Every stream's key, carries and bookkeeping (see the module docstring).

    Args:
        stage_sizes: per recurrent stage, the flat state sizes (``[h, c]`` per LSTM cell).
        dtype, device: of the carries.
        capacity (int, 1024): initial number of slots.
        key_groups (int, 128): number of key groups (fixed for the life of the state).
    """

    def __init__(self, stage_sizes: list[list[int]], dtype: torch.dtype, device: torch.device, *,
                 capacity: int = 1024, key_groups: int = 128) -> None:
        self.initial_capacity = max(int(capacity), 16)
        self.key_groups = key_groups
        self.slabs = CarrySlabs(stage_sizes, dtype, device, self.initial_capacity)
        self._index: KeyIndex | None = None
        dtypes = (bool, np.int32, np.int64, np.int64, np.float64, np.int64, bool)
        self._arrays = {name: np.zeros(self.initial_capacity, dtype) for name, dtype in zip(_BOOKKEEPING, dtypes)}
        # The stamp of the last steady-state commit, written into the arrays when anyone reads them: a
        # fleet fed the same way every batch then costs one tuple per batch instead of array writes.
        # (start, count, stamp, offset, keys): key i of the stamp has slot start + (i + offset) % count,
        # or, when ``keys`` is set, key keys[j] has slot start + j (a fleet in a new order every batch).
        self._pending: tuple[int, int, Stamp, int, np.ndarray | None] | None = None
        self._free = np.arange(self.initial_capacity - 1, -1, -1, dtype=np.int64)   # pop from the end
        self._free_count = self.initial_capacity
        self.generation = 0
        self.version = 0

    # -- bookkeeping (read-only for others) ----------------------------------------------------------
    def _flush(self) -> None:
        if self._pending is not None:
            start, count, stamp, offset, keys = self._pending
            self._pending = None
            if keys is not None:
                self._stamp(np.arange(start, start + count), stamp, keys, start)
            elif offset:   # a rotated range: key i has slot start + (i + offset) % count
                self._stamp(start + (np.arange(count) + offset) % count, stamp, None, None)
            else:
                self._stamp(np.arange(start, start + count), stamp, None, start)

    def _array(self, name: str) -> np.ndarray:
        if self._pending is not None:
            self._flush()
        return self._arrays[name]

    live = property(lambda self: self._array("live"), doc="bool [capacity]: the slot holds a stream")
    key_group = property(lambda self: self._array("key_group"), doc="int32 [capacity]: each stream's key group")
    last_used = property(lambda self: self._array("last_used"), doc="int64 [capacity]: row stamp (LRU)")
    last_batch = property(lambda self: self._array("last_batch"), doc="int64 [capacity]: last batch number")
    last_seen = property(lambda self: self._array("last_seen"), doc="float64 [capacity]: clock when last fed")
    last_time = property(lambda self: self._array("last_time"), doc="[capacity]: the time column's last value")
    has_time = property(lambda self: self._array("has_time"), doc="bool [capacity]: last_time is set")

    # -- reading ------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The carries' dtype (the model's)."""
        return self.slabs.dtype

    @property
    def capacity(self) -> int:
        return self.slabs.capacity

    @property
    def key_kind(self) -> str | None:
        """``"int"`` or ``"str"`` once a stream was created, else None."""
        return None if self._index is None else self._index.kind

    def __len__(self) -> int:
        return self.capacity - self._free_count

    def lookup(self, keys: pa.Array, kind: str) -> Lookup:
        """Resolve a validated key column of ``kind``; changes nothing (new keys get ``-1``)."""
        index = self._index if self._index is not None else KeyIndex(kind)
        return index.lookup(keys)

    def find(self, key: Any) -> int:
        """The slot of one Python key, or -1."""
        return -1 if self._index is None else self._index.find(key)

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.live)

    def keys_of(self, slots: np.ndarray) -> np.ndarray:
        """The keys held at ``slots`` (int64 values or Python strings)."""
        if self._index is None:
            return np.empty(0, np.int64)
        return self._index.slot_keys[slots]

    def gather(self, stage: int, slots: np.ndarray, carry: np.ndarray | None, need_has: bool,
               start: int | None = -1,
               rotation: tuple[int, int] | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Carries of ``stage`` read at ``slots`` (zeros where ``carry`` is False); see
        :meth:`CarrySlabs.gather`."""
        return self.slabs.gather(stage, slots, carry, need_has, start, rotation)

    def read(self, slots: np.ndarray) -> list[tuple[list[np.ndarray], np.ndarray]]:
        """Copies of the carries of ``slots``: per stage, the flat states and ``has_output``."""
        return self.slabs.read(slots)

    def nbytes(self) -> int:
        """Bytes of state held for the live streams (carries, bookkeeping, key index)."""
        per_slot = sum(array.itemsize for array in self._arrays.values()) + 8 + 3 * 8
        return self.slabs.nbytes(len(self)) + per_slot * len(self)

    # -- slots --------------------------------------------------------------------------------------
    def _allocate(self, count: int) -> np.ndarray:
        if count > self._free_count:
            self._resize(max(len(self) + count, 2 * self.capacity))
        top = self._free_count
        slots = self._free[top - count:top][::-1].copy()
        self._free_count -= count
        self.live[slots] = True
        self.has_time[slots] = False
        return slots

    def _resize(self, capacity: int, order: np.ndarray | None = None) -> None:
        """Grow (order None: slots keep their numbers) or compact (slot ``order[i]`` becomes ``i``)."""
        self.version += 1
        self._flush()
        old = self.capacity
        self.slabs.resize(capacity, order)
        kept = np.arange(min(old, capacity)) if order is None else order
        for name, array in self._arrays.items():
            moved = np.zeros(capacity, array.dtype)
            moved[:len(kept)] = array[kept]
            self._arrays[name] = moved
        if order is None:   # lower slots first: new ones go below the old free ones
            free = np.concatenate([np.arange(capacity - 1, old - 1, -1, dtype=np.int64),
                                   self._free[:self._free_count]])
        else:
            free = np.arange(capacity - 1, len(order) - 1, -1, dtype=np.int64)
            if self._index is not None:
                self._index.move(order, capacity)
            self.generation += 1
        self._free, self._free_count = free, len(free)

    def release(self, slots: np.ndarray) -> None:
        """Forget the streams at ``slots`` (their keys and carries)."""
        if not len(slots):
            return
        self.version += 1
        self._index.remove(slots)
        self.live[slots] = False
        needed = self._free_count + len(slots)
        if needed > len(self._free):
            self._free = np.concatenate([self._free, np.zeros(needed - len(self._free), np.int64)])
        self._free[self._free_count:needed] = slots
        self._free_count = needed
        self.generation += 1

    def compact(self) -> bool:
        """Give memory back after streams were released: move the live streams to the lowest slots and
        shrink the slabs when fewer than a quarter of the slots are live (the memory of departed streams
        goes back to the operating system), and hand the process heap's free pages back
        (:func:`~streamlstm.runtime.heap.give_back`, rate-limited). Returns whether the slabs shrank."""
        live = len(self)
        shrink = self.capacity > self.initial_capacity and live * 4 <= self.capacity
        if shrink:
            self._resize(max(self.initial_capacity, 2 * live), self.live_slots())
        heap.give_back()
        return shrink

    # -- writing ------------------------------------------------------------------------------------
    def set_key_kind(self, kind: str) -> None:
        """Fix the key kind before any stream exists (a restored runtime that held none)."""
        self._ensure_index(kind)

    def _ensure_index(self, kind: str) -> KeyIndex:
        if self._index is None:
            self._index = KeyIndex(kind)
        return self._index

    def _groups(self, keys: pa.Array, rows: np.ndarray, lookup: Lookup) -> np.ndarray:
        hashes = lookup.hashes[rows] if lookup.hashes is not None else stable_hash(keys.take(pa.array(rows)))
        return key_group_of_hashes(hashes, self.key_groups)

    def commit(self, placement: Placement, finals: list[list[torch.Tensor]],
               has_output: list[torch.Tensor | None], stamp: Stamp, order: np.ndarray | None = None) -> np.ndarray:
        """Write one batch's results, the single writer of a feed.

        Per key of the batch (see :class:`Placement`): the final carries ``finals`` (per stage, flat
        states [keys, size]) and ``has_output`` (per stage [keys] or None = all True) are stored, new
        keys get slots, ended streams are released, and ``stamp`` is recorded. ``order``: row ``i`` of
        ``finals`` and ``has_output`` belongs to key ``order[i]`` (None: key ``i``). Returns the slot
        of each key (-1 where released)."""
        self.version += 1
        if placement.settled:   # the steady state: the same streams again
            slots = placement.key_slots
            # Finals in slot order (see execute._slot_order) make a range, finals in the order a
            # recording's next batch reads them (compute.run_stage_ragged) a rotated range, found by
            # write_states (False: not known).
            written, at = (slots, placement.start) if order is None else placement.in_order(order)
            rotation = placement.rotation if order is None else False
            flagged = True
            for stage, (states, has) in enumerate(zip(finals, has_output)):
                if has is None and placement.flagged:   # has_output is True already (see Placement)
                    self.slabs.write_states(stage, written, states, at, rotation)
                else:
                    self.slabs.write(stage, written, states, has, at, adopt=True)
                    flagged = flagged and has is None
            placement.flagged = flagged
            keys = order if order is not None and at is not None else None   # key order[j] has slot at + j
            first, offset = (at, 0) if keys is not None else placement.turn
            if first is None or stamp.times is not None:
                self._stamp(written if keys is not None else slots, stamp, keys, first if not offset else None)
            else:   # written when read (see _flush); a newer stamp of the same slots replaces it
                if self._pending is not None and self._pending[:2] != (first, len(slots)):
                    self._flush()
                self._pending = (first, len(slots), stamp, offset, keys)
            return slots
        if order is not None:   # into key order
            back = np.empty_like(order)
            back[order] = np.arange(len(order))
            index = index_tensor(back, self.slabs.device)
            finals = [[s.index_select(0, index) for s in states] for states in finals]
            has_output = [None if has is None else has.index_select(0, index) for has in has_output]
        released, key_slots = placement.released, placement.key_slots
        keep = ~released
        slots = key_slots.copy()
        new = keep & (key_slots < 0)
        if new.any():
            slots[new] = self._allocate(int(new.sum()))
        slots[released] = -1
        chosen = None if keep.all() else index_tensor(np.flatnonzero(keep), self.slabs.device)
        kept_slots = slots if chosen is None else slots[keep]
        for stage, (states, has) in enumerate(zip(finals, has_output)):
            if chosen is not None:
                states = [s.index_select(0, chosen) for s in states]
                has = None if has is None else has.index_select(0, chosen)
            self.slabs.write(stage, kept_slots, states, has, adopt=True)   # a commit hands its finals over
        if new.any():
            rows, keys = placement.key_rows[new], placement.keys
            self._ensure_index(placement.kind).insert(keys, rows, slots[new], placement.lookup)
            self.key_group[slots[new]] = self._groups(keys, rows, placement.lookup)
        gone = (key_slots >= 0) & released
        if gone.any():
            self.release(key_slots[gone])
        self._stamp(kept_slots, stamp, None if chosen is None else keep, None)
        # Every key kept with has_output True: the next batch of the same streams (a recording's, a
        # fleet's with new keys in this one) writes its states only, as a settled batch does.
        placement.flagged = chosen is None and all(has is None for has in has_output)
        return slots

    def _stamp(self, slots: np.ndarray, stamp: Stamp, keep: np.ndarray | None, start: int | None) -> None:
        """Record ``stamp`` at ``slots`` (``start``: their contiguous_start when known); ``keep``: the
        stamp's keys those slots hold, in their order (a bool mask or key numbers; None: all, in order)."""
        if self._pending is not None:   # older than this stamp: written first
            self._flush()
        at = slice(start, start + len(slots)) if start is not None else slots
        arrays = self._arrays
        arrays["last_used"][at] = stamp.last_used if keep is None else stamp.last_used[keep]
        arrays["last_batch"][at] = stamp.batch
        arrays["last_seen"][at] = stamp.now
        if stamp.times is not None:
            arrays["last_time"][at] = stamp.times if keep is None else stamp.times[keep]
            arrays["has_time"][at] = True

    def set_time_floating(self) -> None:
        """Store ``last_time`` as float64 (the time column is a float column)."""
        self._arrays["last_time"] = self.last_time.astype(np.float64)

    def zero(self, slots: np.ndarray | None = None) -> None:
        """Zero the carries and ``has_output`` of ``slots`` (every live stream when None)."""
        self.version += 1
        self.slabs.zero(self.live_slots() if slots is None else slots)
        self.generation += 1   # placements that know has_output is True are out of date

    def put(self, key: Any, kind: str, states: list[list[torch.Tensor]], stamp: Stamp) -> None:
        """Set one stream's carries (creating it when new); its ``has_output`` becomes False."""
        self.version += 1
        index = self._ensure_index(kind)
        slot = index.find(key)
        if slot < 0:
            slot = int(self._allocate(1)[0])
            values = np.array([key], dtype=index.slot_keys.dtype)
            index.insert_values(values, np.array([slot]))
            self.key_group[slot] = key_group_of_hashes(stable_hash(pa.array([key])), self.key_groups)[0]
            self.last_used[slot], self.last_batch[slot], self.last_seen[slot] = stamp.last_used, stamp.batch, stamp.now
        self.generation += 1   # a new stream, or has_output turned False (see zero)
        row = np.array([slot])
        for stage, values in enumerate(states):
            self.slabs.write(stage, row, [v.reshape(1, -1) for v in values],
                             torch.zeros(1, dtype=torch.bool))

    # -- moving streams -----------------------------------------------------------------------------
    def export(self, slots: np.ndarray) -> dict[str, Any]:
        """Everything held for ``slots``, as numpy arrays: ``keys``, ``key_group``, ``last_used``,
        ``last_batch``, ``last_seen``, ``last_time`` and ``has_time``, and ``carries`` (see
        :meth:`read`)."""
        result: dict[str, Any] = {name: getattr(self, name)[slots] for name in _BOOKKEEPING if name != "live"}
        result["keys"] = self.keys_of(slots)
        result["carries"] = self.read(slots)
        return result

    def import_streams(self, kind: str, keys: np.ndarray, columns: dict[str, np.ndarray],
                       carries: list[tuple[list[np.ndarray], np.ndarray]]) -> np.ndarray:
        """Add streams (keys not held yet; the caller validated everything): ``columns`` holds the
        bookkeeping arrays named as in :meth:`export`, ``carries`` the per-stage states and flags.
        Returns their slots."""
        self.version += 1
        index = self._ensure_index(kind)
        if kind != index.kind:
            raise StateError(f"this runtime's keys are {index.kind} keys, the imported ones are {kind} keys")
        slots = self._allocate(len(keys))
        index.insert_values(keys, slots)
        hashes = stable_hash(pa.array(keys.tolist() if kind == "str" else keys,
                                      pa.large_string() if kind == "str" else pa.int64()))
        self.key_group[slots] = key_group_of_hashes(hashes, self.key_groups)
        for name, values in columns.items():
            self._array(name)[slots] = values
        device = self.slabs.device
        for stage, (states, has) in enumerate(carries):
            self.slabs.write(stage, slots, [as_tensor(s) for s in states], as_tensor(has).to(device))
        self.generation += 1
        return slots
