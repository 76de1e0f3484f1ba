"""What the runtime hands back: output record batches, counters, ``repr`` and ``_repr_html_``."""

from __future__ import annotations

import html as _html
from typing import Any

import numpy as np
import pyarrow as pa
import torch

__all__ = ["COUNTERS", "html", "output_batch", "python_key", "stats", "text"]

COUNTERS = ("rows", "batches", "streams_created", "streams_ended", "resets", "dropped_late", "evicted_ttl",
            "evicted_max_streams")


def python_key(value: Any) -> Any:
    return int(value) if isinstance(value, np.integer) else value


def _fixed_list(values: np.ndarray, width: int, valid: np.ndarray | None = None) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    mask = None if valid is None else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(flat, width, mask=mask)


def _host(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.dtype != torch.float32:
        tensor = tensor.to(torch.float32)
    return tensor.cpu().numpy()


def output_batch(runtime: Any, full: Any, parsed: Any, outcome: Any, kept: np.ndarray | None) -> pa.RecordBatch:
    """Key column, time column, ``output`` and optional state columns, one row per row of ``full``."""
    columns = runtime.columns
    names, arrays = [columns.key], [full.keys]
    if columns.time is not None:
        names.append(columns.time)
        arrays.append(full.time_column)
    width = runtime._plan.output_dim or 0
    widths = [("output", width)]
    values = [None if outcome is None else outcome.outputs]
    if runtime.return_state:
        for i, cell in enumerate(runtime._plan.cells):
            widths += [(f"h_{i}", cell.units), (f"c_{i}", cell.units)]
        values += list(outcome.row_states) if outcome is not None else [None] * (len(widths) - 1)
    for (name, size), value in zip(widths, values):
        names.append(name)
        data = np.zeros((0, size), np.float32) if value is None else _host(value)
        if kept is None and len(data) == full.num_rows:
            arrays.append(_fixed_list(data, size))
        else:
            padded = np.zeros((full.num_rows, size), np.float32)
            valid = np.zeros(full.num_rows, bool) if kept is None else kept
            padded[valid] = data
            arrays.append(_fixed_list(padded, size, valid))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def stats(runtime: Any) -> dict[str, Any]:
    result: dict[str, Any] = dict(runtime.counters)
    result["streams"] = len(runtime)
    result["evictions"] = result["evicted_ttl"] + result["evicted_max_streams"]
    result["busy_seconds"] = runtime.busy_seconds
    result["rows_per_second"] = result["rows"] / runtime.busy_seconds if runtime.busy_seconds else 0.0
    table = runtime._table
    result["capacity"] = 0 if table is None else table.capacity
    result["state_bytes"] = 0 if table is None else table.nbytes()
    return result


def _layers(runtime: Any) -> list[str]:
    rows = []
    for stage in runtime._plan.stages:
        if hasattr(stage, "cells"):
            direction = ", go_backwards" if stage.go_backwards else ""
            rows.append(f"{type(stage.layer).__name__}({', '.join(str(c.units) for c in stage.cells)}{direction})")
        else:
            rows.append(type(getattr(stage, "module", stage)).__name__)
    return rows


def _summary(runtime: Any) -> list[tuple[str, str]]:
    s = stats(runtime)
    mib = s["state_bytes"] / 2**20
    return [
        ("streams", f"{s['streams']:,} (capacity {s['capacity']:,})"),
        ("layers", " -> ".join(_layers(runtime))),
        ("device", f"{runtime.device}, mode={runtime.mode}"),
        ("memory", f"{mib:,.1f} MiB of carries"),
        ("rows", f"{s['rows']:,} in {s['batches']:,} batches, {s['rows_per_second']:,.0f} rows/s"),
        ("streams created/ended", f"{s['streams_created']:,} / {s['streams_ended']:,}"),
        ("evictions", f"{s['evictions']:,} (ttl {s['evicted_ttl']:,}, max_streams {s['evicted_max_streams']:,})"),
        ("dropped late rows", f"{s['dropped_late']:,}"),
    ]


def text(runtime: Any) -> str:
    body = "\n".join(f"  {name}: {value}" for name, value in _summary(runtime))
    return f"StreamRuntime(key={runtime.columns.key!r}, features={runtime.columns.features!r})\n{body}"


def html(runtime: Any) -> str:
    # Left-aligned values: notebook front ends right-align table cells, which suits numbers, not these.
    rows = "".join(f"<tr><th style='text-align:left'>{_html.escape(name)}</th>"
                   f"<td style='text-align:left'>{_html.escape(value)}</td></tr>" for name, value in _summary(runtime))
    title = _html.escape(f"StreamRuntime(key={runtime.columns.key!r}, features={runtime.columns.features!r})")
    return f"<div><strong>{title}</strong><table>{rows}</table></div>"
