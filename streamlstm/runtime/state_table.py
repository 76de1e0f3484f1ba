"""The state table: every stream's carries in preallocated slabs, addressed by slot.

Per recurrent stage ``i`` the table holds its flat states (``[h, c]`` per LSTM cell) as tensors
``[capacity, units]`` on the runtime's device, and ``has_output[i]`` (bool ``[capacity]``): whether the
stream has had a real step since it started or was reset. A masked step repeats the stream's previous
output, which for an LSTM is its current ``h`` when ``has_output`` and zeros otherwise, so no
previous-output slab is needed.

Per slot, numpy arrays keep the bookkeeping (``live``, ``last_used`` row stamp for LRU, ``last_batch``
and ``last_seen`` clock for TTL, ``last_time`` of the time column). Free slots form a stack; capacity
doubles when it runs out. A released slot is not cleared: a new stream's first segment starts from
zeros by construction (see :mod:`streamlstm.runtime.segments`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["StateTable"]

_BOOKKEEPING = ("live", "last_used", "last_batch", "last_seen", "last_time", "has_time")


class StateTable:
    """Slabs of carries for ``stage_sizes`` (one list of state sizes per recurrent stage)."""

    def __init__(self, stage_sizes: list[list[int]], dtype: torch.dtype, device: torch.device,
                 capacity: int = 1024, time_dtype: Any = np.int64) -> None:
        self.stage_sizes = [list(sizes) for sizes in stage_sizes]
        self.dtype, self.device = dtype, device
        self.capacity = 0
        self.slabs: list[list[torch.Tensor]] = [[self._new(0, size) for size in sizes] for sizes in stage_sizes]
        self.has_output = [torch.zeros(0, dtype=torch.bool, device=device) for _ in stage_sizes]
        self.live = np.zeros(0, bool)
        self.last_used = np.zeros(0, np.int64)
        self.last_batch = np.zeros(0, np.int64)
        self.last_seen = np.zeros(0, np.float64)
        self.last_time = np.zeros(0, time_dtype)
        self.has_time = np.zeros(0, bool)
        self._free = np.zeros(0, np.int64)
        self._free_count = 0
        self.grow(capacity)

    def _new(self, rows: int, size: int) -> torch.Tensor:
        return torch.zeros(rows, size, dtype=self.dtype, device=self.device)

    def __len__(self) -> int:
        return self.capacity - self._free_count

    # -- slots -------------------------------------------------------------------------------------
    def grow(self, minimum: int) -> None:
        """Make room for ``minimum`` slots (at least doubling); existing slots keep their content."""
        if minimum <= self.capacity:
            return
        new_capacity = max(minimum, 2 * self.capacity, 16)
        old = self.capacity
        for stage, sizes in enumerate(self.stage_sizes):
            slabs = []
            for tensor, size in zip(self.slabs[stage], sizes):
                grown = self._new(new_capacity, size)
                grown[:old] = tensor
                slabs.append(grown)
            self.slabs[stage] = slabs
            grown_out = torch.zeros(new_capacity, dtype=torch.bool, device=self.device)
            grown_out[:old] = self.has_output[stage]
            self.has_output[stage] = grown_out
        for name in _BOOKKEEPING:
            array = getattr(self, name)
            grown = np.zeros(new_capacity, array.dtype)
            grown[:old] = array
            setattr(self, name, grown)
        # Free stack: pop from the end, so lower slots are handed out first.
        free = np.concatenate([np.arange(new_capacity - 1, old - 1, -1, dtype=np.int64),
                               self._free[:self._free_count]])
        self._free, self._free_count = free, len(free)
        self.capacity = new_capacity

    def allocate(self, count: int) -> np.ndarray:
        """``count`` free slots, marked live (their slabs hold stale values: callers overwrite them)."""
        if count > self._free_count:
            self.grow(len(self) + count)
        top = self._free_count
        slots = self._free[top - count:top][::-1].copy()
        self._free_count -= count
        self.live[slots] = True
        self.has_time[slots] = False
        return slots

    def release(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        self.live[slots] = False
        for flags in self.has_output:
            flags[torch.as_tensor(slots, device=self.device)] = False
        needed = self._free_count + len(slots)
        if needed > len(self._free):
            self._free = np.concatenate([self._free, np.zeros(needed - len(self._free), np.int64)])
        self._free[self._free_count:needed] = slots
        self._free_count = needed

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.live)

    # -- values ------------------------------------------------------------------------------------
    def zero(self, slots: np.ndarray | None = None) -> None:
        """Zero the carries and ``has_output`` of ``slots`` (all slots when None)."""
        with torch.no_grad():
            index = None if slots is None else torch.as_tensor(slots, dtype=torch.long, device=self.device)
            for stage in range(len(self.stage_sizes)):
                for slab in self.slabs[stage]:
                    if index is None:
                        slab.zero_()
                    else:
                        slab.index_fill_(0, index, 0)
                if index is None:
                    self.has_output[stage].zero_()
                else:
                    self.has_output[stage][index] = False

    def read(self, slot: int) -> list[list[np.ndarray]]:
        """Copies of one slot's flat states, per stage."""
        return [[slab[slot].detach().cpu().numpy().copy() for slab in slabs] for slabs in self.slabs]

    def write(self, slot: int, states: list[list[torch.Tensor]]) -> None:
        with torch.no_grad():
            for stage, values in enumerate(states):
                for slab, value in zip(self.slabs[stage], values):
                    slab[slot] = value.to(dtype=self.dtype, device=self.device)
                self.has_output[stage][slot] = False

    def nbytes(self) -> int:
        """Bytes held by the slabs and the per-slot arrays (the key map is counted by the runtime)."""
        tensors = [t for slabs in self.slabs for t in slabs] + self.has_output
        arrays = [getattr(self, name) for name in _BOOKKEEPING] + [self._free]
        return sum(t.numel() * t.element_size() for t in tensors) + sum(a.nbytes for a in arrays)

    def snapshot(self) -> bytes:
        """Every byte of live state, for tests that check nothing changed."""
        slots = self.live_slots()
        parts = [slots.tobytes()]
        index = torch.as_tensor(slots, dtype=torch.long, device=self.device)
        for stage, slabs in enumerate(self.slabs):
            parts += [slab.index_select(0, index).cpu().numpy().tobytes() for slab in slabs]
            parts.append(self.has_output[stage].index_select(0, index).cpu().numpy().tobytes())
        parts += [getattr(self, name)[slots].tobytes() for name in _BOOKKEEPING]
        return b"".join(parts)
