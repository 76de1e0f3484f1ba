"""The target column(s) of a training batch: validated once, at the edge.

``target`` names one ``FixedSizeList<float|int>[out_dim]`` column or a list of numeric columns (one
per output). A null target row (or a null in any of the numeric columns) counts for the streams'
state but not for the loss; a null value inside a non-null list, a non-finite value or a wrong width
is an error naming the column, row and stream.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from streamlstm.arrow import fixed_list_to_numpy
from streamlstm.errors import SchemaError, StreamError
from streamlstm.runtime.schema import describe_key

__all__ = ["parse_targets"]


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    if batch.schema.get_field_index(name) < 0:
        problem = "appears more than once" if name in batch.schema.names else "is missing"
        raise SchemaError(f"target column {name!r} {problem}; the batch has columns {batch.schema.names}")
    return batch.column(batch.schema.get_field_index(name))


def _list_targets(array: pa.Array, name: str, width: int, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    kind = array.type
    if not (pa.types.is_fixed_size_list(kind) and (pa.types.is_floating(kind.value_type)
                                                   or pa.types.is_integer(kind.value_type))):
        raise SchemaError(f"target column {name!r} must be FixedSizeList<float>[{width}], got {kind}")
    if kind.list_size != width:
        raise SchemaError(f"target column {name!r} must have width {width} (the model's output dim), "
                          f"got {kind.list_size}")
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    values = fixed_list_to_numpy(array)
    holes = valid & np.isnan(values).any(axis=1) if values.dtype.kind == "f" else np.zeros(len(valid), bool)
    if holes.any() and array.values.null_count:
        row = int(np.argmax(holes))
        raise StreamError(f"target column {name!r} has a null value inside row {row} (stream "
                          f"{describe_key(keys, row)}); a row's target is either null or complete")
    return values, valid


def _scalar_targets(batch: pa.RecordBatch, names: tuple[str, ...], width: int,
                    keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if len(names) != width:
        raise SchemaError(f"`target` names {len(names)} columns but the model's output dim is {width}")
    values, valid = np.zeros((batch.num_rows, width)), np.ones(batch.num_rows, bool)
    for index, name in enumerate(names):
        array = _column(batch, name)
        if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
            raise SchemaError(f"target column {name!r} must be numeric, got {array.type}")
        valid &= array.is_valid().to_numpy(zero_copy_only=False)
        values[:, index] = array.to_numpy(zero_copy_only=False)
    return values, valid


def parse_targets(batch: pa.RecordBatch, target: str | tuple[str, ...], width: int,
                  keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(values [rows, width] float, counts [rows] bool)``; values of rows that do not count are 0."""
    if isinstance(target, str):
        values, valid = _list_targets(_column(batch, target), target, width, keys)
        name = target
    else:
        values, valid = _scalar_targets(batch, target, width, keys)
        name = ", ".join(target)
    values = np.where(valid[:, None], values, 0).astype(np.float64 if values.dtype == np.float64 else np.float32)
    if not np.isfinite(values).all():
        row = int(np.argmax(~np.isfinite(values).all(axis=1)))
        raise StreamError(f"target column {name!r} has a non-finite value at row {row} (stream "
                          f"{describe_key(keys, row)}); targets must be finite")
    return values, valid
