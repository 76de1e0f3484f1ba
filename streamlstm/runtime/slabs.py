"""Carry slabs: every stream's LSTM states in preallocated tensors, addressed by slot.

Per recurrent stage ``s`` the slabs hold the flat states (``[h, c]`` per LSTM cell) as tensors
``[capacity, units]`` on the runtime's device, and ``has_output[s]`` (bool ``[capacity]``): whether the
stream has had a real step since it started or was reset. A masked step repeats the stream's previous
output, which for an LSTM is its current ``h`` when ``has_output`` and zeros otherwise, so no
previous-output slab is needed.

Memory: slabs are created with ``torch.empty``. Pages of a fresh allocation that are never written are
never made resident by the operating system, so spare capacity costs address space, not memory: the
process grows by the rows streams actually use. A slot's rows are always written before they are read
(a new stream's first segment starts from zeros by construction, see
:mod:`streamlstm.runtime.segments`), so no slot needs clearing.

Adopted rows: a fleet fed the same streams in the same order every batch writes one range of slots
with states known to be complete (``has_output`` True already, :meth:`CarrySlabs.write_states`). Its
new states are then not copied into the slabs: the slabs keep the batch's own tensors as the rows of
that range (``[start, start + count)`` of a stage), the next batch reads them as they are and replaces
them by its own. A recording replayed in batches that start mid-round writes the same range rotated
(:func:`rotated_split`); its states are adopted with their rotation (row ``i`` holds slot ``start + (i +
offset) % count``), and the next batch reads its own rotation of them (two slices; none when the
batch's finals came in the next batch's order: the fused cut kernel's ``h`` is then the last rows of
the batch's outputs, a view that keeps their buffer alive until the next batch). Anything else
that touches the stage's slabs first copies them in (:meth:`CarrySlabs.settle`). Nobody writes the
adopted tensors in place (compute never writes its inputs, and the runtime's output columns that may
share their memory are read-only Arrow arrays), so holding them is as good as holding a copy: a feed
of 10,000 rows saves two copies of [10000, units]. The same fleet in a new order every batch runs in
slot order (``execute._slot_order``), so its commits write that range too and are adopted the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from streamlstm.arrow import as_tensor

__all__ = ["CarrySlabs", "contiguous_start", "index_tensor", "range_order", "rotated_split", "turned_range",
           "whole_rotation"]

ROTATED_ROWS = 4096   # from this many slots, gathers and writes look for two runs (rotated_split)
# From this many slots a commit's states for one range of slots in another order are put in slot order
# and adopted (CarrySlabs.write); below, the few extra numpy calls cost more than the scatter saves.
PERMUTED_ROWS = 1024


def contiguous_start(slots: np.ndarray) -> int | None:
    """``slots[0]`` when ``slots`` is exactly ``slots[0], slots[0] + 1, ...`` (gathers and writes are
    then slices: a fleet fed in the same order every batch), else None."""
    n = len(slots)
    if n == 0 or slots[0] < 0 or slots[-1] - slots[0] != n - 1:
        return None
    # Given the span above, strictly increasing means consecutive.
    return int(slots[0]) if n == 1 or bool((slots[1:] > slots[:-1]).all()) else None


def rotated_split(slots: np.ndarray) -> int | None:
    """``k`` when ``slots[:k]`` and ``slots[k:]`` are each consecutive (``a, a + 1, ..`` then ``b, b + 1,
    ..``), for at least ``ROTATED_ROWS`` slots; else None. A recording's streams get their slots in
    order of first appearance, so a batch of it that starts mid-round reads and writes such a rotated
    range: two slices, about 2-3x cheaper than ``index_select``/``index_copy_`` on the CPU."""
    if len(slots) < ROTATED_ROWS or slots[0] < 0:
        return None
    breaks = (slots[1:] - slots[:-1] != 1).nonzero()[0]
    return int(breaks[0]) + 1 if len(breaks) == 1 and slots[breaks[0] + 1] >= 0 else None


def range_order(slots: np.ndarray, low: int | None = None) -> tuple[int, np.ndarray, np.ndarray] | None:
    """``(first, order, rank)`` when ``slots`` are ``first .. first + n - 1``, each once, in some order:
    ``slots[order]`` is that range in slot order and ``rank = slots - first`` (each slot's place in it).
    None when they are not one range of slots, repeat a slot, or hold -1 (a new key's). ``low``:
    ``slots.min()`` when the caller knows it.

    ``n`` slots spanning ``n`` values are distinct exactly when they fill every place of the range, so
    one scatter of the row numbers (into places marked -1) gives ``order`` and proves it: five passes."""
    n = len(slots)
    first = (int(slots.min()) if n else -1) if low is None else low
    if first < 0 or int(slots.max()) - first != n - 1:
        return None
    rank = slots - first
    order = np.empty(n, np.int64)
    order.fill(-1)
    order[rank] = np.arange(n)
    return (first, order, rank) if order.min() >= 0 else None


def whole_rotation(slots: np.ndarray) -> tuple[int, int] | None:
    """``(start, offset)`` when ``slots`` are the whole range ``start .. start + n - 1`` rotated (``slots[i]
    = start + (i + offset) % n``, ``0 < offset < n``, at least ``ROTATED_ROWS`` slots); else None."""
    split = rotated_split(slots)
    if split is None:
        return None
    n, start = len(slots), int(slots[split])
    return (start, n - split) if start + n - split == int(slots[0]) else None


def turned_range(first: int, offset: int, count: int) -> tuple[int | None, tuple[int, int] | None]:
    """``(contiguous_start, whole_rotation)`` of the slots ``first + (i + offset) % count`` (``first >=
    0``, ``count >= 1``), worked out without them."""
    offset %= count
    if not offset:
        return first, None
    return None, (first, offset) if count >= ROTATED_ROWS else None


def _halves(slots: np.ndarray, split: int) -> tuple[tuple[slice, int], tuple[slice, int]]:
    """The two runs of :func:`rotated_split`: (rows, first slot) each."""
    return (slice(0, split), int(slots[0])), (slice(split, len(slots)), int(slots[split]))


def index_tensor(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """``values`` (integers) as an int64 index tensor on ``device``. On the CPU it shares their memory
    (``torch.from_numpy``: a few times cheaper than ``torch.as_tensor``, which shows in per-feed cost);
    the caller uses it at once and does not keep it."""
    if values.dtype != np.int64 or not values.flags.c_contiguous:
        values = np.ascontiguousarray(values, np.int64)
    tensor = as_tensor(values)
    return tensor if device.type == "cpu" else tensor.to(device)


class CarrySlabs:
    """The states of ``stage_sizes`` (one list of flat state sizes per recurrent stage) for
    ``capacity`` slots."""

    def __init__(self, stage_sizes: list[list[int]], dtype: torch.dtype, device: torch.device,
                 capacity: int) -> None:
        self.stage_sizes = [list(sizes) for sizes in stage_sizes]
        self.dtype, self.device = dtype, device
        self.capacity = 0
        self.states: list[list[torch.Tensor]] = [[self._new(0, size) for size in sizes] for sizes in stage_sizes]
        self.has_output = [torch.zeros(0, dtype=torch.bool, device=device) for _ in stage_sizes]
        self._views: dict[tuple[int, int, int], tuple[list[torch.Tensor], torch.Tensor]] = {}
        # Per stage: (start, count, states, offset) adopted in place of those rows, row i of states holding
        # slot start + (i + offset) % count (see the module docstring).
        self._adopted: list[tuple[int, int, list[torch.Tensor], int] | None] = [None] * len(stage_sizes)
        self.resize(capacity)

    def _new(self, rows: int, size: int) -> torch.Tensor:
        return torch.empty(rows, size, dtype=self.dtype, device=self.device)

    def resize(self, capacity: int, order: np.ndarray | None = None) -> None:
        """New slabs of ``capacity`` rows. Row ``i`` takes old row ``order[i]`` (default: the first
        ``min(old, capacity)`` rows keep their place); other rows are left unwritten. The old slabs are
        dropped, so their memory goes back to the operating system."""
        self.settle()
        if order is None:
            order = np.arange(min(self.capacity, capacity))
        keep = index_tensor(order, self.device) if len(order) else None
        count = len(order)

        def moved(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            if keep is not None:
                torch.index_select(old, 0, keep, out=new[:count])
            return new

        with torch.no_grad():
            self.states = [[moved(old, self._new(capacity, size)) for old, size in zip(states, sizes)]
                           for states, sizes in zip(self.states, self.stage_sizes)]
            self.has_output = [moved(old, torch.empty(capacity, dtype=torch.bool, device=self.device))
                               for old in self.has_output]
        self.capacity = capacity
        self._views.clear()

    def settle(self, stage: int | None = None) -> None:
        """Copy the adopted rows of ``stage`` (every stage when None) into the slabs."""
        for number in range(len(self._adopted)) if stage is None else (stage,):
            adopted = self._adopted[number]
            if adopted is not None:
                self._adopted[number] = None
                start, count, states, offset = adopted
                for view, value in zip(self.views(number, start, count)[0], states):
                    view[offset:].copy_(value[:count - offset])
                    if offset:
                        view[:offset].copy_(value[count - offset:])

    def _adoptable(self, stage: int, start: int, states: list[torch.Tensor]) -> bool:
        """Whether ``states`` may stand for the rows from ``start`` (see the module docstring): the
        stage's adopted range is this one or none, and each tensor is contiguous, of the slabs' shape,
        dtype and device, without gradient, and not in the slabs' memory."""
        adopted, count = self._adopted[stage], states[0].shape[0]
        if adopted is not None and (adopted[0] != start or adopted[1] != count):
            return False
        dtype, device = self.dtype, self.device
        for value, slab, size in zip(states, self.states[stage], self.stage_sizes[stage]):   # size: slab.shape[1]
            if value.dtype != dtype or value.requires_grad or value.shape != (count, size) \
                    or not value.is_contiguous() or value.device != device:
                return False
            at, low = value.data_ptr(), slab.data_ptr()
            if low <= at < low + slab.nbytes:
                return False
        return True

    def views(self, stage: int, start: int, count: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The states and ``has_output`` of slots ``start .. start + count - 1`` as views of the slabs
        (kept until the slabs are reallocated: a fleet fed the same way every batch reads and writes the
        same ones); callers settle adopted rows first."""
        key = (stage, start, count)
        views = self._views.get(key)
        if views is None:
            if len(self._views) >= 64:
                self._views.clear()
            views = self._views[key] = ([slab.narrow(0, start, count) for slab in self.states[stage]],
                                        self.has_output[stage].narrow(0, start, count))
        return views

    def nbytes(self, slots: int) -> int:
        """Bytes used by ``slots`` rows of every slab."""
        per_row = sum(size for sizes in self.stage_sizes for size in sizes) * self.states[0][0].element_size()
        return slots * (per_row + len(self.stage_sizes))

    # -- reading ----------------------------------------------------------------------------------
    def gather(self, stage: int, slots: np.ndarray, carry: np.ndarray | None, need_has: bool,
               start: int | None = -1,
               rotation: tuple[int, int] | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Initial carries of ``stage`` for rows that read ``slots``: the stored ones where ``carry``
        (None = all), zeros elsewhere. Results may be views of the slabs (compute never writes its
        inputs in place); ``has`` is returned only when ``need_has``. ``start``: as for :meth:`write`;
        ``rotation``: :func:`whole_rotation` of ``slots`` when the caller knows it (None: not known, or
        not one), so that rows adopted with a rotation are read without looking at the slots."""
        if start == -1:
            start = contiguous_start(slots) if carry is None else None
        adopted = self._adopted[stage]
        if adopted is not None:
            if carry is None:
                found = self._from_adopted(stage, adopted, slots, start, need_has, rotation)
                if found is not None:
                    return found
            self.settle(stage)
        if start is not None:
            states, has = self.views(stage, start, len(slots))
            return states, has if need_has else None
        split = rotated_split(slots) if carry is None else None
        if split is not None:
            (first, has_first), (second, has_second) = (self.gather(stage, slots[rows], None, need_has, at)
                                                        for rows, at in _halves(slots, split))
            return [torch.cat(pair) for pair in zip(first, second)], \
                torch.cat([has_first, has_second]) if need_has else None
        if carry is not None and not carry.any():   # new streams only (a first batch): nothing to read
            states = [torch.zeros(len(slots), size, dtype=self.dtype, device=self.device)
                      for size in self.stage_sizes[stage]]
            return states, torch.zeros(len(slots), dtype=torch.bool, device=self.device) if need_has else None
        gather = index_tensor(slots if carry is None else np.where(carry, slots, 0), self.device)
        states = [slab.index_select(0, gather) for slab in self.states[stage]]
        has = self.has_output[stage].index_select(0, gather) if need_has else None
        if carry is not None:
            fill = torch.as_tensor(~carry, device=self.device)[:, None]
            states = [s.masked_fill_(fill, 0) for s in states]
            has = None if has is None else has & ~fill[:, 0]
        return states, has

    def _from_adopted(self, stage: int, adopted: tuple[int, int, list[torch.Tensor], int], slots: np.ndarray,
                      start: int | None, need_has: bool,
                      rotation: tuple[int, int] | None) -> tuple[list[torch.Tensor], torch.Tensor | None] | None:
        """The carries of ``slots`` read from the adopted rows when they hold every one (None: not)."""
        first, count, states, offset = adopted
        if not offset and start == first and len(slots) == count:   # the fleet again: the adopted tensors
            return list(states), self.views(stage, first, count)[1] if need_has else None
        if rotation is not None and rotation[0] == first and len(slots) == count:   # the range, rotated again
            # slots[i] = first + (i + rotation[1]) % count is row (i + turn) % count of ``states``.
            turn = (rotation[1] - offset) % count
            if turn:
                states = [torch.cat([state.narrow(0, turn, count - turn), state.narrow(0, 0, turn)])
                          for state in states]
            has = self.has_output[stage].index_select(0, index_tensor(slots, self.device)) if need_has else None
            return list(states), has
        if not len(slots) or int(slots.min()) < first or int(slots.max()) >= first + count:
            return None
        rows = slots - first if not offset else (slots - (first + offset)) % count   # rows of ``states``
        at = contiguous_start(rows)
        split = None if at is not None else rotated_split(rows)
        if at is not None:
            states = [state.narrow(0, at, len(slots)) for state in states]
        elif split is not None:   # a rotation of them: two slices
            states = [torch.cat([state.narrow(0, int(rows[0]), split), state.narrow(0, int(rows[split]),
                                                                                    len(slots) - split)])
                      for state in states]
        else:   # the fleet in another order: gather from the adopted tensors
            index = index_tensor(rows, self.device)
            states = [state.index_select(0, index) for state in states]
        has = self.has_output[stage].index_select(0, index_tensor(slots, self.device)) if need_has else None
        return states, has

    def read(self, slots: np.ndarray) -> list[tuple[list[np.ndarray], np.ndarray]]:
        """Per stage: copies of the states of ``slots`` ([n, size] each) and their ``has_output``."""
        self.settle()
        index = index_tensor(slots, self.device)
        return [([slab.index_select(0, index).cpu().numpy() for slab in states],
                 flags.index_select(0, index).cpu().numpy())
                for states, flags in zip(self.states, self.has_output)]

    # -- writing ----------------------------------------------------------------------------------
    def write_states(self, stage: int, slots: np.ndarray, states: list[torch.Tensor], start: int | None,
                     rotation: tuple[int, int] | None | bool = False) -> None:
        """:meth:`write` without ``has_output`` (known to be True already); rows from ``start`` may be
        adopted instead of copied (see the module docstring), as may a whole range rotated (``rotation``:
        :func:`whole_rotation` of ``slots`` when the caller knows it, False: not known)."""
        if start is None and rotation is False:
            rotation = whole_rotation(slots)
        first, offset = (start, 0) if start is not None else rotation or (None, 0)
        if first is not None and self._adoptable(stage, first, states):   # a rotated range with its rotation
            self._adopted[stage] = (first, len(slots), list(states), offset)
            return
        self.settle(stage)
        self._copy_states(stage, slots, states, start)

    def _copy_states(self, stage: int, slots: np.ndarray, states: list[torch.Tensor], start: int | None) -> None:
        if start is not None:
            for view, value in zip(self.views(stage, start, len(slots))[0], states):
                view.copy_(value)
            return
        split = rotated_split(slots)
        if split is not None:
            for rows, at in _halves(slots, split):
                self._copy_states(stage, slots[rows], [s[rows] for s in states], at)
            return
        target = index_tensor(slots, self.device)
        for slab, value in zip(self.states[stage], states):
            slab.index_copy_(0, target, value.to(dtype=self.dtype, device=self.device))

    def write(self, stage: int, slots: np.ndarray, states: list[torch.Tensor], has: torch.Tensor | None,
              start: int | None = -1, adopt: bool = False) -> None:
        """Write ``states`` (rows in the order of the distinct ``slots``) and ``has`` (None = all True);
        ``start``: :func:`contiguous_start` of ``slots`` when the caller knows it (-1: not known).
        ``adopt``: the caller hands over ``states`` (a commit's new tensors): when ``slots`` are one
        range of slots, in any order, the states are put in slot order (one gather, cheaper than a
        scatter) and adopted (see the module docstring)."""
        start = contiguous_start(slots) if start == -1 else start
        if adopt and start is None and len(slots) >= PERMUTED_ROWS:
            start, states, has = self._in_slot_order(slots, states, has)
        if start is not None:   # slices: flags into the views, states adopted or copied into the views
            views, flags = self.views(stage, start, len(slots))
            if has is None:
                flags.fill_(True)
            else:
                flags.copy_(has)
            if adopt and self._adoptable(stage, start, states):
                self._adopted[stage] = (start, len(slots), list(states), 0)
                return
            self.settle(stage)
            for view, value in zip(views, states):
                view.copy_(value)
            return
        self.settle(stage)
        split = rotated_split(slots)
        if split is not None:
            for rows, at in _halves(slots, split):
                self.write(stage, slots[rows], [s[rows] for s in states], None if has is None else has[rows], at)
            return
        target = index_tensor(slots, self.device)
        for slab, value in zip(self.states[stage], states):
            if value.dtype != self.dtype or value.device != self.device:
                value = value.to(dtype=self.dtype, device=self.device)
            slab.index_copy_(0, target, value)
        flags = self.has_output[stage]
        if has is None:
            flags.index_fill_(0, target, True)
        else:
            flags.index_copy_(0, target, has.to(device=self.device))

    def _in_slot_order(self, slots: np.ndarray, states: list[torch.Tensor], has: torch.Tensor | None):
        """``(first slot, states, has)`` reordered by slot when the distinct ``slots`` are ``first ..
        first + n - 1`` in some order; else ``(None, states, has)`` unchanged."""
        ordered = range_order(slots)
        if ordered is None:
            return None, states, has
        first, rows, _ = ordered
        index = index_tensor(rows, self.device)
        return first, [s.index_select(0, index) for s in states], None if has is None else has.index_select(0, index)

    def zero(self, slots: np.ndarray) -> None:
        """Zero the states and ``has_output`` of ``slots``."""
        self.settle()
        index = index_tensor(slots, self.device)
        with torch.no_grad():
            for states, flags in zip(self.states, self.has_output):
                for slab in states:
                    slab.index_fill_(0, index, 0)
                flags.index_fill_(0, index, False)
