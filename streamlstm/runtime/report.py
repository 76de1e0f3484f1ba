"""What the runtime hands back: output record batches, counters, ``repr`` and ``_repr_html_``."""

from __future__ import annotations

import html as _html
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.arrow import fixed_list
from streamlstm.errors import StreamError

__all__ = ["COUNTERS", "OutputBuilder", "html", "python_key", "summary", "text"]

COUNTERS = ("rows", "batches", "streams_created", "streams_ended", "resets", "dropped_late", "evicted_ttl",
            "evicted_max_streams")


_FLOAT32 = pa.float32()


def python_key(value: Any) -> Any:
    return int(value) if isinstance(value, np.integer) else value


def _host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32 on the CPU, contiguous, without gradient (itself when it is)."""
    if tensor.dtype is not torch.float32 or not tensor.is_cpu or tensor.requires_grad or not tensor.is_contiguous():
        tensor = tensor.detach().to("cpu", torch.float32).contiguous()
    return tensor


_EMPTY = torch.zeros(0)   # the values of a batch without rows


def _wrapped(tensor: torch.Tensor, rows: int, list_type: pa.DataType) -> pa.Array:
    """``tensor`` [rows, size] as a ``FixedSizeList<float32>[size]`` array of ``rows`` rows sharing its
    memory (:func:`_host` first): the buffer keeps the tensor alive. Three pyarrow calls (a numpy view
    and ``py_buffer`` cost two more, which shows at one row per stream)."""
    tensor = _host(tensor)
    count = rows * list_type.list_size
    if tensor.numel() != count:   # never (a row per input row): the buffer below must not overrun
        raise StreamError(f"{count} output values expected, got a tensor of shape {tuple(tensor.shape)}")
    memory = pa.foreign_buffer(tensor.data_ptr(), 4 * count, base=tensor)
    flat = pa.Array.from_buffers(_FLOAT32, count, [None, memory])
    return pa.FixedSizeListArray.from_arrays(flat, type=list_type)


class OutputBuilder:
    """Builds every output batch of a runtime: the key column, the time column when configured,
    ``output`` and the optional ``h_<i>``/``c_<i>`` columns, one row per input row. The schema is a
    function of the configuration and the input's column types only (never of its nullability or
    metadata)."""

    def __init__(self, key: str, time: str | None, widths: list[tuple[str, int]]) -> None:
        self.key, self.time, self.widths = key, time, widths
        # Fields made from names alone: nullable, no metadata, whatever the input's fields say.
        self.names = [key] + ([] if time is None else [time]) + [name for name, _ in widths]
        self._list_types = [pa.list_(_FLOAT32, size) for _, size in widths]

    def build(self, keys: pa.Array, time_column: pa.Array | None, outcome: Any,
              kept: np.ndarray | None) -> pa.RecordBatch:
        """``outcome``: its ``outputs`` and ``row_states`` (tensors [rows kept, size]) fill the columns
        (None: no row was computed); ``kept``: which input rows were computed (None: all); the others
        get null outputs."""
        rows = len(keys)
        arrays = [keys] if self.time is None else [keys, time_column]
        values = None if outcome is None else [outcome.outputs, *(outcome.row_states or ())]
        for index, list_type in enumerate(self._list_types):
            if kept is None:   # the common case: the array wraps the tensor's memory, no copy
                arrays.append(_wrapped(_EMPTY if values is None else values[index], rows, list_type))
                continue
            padded = np.zeros((rows, list_type.list_size), np.float32)
            if values is not None:
                padded[kept] = _host(values[index]).numpy()
            arrays.append(fixed_list(padded, kept))
        return pa.RecordBatch.from_arrays(arrays, names=self.names)   # fields from names and types alone


def summary(stats: dict[str, Any], layers: list[str], device: Any, mode: str) -> list[tuple[str, str]]:
    """The rows of ``repr`` and ``_repr_html_``."""
    s = stats
    mib = s["state_bytes"] / 2**20
    return [
        ("streams", f"{s['streams']:,} (capacity {s['capacity']:,})"),
        ("layers", " -> ".join(layers)),
        ("device", f"{device}, mode={mode}"),
        ("memory", f"{mib:,.1f} MiB of stream state"),
        ("rows", f"{s['rows']:,} in {s['batches']:,} batches, {s['rows_per_second']:,.0f} rows/s"),
        ("streams created/ended", f"{s['streams_created']:,} / {s['streams_ended']:,}"),
        ("evictions", f"{s['evictions']:,} (ttl {s['evicted_ttl']:,}, max_streams {s['evicted_max_streams']:,})"),
        ("dropped late rows", f"{s['dropped_late']:,}"),
    ]


def text(title: str, rows: list[tuple[str, str]]) -> str:
    body = "\n".join(f"  {name}: {value}" for name, value in rows)
    return f"{title}\n{body}"


def html(title: str, rows: list[tuple[str, str]]) -> str:
    # Left-aligned values: notebook front ends right-align table cells, which suits numbers, not these.
    cells = "".join(f"<tr><th style='text-align:left'>{_html.escape(name)}</th>"
                    f"<td style='text-align:left'>{_html.escape(value)}</td></tr>" for name, value in rows)
    return f"<div><strong>{_html.escape(title)}</strong><table>{cells}</table></div>"
