"""Vectorized stream key -> slot lookup for integer and string keys.

Integer keys live in two sorted numpy arrays (keys, slots) searched with ``np.searchsorted``; while
every key held is a small non-negative integer (below ``4 * count + 65,536``: sensor ids, row numbers)
a dense table ``slot = table[key]`` answers lookups instead, one gather per batch; a batch recorded
live (``P`` streams, one row each, again and again: :func:`~streamlstm.runtime.segments.recorded_period`)
looks up its first ``P`` keys only. String
keys are first hashed to 64 bits with :func:`~streamlstm.runtime.key_groups.stable_hash` (vectorized
over the Arrow buffers; the same hash gives each stream its key group), so they go through the same
sorted-array lookup; every
hit is verified against the stored key string, and the first hash collision ever seen switches the
index to an exact ``dict`` (correct, slower). Dictionary-encoded keys are resolved through their
dictionary. No step of a lookup loops over rows in Python.

Besides the slot map the index keeps each slot's key (``slot_keys``) so that ``keys()``, eviction
callbacks and exports can name streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamlstm.runtime import segments
from streamlstm.runtime.key_groups import stable_hash
from streamlstm.runtime.slabs import range_order

__all__ = ["KeyIndex", "Lookup"]

_NO_ROWS = np.empty(0, np.int64)   # the new rows of a batch whose keys are all held (shared, read-only)
_NO_ROWS.flags.writeable = False


@dataclass
class Lookup:
    """The keys of one batch resolved against the index (nothing inserted yet).

    ``slots[row]`` is the stream's slot or -1 for a key not in the index; ``group[row]`` is equal for
    rows of the same key (the slot for known keys, ``-1 - j`` for the j-th new key); ``new_rows`` holds
    one row per new key, in the order of ``j``; ``distinct`` says whether every row has its own key;
    ``hashes`` holds each row's :func:`~streamlstm.runtime.key_groups.stable_hash` for string keys;
    ``first_row[row]`` the first row of the same key, when every key is held (found on the way to
    ``distinct``; the row planner groups rows by it), else None. ``slot_range``: when the rows' keys are
    held, distinct, and their slots are ``first .. first + n - 1`` in some order (a fleet whose rows
    come in a new order every batch), :func:`~streamlstm.runtime.slabs.range_order`'s ``(first, order,
    rank)`` of ``slots``; else None.
    """

    slots: np.ndarray
    group: np.ndarray
    new_rows: np.ndarray
    distinct: bool
    hashes: np.ndarray | None = None
    first_row: np.ndarray | None = None
    slot_range: tuple[int, np.ndarray, np.ndarray] | None = None

    def repeated(self, rows: int) -> Lookup:
        """This lookup of one round of distinct int keys, for ``rows`` (more) rows that repeat the round:
        row ``i`` has the key of row ``i % len(round)``. Its first appearances stay where they were."""
        return _Repeated(self, rows)


class _Repeated(Lookup):
    """:meth:`Lookup.repeated`, whose per-row ``slots`` and ``group`` are made on first use (a batch
    that continues a recording, see :meth:`BatchPlan.continued`, never needs them)."""

    def __init__(self, round_: Lookup, rows: int) -> None:   # not the dataclass __init__: lazy fields
        self._round, self._rows, self._made = round_, rows, {}
        self.new_rows, self.distinct, self.hashes, self.slot_range = round_.new_rows, False, None, None

    def _per_row(self, name: str) -> np.ndarray:
        made = self._made.get(name)
        if made is None:
            values = getattr(self._round, name)
            shared = name == "group" and self._round.group is self._round.slots
            made = self._made[name] = self.slots if shared else np.resize(values, self._rows)   # the round, repeated
        return made

    slots = property(lambda self: self._per_row("slots"))
    group = property(lambda self: self._per_row("group"))


def _plain_strings(keys: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(keys.type):
        return keys.dictionary.take(keys.indices)
    return keys


class KeyIndex:
    """Key -> slot map for one key kind (``"int"`` or ``"str"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._sorted = np.empty(0, np.int64 if kind == "int" else np.uint64)
        self._sorted_slots = np.empty(0, np.int64)
        self._exact: dict[str, int] | None = None   # string mode after a hash collision
        self.slot_keys: np.ndarray = np.empty(0, np.int64 if kind == "int" else object)
        self._scratch = np.empty(0, np.int64)
        self._dense: np.ndarray | None = None   # int keys: slot of each key value (-1: none); see _sync_dense

    def __len__(self) -> int:
        return len(self._exact) if self._exact is not None else len(self._sorted)

    # -- lookups -------------------------------------------------------------------------------
    def lookup(self, keys: pa.Array) -> Lookup:
        """Resolve a (validated, null-free) key column; read-only."""
        if self.kind == "int":
            values = self.int_values(keys)
            # A recording's rows (P streams, one row each, again and again): only the first round is looked up.
            period = segments.recorded_period(values) if len(values) >= segments.PERIODIC_ROWS else None
            if period is not None:
                head = values[:period]
                return self._lookup_sorted(head, None, self._dense_slots(head)).repeated(len(values))
            return self._lookup_sorted(values, None, self._dense_slots(values))
        if self._exact is not None:
            return self._lookup_exact(keys)
        hashes = stable_hash(keys)
        result = self._lookup_sorted(hashes, keys)
        if result is None:  # a collision: fall back to the exact map for good
            self._exact = {self.slot_keys[s]: int(s) for s in self._sorted_slots}
            return self._lookup_exact(keys)
        return result

    @staticmethod
    def int_values(keys: pa.Array) -> np.ndarray:
        """An int key column (plain or dictionary-encoded, validated) as int64 values (no copy when it
        is int64 already)."""
        if pa.types.is_dictionary(keys.type):
            values = keys.dictionary.to_numpy(zero_copy_only=False)[keys.indices.to_numpy(zero_copy_only=False)]
        else:
            values = keys.to_numpy(zero_copy_only=False)
        if values.dtype == np.uint64 and values.size and values.max() > np.iinfo(np.int64).max:
            from streamlstm.errors import StreamError
            row = int(np.argmax(values > np.iinfo(np.int64).max))
            raise StreamError(f"key {int(values[row])} at row {row} does not fit in int64")
        return values.astype(np.int64, copy=False)

    def _dense_slots(self, values: np.ndarray) -> np.ndarray | None:
        """Slots of int key ``values`` from the dense table (None: no table)."""
        table = self._dense
        if table is None or not len(values):
            return None
        if int(values.view(np.uint64).max()) < len(table):   # no key negative (huge as uint64) or beyond
            return table[values]
        inside = (values >= 0) & (values < len(table))   # keys outside the table are not held
        slots = np.full(len(values), -1, np.int64)
        slots[inside] = table[values[inside]]
        return slots

    def _lookup_sorted(self, values: np.ndarray, strings: pa.Array | None,
                       slots: np.ndarray | None = None) -> Lookup | None:
        if slots is not None:
            low = int(slots.min())   # the table gave slots for every row (values is not empty)
            if low >= 0:   # every key held
                return self._held(slots, None, low)
            found = slots >= 0
        elif len(self._sorted):
            slots = np.full(len(values), -1, np.int64)
            pos = np.searchsorted(self._sorted, values)
            pos[pos == len(self._sorted)] = 0
            found = self._sorted[pos] == values
            slots[found] = self._sorted_slots[pos[found]]
            if strings is not None and found.any() and not self._verify(strings, found, slots):
                return None
        else:
            slots = np.full(len(values), -1, np.int64)
            found = np.zeros(len(values), bool)
        hashes = values if strings is not None else None
        if found.all():
            return self._held(slots, hashes)
        group = slots.copy()
        missing = np.flatnonzero(~found)
        uniq, first, inverse = np.unique(values[missing], return_index=True, return_inverse=True)
        new_rows = missing[first]
        if strings is not None and len(uniq) < len(missing):
            rep = pc.take(_plain_strings(strings), pa.array(new_rows[inverse]))
            if not pc.all(pc.equal(rep, pc.take(_plain_strings(strings), pa.array(missing)))).as_py():
                return None
        order = np.argsort(new_rows, kind="stable")   # number new keys by first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        new_rows = new_rows[order]
        group[missing] = -1 - rank[inverse.reshape(-1)]
        distinct = self._distinct(slots, found, len(new_rows))
        return Lookup(slots, group, new_rows, distinct, hashes)

    def _held(self, slots: np.ndarray, hashes: np.ndarray | None, low: int | None = None) -> Lookup:
        """The lookup of rows whose keys are all held (steady traffic): group is the slots themselves.
        Slots that are one range in some order (a fleet in a new order every batch) are recognised by
        :func:`~streamlstm.runtime.slabs.range_order`, whose check proves the keys distinct at once;
        other slots get each row's first row (:meth:`_first_rows`). ``low``: ``slots.min()`` when known."""
        span = range_order(slots, low)
        if span is not None:   # each row its own first
            first_row = np.arange(len(slots)) if len(slots) >= 2 else None
            return Lookup(slots, slots, _NO_ROWS, True, hashes, first_row, span)
        first_row, distinct = self._first_rows(slots)
        return Lookup(slots, slots, _NO_ROWS, distinct, hashes, first_row)

    def _verify(self, strings: pa.Array, found: np.ndarray, slots: np.ndarray) -> bool:
        rows = np.flatnonzero(found)
        stored = pa.array(self.slot_keys[slots[rows]], type=pa.large_string())
        given = pc.take(_plain_strings(strings), pa.array(rows)).cast(pa.large_string())
        return bool(pc.all(pc.equal(stored, given)).as_py())

    def _lookup_exact(self, keys: pa.Array) -> Lookup:
        encoded = pc.dictionary_encode(_plain_strings(keys))
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        uniq_slots = np.array([self._exact.get(k, -1) for k in encoded.dictionary.to_pylist()], np.int64)
        slots = uniq_slots[codes]
        group = slots.copy()
        missing = np.flatnonzero(slots < 0)
        new_rows = np.empty(0, np.int64)
        if len(missing):
            _, first, inverse = np.unique(codes[missing], return_index=True, return_inverse=True)
            order = np.argsort(missing[first], kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            new_rows = missing[first][order]
            group[missing] = -1 - rank[inverse.reshape(-1)]
        return Lookup(slots, group, new_rows, self._distinct(slots, slots >= 0, len(new_rows)))

    def _first_rows(self, slots: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """Per row, the first row with the same slot (None for fewer than two rows), and whether every
        row is its own first (no key repeats): O(rows) with a scratch array indexed by slot, written last
        row first (the last write wins)."""
        if len(slots) < 2:
            return None, True
        if len(self._scratch) < len(self.slot_keys):
            self._scratch = np.zeros(len(self.slot_keys), np.int64)
        rows = np.arange(len(slots))
        self._scratch[slots[::-1]] = rows[::-1]
        first = self._scratch[slots]
        return first, bool((first == rows).all())

    def _distinct(self, slots: np.ndarray, found: np.ndarray | None, new_keys: int) -> bool:
        """Whether no key repeats (``found`` None: every row's key is held): O(rows) with a scratch
        array (a later write wins on a repeat)."""
        if found is not None and new_keys != len(slots) - int(found.sum()):
            return False
        if len(slots) - new_keys > len(self):   # more known rows than keys held: some key repeats
            return False
        known = slots if found is None else slots[found]
        if len(known) < 2:
            return True
        if len(self._scratch) < len(self.slot_keys):
            self._scratch = np.zeros(len(self.slot_keys), np.int64)
        ticket = np.arange(len(known))
        self._scratch[known] = ticket
        return bool((self._scratch[known] == ticket).all())

    # -- changes -------------------------------------------------------------------------------
    def key_values(self, keys: pa.Array, rows: np.ndarray) -> np.ndarray:
        """The keys of ``rows`` as stored per slot (int64 values or Python strings)."""
        if self.kind == "int":
            return self.int_values(keys)[rows]
        taken = pc.take(_plain_strings(keys), pa.array(rows, type=pa.int64()))
        return np.array(taken.to_pylist(), dtype=object)

    def insert(self, keys: pa.Array, rows: np.ndarray, slots: np.ndarray, lookup: Lookup) -> None:
        """Add the (new, distinct) keys of ``rows`` of the batch ``keys`` at ``slots``."""
        if not len(slots):
            return
        values = self.key_values(keys, rows)
        if self.kind == "str" and lookup.hashes is None:   # resolved by an exact map elsewhere
            self.insert_values(values, slots)
            return
        self._grow_slot_keys(int(slots.max()) + 1)
        self.slot_keys[slots] = values
        if self._exact is not None:
            self._exact.update(zip(values.tolist(), slots.tolist()))
            return
        self._add_sorted(values if self.kind == "int" else lookup.hashes[rows], slots)

    def insert_values(self, values: np.ndarray, new_slots: np.ndarray) -> None:
        """Add keys given as values (int64 or Python strings), e.g. from ``set_state`` or a saved file."""
        if not len(new_slots):
            return
        self._grow_slot_keys(int(new_slots.max()) + 1)
        self.slot_keys[new_slots] = values
        if self._exact is not None:
            self._exact.update(zip(list(values), new_slots.tolist()))
            return
        if self.kind == "int":
            self._add_sorted(np.asarray(values, np.int64), new_slots)
            return
        hashes = stable_hash(pa.array(list(values), type=pa.large_string()))
        taken = set(self._sorted.tolist())
        if len(np.unique(hashes)) < len(hashes) or any(h in taken for h in hashes.tolist()):
            self._exact = {self.slot_keys[s]: int(s) for s in self._sorted_slots}
            self._exact.update(zip(list(values), new_slots.tolist()))
            return
        self._add_sorted(hashes, new_slots)

    def _add_sorted(self, values: np.ndarray, slots: np.ndarray) -> None:
        order = np.argsort(values, kind="stable")
        values, slots = values[order], slots[order]
        at = np.searchsorted(self._sorted, values)   # merge: O(size + new log new), no full re-sort
        self._sorted = np.insert(self._sorted, at, values)
        self._sorted_slots = np.insert(self._sorted_slots, at, slots)
        if self.kind == "int":
            table = self._dense
            if table is not None and values[0] >= 0 and values[-1] < len(table):
                table[values] = slots
            else:
                self._sync_dense()

    def _sync_dense(self) -> None:
        """(Re)build the dense table of int keys from the sorted arrays, or drop it when the keys held
        are not all in ``[0, 4 * count + 65,536)`` (the table then would cost more than it saves)."""
        keys = self._sorted
        limit = 4 * len(keys) + 65_536
        if not len(keys) or keys[0] < 0 or keys[-1] >= limit:
            self._dense = None
            return
        table = np.full(min(limit, max(2 * (int(keys[-1]) + 1), 1024)), -1, np.int64)
        table[keys] = self._sorted_slots
        self._dense = table

    def _grow_slot_keys(self, size: int) -> None:
        if size > len(self.slot_keys):
            grown = np.empty(max(size, 2 * len(self.slot_keys)), self.slot_keys.dtype)
            if self.kind == "int":
                grown[:] = 0
            grown[:len(self.slot_keys)] = self.slot_keys
            self.slot_keys = grown

    def remove(self, slots: np.ndarray) -> None:
        """Forget the keys held at ``slots``."""
        if not len(slots):
            return
        if self._exact is not None:
            for key in self.slot_keys[slots].tolist():
                self._exact.pop(key, None)
        else:
            keep = ~np.isin(self._sorted_slots, slots)
            self._sorted, self._sorted_slots = self._sorted[keep], self._sorted_slots[keep]
            if self._dense is not None:
                self._dense[self.slot_keys[slots]] = -1
                if len(self._dense) > 4 * len(self._sorted) + 65_536:
                    self._sync_dense()
        if self.kind == "str":
            self.slot_keys[slots] = None

    def move(self, order: np.ndarray, capacity: int) -> None:
        """Renumber slots after the slabs were compacted: old slot ``order[i]`` is now slot ``i``."""
        mapping = np.full(max(len(self.slot_keys), 1), -1, np.int64)
        mapping[order] = np.arange(len(order))
        if self._exact is not None:
            self._exact = {key: int(mapping[slot]) for key, slot in self._exact.items()}
        else:
            self._sorted_slots = mapping[self._sorted_slots]
            if self._dense is not None:
                self._sync_dense()
        moved = np.empty(capacity, self.slot_keys.dtype)
        if self.kind == "int":
            moved[:] = 0
        moved[:len(order)] = self.slot_keys[order]
        self.slot_keys = moved
        self._scratch = np.empty(0, np.int64)

    def find(self, key: Any) -> int:
        """The slot of one Python key, or -1."""
        if self.kind == "int":
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not -2**63 <= key < 2**63:
                return -1   # not a key this index can hold: simply unknown
            array = pa.array([int(key)], pa.int64())
        else:
            if not isinstance(key, str):
                return -1
            array = pa.array([key], pa.large_string())
        return int(self.lookup(array).slots[0])

    def live_slots(self) -> np.ndarray:
        if self._exact is not None:
            return np.sort(np.fromiter(self._exact.values(), np.int64, len(self._exact)))
        return np.sort(self._sorted_slots)

