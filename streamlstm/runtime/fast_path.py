"""The steady-state fast path of ``feed``: the same streams, in the same order, one row each.

A fleet of streams that reports once per batch (or a single stream fed row by row) sends batches with
the same schema and the same key column every time. After a batch like that has gone through the full
path, :func:`prepare` records what was learned (column positions, the key column, the streams' slots,
which are contiguous) and :func:`try_feed` serves the next batches with a handful of calls: no key
lookup, no row layout, slices instead of gathers, and ``torch._VF.lstm_cell`` for small batches where
per-operation overhead dominates. Whenever anything differs (another schema or key column, a masked,
reset or ended row, a row a Keras Masking layer masks, a null, a non-finite value, eviction settings
that need the full path) it returns None and the full path runs, which also produces any error
message. The numbers are those of step mode.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.runtime.compute import lstm_step
from streamlstm.runtime.model_plan import MaskingStage, RecurrentStage

__all__ = ["FastPath", "as_tensor", "prepare", "try_feed"]

_LSTM_CELL = torch._VF.lstm_cell   # resolved once: torch._VF looks names up on every access
SMALL = 64   # up to this many rows the native cell (one dispatch) beats in-place gate math (many ops)
_quiet = False


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` for Arrow's read-only memory (never written by the runtime), warning-free."""
    global _quiet
    if _quiet or array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():   # torch warns once per process about read-only arrays
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    _quiet = True
    return tensor


@dataclass
class FastPath:
    schema: pa.Schema
    keys: pa.Array
    key_index: int
    feature_index: int
    flag_indices: tuple[tuple[int, bool], ...]   # (column, the value every row must have)
    start: int
    rows: int
    generation: int
    width: int
    out_schema: pa.Schema
    capacity: int                                  # the views below are valid while the table keeps it
    views: list[list[torch.Tensor]]                # per recurrent stage: the streams' rows of each slab
    has_views: list[torch.Tensor]
    convert: bool                                  # inputs need a dtype/device conversion
    bookkeeping: bool                              # eviction reads last_used / last_batch / last_seen
    has_set: bool = False                          # has_output of these rows is already True


def prepare(runtime: Any, batch: Any, keys: pa.Array, slots: np.ndarray, start: int | None) -> FastPath | None:
    """A fast path for batches like ``batch`` (already fed through the full path), or None."""
    plan, cols = runtime._plan, runtime._columns
    eligible = (start is not None and isinstance(batch, pa.RecordBatch) and runtime.mode in ("auto", "step")
                and cols.time is None and not runtime.return_state and isinstance(cols.features, str)
                and batch.schema.field(cols.features).type.value_type == pa.float32()
                and all(stage.standard(cell) for stage in plan.recurrent for cell in stage.cells))
    if not eligible:
        return None
    schema = batch.schema
    flags = tuple((schema.get_field_index(name), value)
                  for name, value in ((cols.mask, True), (cols.reset, False), (cols.end, False)) if name is not None)
    out_schema = pa.schema([schema.field(cols.key), pa.field("output", pa.list_(pa.float32(), plan.output_dim))])
    table, n = runtime._table, len(slots)
    views = [[slab.narrow(0, start, n) for slab in slabs] for slabs in table.slabs]
    has_views = [flags.narrow(0, start, n) for flags in table.has_output]
    convert = runtime.device.type != "cpu" or plan.dtype != torch.float32
    return FastPath(schema, keys, schema.get_field_index(cols.key), schema.get_field_index(cols.features), flags,
                    start, n, runtime._generation, plan.input_dim, out_schema, table.capacity, views, has_views,
                    convert, runtime._eviction.active)


def _features(fast: FastPath, batch: pa.RecordBatch, allow_nonfinite: bool) -> np.ndarray | None:
    column = batch.column(fast.feature_index)
    if column.null_count:
        return None
    values = column.values.slice(column.offset * fast.width, fast.rows * fast.width)  # float32: see prepare
    if values.null_count:
        return None
    flat = values.to_numpy()
    # x . x is NaN or Inf when any value is (or when a huge finite value overflows: then the full path
    # decides); one BLAS call is several times cheaper than a ufunc reduction on a short vector.
    if not allow_nonfinite and not math.isfinite(np.dot(flat, flat)):
        return None
    return flat.reshape(fast.rows, fast.width)


