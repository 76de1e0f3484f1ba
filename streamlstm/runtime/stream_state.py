"""Reading and writing individual streams' state: the runtime's mapping-like methods."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.errors import ArgumentTypeError, ShapeError, StateError
from streamlstm.runtime.keys import KeyIndex

__all__ = ["StreamStateMixin"]

State = list[tuple[np.ndarray, np.ndarray]]


class StreamStateMixin:
    """``len``, ``in``, ``keys``, ``state``, ``set_state`` and ``reset`` of :class:`StreamRuntime`."""

    def __len__(self) -> int:
        return 0 if self._table is None else len(self._table)

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return self._index is not None and self._index.find(key) >= 0

    def keys(self) -> list[Any]:
        """The keys of the streams held now (ints or strings), in slot order."""
        with self._lock:
            if self._index is None:
                return []
            return [_python_key(k) for k in self._index.slot_keys[self._index.live_slots()]]

    def state_of_slot(self, slot: int) -> State:
        flat = self._table.read(slot)
        return [(states[i], states[i + 1]) for states in flat for i in range(0, len(states), 2)]

    def state(self, key: Any) -> State:
        """The stream's ``[(h, c), ...]``, one pair per LSTM cell in model order, as numpy copies."""
        with self._lock:
            return self.state_of_slot(self._slot(key))

    def _slot(self, key: Any) -> int:
        slot = -1 if self._index is None else self._index.find(key)
        if slot < 0:
            raise StateError(f"no stream with key {key!r} in this runtime ({len(self)} streams held)")
        return slot

    def set_state(self, key: Any, states: State) -> None:
        """Set a stream's carries (creating the stream if needed), like Keras ``reset_states([h, c])``:
        the stream's previous output returns to zeros until its next real step."""
        with self._lock:
            if self._table is None:
                raise StateError("the model is not built yet: feed a batch first or pass a built model")
            values = self._check_states(states)
            if self._index is None:
                self._index = KeyIndex(_kind_of(key))
            slot = self._index.find(key)
            if slot < 0:
                _kind_of(key, self._index.kind)
                slot = int(self._table.allocate(1)[0])
                self._index.insert_values(np.array([key], dtype=self._index.slot_keys.dtype), np.array([slot]))
                self._table.last_batch[slot] = self.counters["batches"]
                self._table.last_used[slot] = self.counters["rows"]
                self._table.last_seen[slot] = self._eviction.clock()
            self._table.write(slot, values)
            self._cache = self._fast = None

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
                flat.append(tensor)
        grouped, start = [], 0
        for stage in self._plan.recurrent:
            count = 2 * len(stage.cells)
            grouped.append(flat[start:start + count])
            start += count
        return grouped

    def reset(self, keys: Iterable[Any] | None = None) -> None:
        """Zero the carries and previous outputs of ``keys`` (all streams when None); streams stay
        held and keep their last time. Unknown keys are ignored (they would start from zeros anyway)."""
        with self._lock:
            if self._table is None:
                return
            self._fast = None   # has_output changes
            if keys is None:
                self._table.zero()
                return
            if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
                raise ArgumentTypeError(f"`keys` must be an iterable of keys or None, got {type(keys).__name__}")
            slots = [self._index.find(k) for k in keys] if self._index is not None else []
            slots = np.array([s for s in slots if s >= 0], np.int64)
            if len(slots):
                self._table.zero(slots)


def _kind_of(key: Any, expected: str | None = None) -> str:
    if isinstance(key, str):
        kind = "str"
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        kind = "int"
    else:
        raise ArgumentTypeError(f"a stream key must be an int or a str, got {type(key).__name__}")
    if expected is not None and kind != expected:
        raise ArgumentTypeError(f"this runtime's keys are {'integers' if expected == 'int' else 'strings'}, "
                                f"got {type(key).__name__} {key!r}")
    return kind


def _python_key(value: Any) -> Any:
    return int(value) if isinstance(value, (np.integer, pa.Int64Scalar)) else value
