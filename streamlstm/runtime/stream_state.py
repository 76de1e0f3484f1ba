"""Reading and writing individual streams' state: the runtime's mapping-like methods."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.errors import ArgumentTypeError, ShapeError, StateError
from streamlstm.runtime.placement import Stamp

__all__ = ["StreamStateMixin", "State"]

State = list[tuple[np.ndarray, np.ndarray]]


class StreamStateMixin:
    """``len``, ``in``, ``keys``, ``state``, ``set_state``, ``reset`` and ``forget`` of :class:`StreamRuntime`."""

    def __len__(self) -> int:
        return 0 if self._store is None else len(self._store)

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return self._store is not None and self._store.find(key) >= 0

    def keys(self) -> list[Any]:
        """The keys of the streams held now (ints or strings), in slot order."""
        with self._lock:
            if self._store is None:
                return []
            return [_python_key(k) for k in self._store.keys_of(self._store.live_slots())]

    def _state_of_slot(self, slot: int) -> State:
        carries = self._store.read(np.array([slot]))
        return [(states[i][0], states[i + 1][0]) for states, _ in carries for i in range(0, len(states), 2)]

    def state(self, key: Any) -> State:
        """The stream's ``[(h, c), ...]``, one pair per LSTM cell in model order, as numpy copies."""
        with self._lock:
            slot = -1 if self._store is None else self._store.find(key)
            if slot < 0:
                raise StateError(f"no stream with key {key!r} in this runtime ({len(self)} streams held)")
            return self._state_of_slot(slot)

    def set_state(self, key: Any, states: State) -> None:
        """Set a stream's carries (creating the stream if needed), like Keras ``reset_states([h, c])``:
        the stream's previous output returns to zeros until its next real step."""
        with self._lock:
            if self._store is None:
                raise StateError("the model is not built yet: feed a batch first or pass a built model")
            kind = _kind_of(key, self._store.key_kind)
            values = self._check_states(states)
            stamp = Stamp(np.int64(0), self.counters["rows"], self.counters["batches"], self._eviction.clock())
            self._store.put(key, kind, values, stamp)

    def _check_states(self, states: Any) -> list[list[torch.Tensor]]:
        cells = self._plan.cells
        if not isinstance(states, (list, tuple)) or len(states) != len(cells):
            got = f"{len(states)} items" if isinstance(states, (list, tuple)) else type(states).__name__
            raise ShapeError(f"`states` must be a list of {len(cells)} (h, c) pairs, one per LSTM cell, got {got}")
        flat = []
        for index, (cell, pair) in enumerate(zip(cells, states)):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ShapeError(f"`states[{index}]` must be a pair (h, c), got {pair!r:.60}")
            for name, value in zip("hc", pair):
                tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
                if tuple(tensor.shape) != (cell.units,):
                    raise ShapeError(f"`states[{index}]` {name} must have shape ({cell.units},), "
                                     f"got {tuple(tensor.shape)}")
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise ShapeError(f"`states[{index}]` {name} has a non-finite value; states must be finite")
                flat.append(tensor)
        grouped, start = [], 0
        for stage in self._plan.recurrent:
            count = 2 * len(stage.cells)
            grouped.append(flat[start:start + count])
            start += count
        return grouped

    def reset(self, keys: Iterable[Any] | None = None) -> int:
        """Zero the carries and previous outputs of ``keys`` (all streams when None); streams stay
        held and keep their last time. Unknown keys are ignored (they would start from zeros anyway).

        Returns the number of streams reset: the held streams among ``keys`` (each counted once)."""
        with self._lock:
            if self._store is None:
                return 0
            if keys is None:
                self._store.zero()
                return len(self._store)
            slots = self._held_slots(keys)
            if len(slots):
                self._store.zero(slots)
            return len(slots)

    def forget(self, keys: Iterable[Any] | None = None) -> int:
        """Release ``keys`` (all streams when None): their carries, previous outputs and last times
        are dropped, and a later row of such a key starts a new stream (as after an ``end`` row).
        Unknown keys are ignored. Returns how many streams were released."""
        with self._lock:
            if self._store is None:
                return 0
            slots = self._store.live_slots() if keys is None else self._held_slots(keys)
            self._store.release(slots)
            self._store.compact()
            return len(slots)

    def _held_slots(self, keys: Any) -> np.ndarray:
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
            raise ArgumentTypeError(f"`keys` must be an iterable of keys or None, got {type(keys).__name__}")
        # Each held stream once, however often its key is named.
        return np.unique(np.array([s for s in (self._store.find(k) for k in keys) if s >= 0], np.int64))


def _kind_of(key: Any, expected: str | None = None) -> str:
    if isinstance(key, str):
        kind = "str"
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and -2**63 <= key < 2**63:
        kind = "int"
    else:
        raise ArgumentTypeError(f"a stream key must be an int64 or a str, got {type(key).__name__} {key!r:.40}")
    if expected is not None and kind != expected:
        raise ArgumentTypeError(f"this runtime's keys are {'integers' if expected == 'int' else 'strings'}, "
                                f"got {type(key).__name__} {key!r}")
    return kind


def _python_key(value: Any) -> Any:
    return int(value) if isinstance(value, (np.integer, pa.Int64Scalar)) else value