def _cell(cell: Any, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[0] <= SMALL:   # the native cell: one dispatch
        weight_ih, weight_hh = _torch_layout(cell)
        return _LSTM_CELL(x, (h, c), weight_ih, weight_hh, cell._parameters["bias"])
    return lstm_step(cell, True, cell.project_inputs(x, False), h, c)


def _torch_layout(cell: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``kernel.T`` and ``recurrent_kernel.T`` made contiguous (the native cell reads them faster),
    cached until the weights change (in-place updates bump their ``_version``)."""
    kernel, recurrent = cell._parameters["kernel"], cell._parameters["recurrent_kernel"]
    stamp = (kernel._version, recurrent._version, kernel.data_ptr(), recurrent.data_ptr())
    cached = cell.__dict__.get("_torch_layout")
    if cached is None or cached[0] != stamp:
        cached = (stamp, kernel.detach().T.contiguous(), recurrent.detach().T.contiguous())
        cell.__dict__["_torch_layout"] = cached
    return cached[1], cached[2]


def try_feed(runtime: Any, batch: Any) -> pa.RecordBatch | None:
    fast = runtime._fast
    if (fast.generation != runtime._generation or fast.capacity != runtime._table.capacity
            or type(batch) is not pa.RecordBatch or batch.num_rows != fast.rows):
        return None
    if batch.schema is not fast.schema and not batch.schema.equals(fast.schema):
        return None
    keys = batch.column(fast.key_index)
    if keys is not fast.keys and not keys.equals(fast.keys):
        return None
    for index, value in fast.flag_indices:
        flag = batch.column(index)
        if flag.null_count or flag.true_count != (fast.rows if value else 0):
            return None
    x = _features(fast, batch, runtime.allow_nonfinite)
    if x is None:
        return None
    finals = []
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)   # cheaper than a context manager, which matters at one row
    try:
        h = as_tensor(x)
        if fast.convert:
            h = h.to(device=runtime.device, dtype=runtime._plan.dtype)
        for stage in runtime._plan.stages:
            if isinstance(stage, MaskingStage):
                if not bool(stage.compute_mask(h).all()):
                    return None   # a masked row: the full path (nothing was committed)
                continue          # every row is real: Masking changes nothing
            if not isinstance(stage, RecurrentStage):
                h = stage(h)
                continue
            views, new = fast.views[len(finals)], []
            for j, cell in enumerate(stage.cells):
                h, c = _cell(cell, h, views[2 * j], views[2 * j + 1])
                new += [h, c]
            finals.append(new)
        out = h if h.dtype == torch.float32 and h.device.type == "cpu" else h.to("cpu", torch.float32)
    finally:
        torch.set_grad_enabled(grad)
    _commit(runtime, fast, finals)
    output = pa.FixedSizeListArray.from_arrays(pa.array(out.numpy().reshape(-1)), out.shape[1])
    return pa.RecordBatch.from_arrays([keys, output], schema=fast.out_schema)


def _commit(runtime: Any, fast: FastPath, finals: list[list[torch.Tensor]]) -> None:
    """Every compute succeeded: write the carries and the counters."""
    for views, new in zip(fast.views, finals):
        for view, value in zip(views, new):
            view.copy_(value)
    if not fast.has_set:
        for flags in fast.has_views:
            flags.fill_(True)
        fast.has_set = True
    counters = runtime.counters
    if fast.bookkeeping:
        table, start, n = runtime._table, fast.start, fast.rows
        table.last_used[start:start + n] = counters["rows"] + np.arange(n)
        table.last_batch[start:start + n] = counters["batches"] + 1
        table.last_seen[start:start + n] = runtime._eviction.clock()
    counters["batches"] += 1
    counters["rows"] += fast.rows
