"""The Arrow schema contract of a stream runtime, and the one place where a fed batch is validated.

A batch holds one row per step of some stream:

=========== ======================================================= ===========
column      type                                                    required
=========== ======================================================= ===========
key         int8..int64, uint8..uint64 (cast to int64), string,     yes
            large_string, or a dictionary of strings or integers
features    ``FixedSizeList<float16|float32|float64>[F]``, or       yes
            ``List``/``LargeList`` of those floats whose rows all
            hold F values, or a list of numeric scalar columns
            (one per feature)
mask        bool: False = the step is masked (Keras masking)        no
reset       bool: True = zero the stream's state before this row    no
end         bool: True = release the stream after this row          no
time        integer, float, timestamp, date or duration; per        no
            stream strictly increasing
=========== ======================================================= ===========

No column may hold nulls. :func:`parse_batch` turns a batch into numpy arrays (zero-copy where the
layout allows) or raises :class:`~streamlstm.errors.StreamError` naming column, row, expected and
actual; it never touches runtime state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.arrow import as_record_batch
from streamlstm.errors import ArgumentTypeError, ConfigError, SchemaError, StreamError

__all__ = ["BatchParser", "Columns", "ParsedBatch", "describe_key", "key_kind", "parse_batch"]


@dataclass(frozen=True)
class Columns:
    """Which columns of a fed batch mean what (the runtime's constructor arguments)."""

    key: str
    features: str | tuple[str, ...]
    mask: str | None = None
    reset: str | None = None
    end: str | None = None
    time: str | None = None

    @classmethod
    def named(cls, key: Any, features: Any, mask: Any = None, reset: Any = None, end: Any = None,
              time: Any = None) -> Columns:
        """The columns given to a runtime, checked: names are strings, distinct, and not ``output``."""
        for name, value in (("key", key), ("mask", mask), ("reset", reset), ("end", end), ("time", time)):
            if value is not None and not isinstance(value, str):
                raise ArgumentTypeError(f"`{name}` must be a column name (str), got {type(value).__name__}")
        if not isinstance(features, str):
            if not isinstance(features, (list, tuple)) or not features or \
                    not all(isinstance(f, str) for f in features):
                raise ArgumentTypeError(f"`features` must be a column name or a non-empty list of names, "
                                        f"got {features!r}")
            features = tuple(features)
        names = [key, *([features] if isinstance(features, str) else features), mask, reset, end, time]
        used = [n for n in names if n is not None]
        if len(set(used)) != len(used) or "output" in used:
            raise ConfigError(f"column names must be distinct and not 'output', got {used}")
        return cls(key, features, mask, reset, end, time)


@dataclass(slots=True)
class ParsedBatch:
    """A validated batch as arrays; ``keys`` keeps the Arrow key column for the output."""

    num_rows: int
    keys: pa.Array
    x: np.ndarray                      # [num_rows, F], float32 or float64
    mask: np.ndarray | None = None     # bool [num_rows]; None = every step real
    reset: np.ndarray | None = None
    end: np.ndarray | None = None
    time: np.ndarray | None = None     # int64 or float64 [num_rows]
    time_column: pa.Array | None = None

    def plain(self) -> bool:
        """No row resets or ends a stream (the row layout then depends on the key column only)."""
        return (self.reset is None or not self.reset.any()) and (self.end is None or not self.end.any())


def key_kind(arrow_type: pa.DataType) -> str | None:
    """``"int"`` or ``"str"`` for a supported key type, else None."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    return None


def describe_key(keys: pa.Array, row: int) -> str:
    """The key of ``row`` as it should appear in an error message."""
    return repr(keys[row].as_py())


def _column(batch: pa.RecordBatch, name: str, role: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    if index < 0:
        found = batch.schema.names.count(name)
        problem = f"appears {found} times" if found > 1 else "is missing"
        raise SchemaError(f"{role} column {name!r} {problem}; the batch has columns {batch.schema.names}")
    return batch.column(index)


def _no_nulls(array: pa.Array, name: str, keys: pa.Array | None) -> None:
    if array.null_count:
        row = int(np.flatnonzero(~np.asarray(array.is_valid().to_numpy(zero_copy_only=False)))[0])
        stream = "" if keys is None or array is keys else f" (stream {describe_key(keys, row)})"
        raise StreamError(f"column {name!r} has a null at row {row}{stream}; nulls are not allowed", row=row)


def _bool_column(batch: pa.RecordBatch, name: str | None, role: str, keys: pa.Array) -> np.ndarray | None:
    if name is None:
        return None
    array = _column(batch, name, role)
    if not pa.types.is_boolean(array.type):
        raise SchemaError(f"{role} column {name!r} must be bool, got {array.type}")
    _no_nulls(array, name, keys)
    return array.to_numpy(zero_copy_only=False)


def _keys(batch: pa.RecordBatch, name: str, expected_kind: str | None) -> pa.Array:
    keys = _column(batch, name, "key")
    kind = key_kind(keys.type)
    if kind is None:
        raise SchemaError(f"key column {name!r} must be an integer or string type (or a dictionary of one), "
                          f"got {keys.type}")
    if expected_kind is not None and kind != expected_kind:
        expected = "integer" if expected_kind == "int" else "string"
        raise SchemaError(f"key column {name!r} must be {expected} like the keys this runtime already holds, "
                          f"got {keys.type}")
    _no_nulls(keys, name, None)
    if pa.types.is_dictionary(keys.type) and keys.dictionary.null_count:
        _no_nulls(keys.dictionary.take(keys.indices), name, None)
    return keys


_LIST_TYPES = (pa.types.is_fixed_size_list, pa.types.is_list, pa.types.is_large_list)


def _list_features(array: pa.Array, name: str, width: int | None, keys: pa.Array) -> np.ndarray:
    if not (any(is_type(array.type) for is_type in _LIST_TYPES) and pa.types.is_floating(array.type.value_type)):
        raise SchemaError(f"features column {name!r} must be FixedSizeList<float32|float64>[F] (or a List/LargeList "
                          f"of floats whose rows all hold F values), got {array.type}")
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        if width is not None and size != width:
            raise SchemaError(f"features column {name!r} must have width {width} (the model's input dim), got {size}")
        _no_nulls(array, name, keys)
        values = array.values.slice(array.offset * size, len(array) * size)   # the rows' values, at the offset
    else:
        _no_nulls(array, name, keys)
        size = _common_length(array, name, width, keys)
        values = array.flatten()   # the rows' values, at the slice offset
    return _values_to_rows(values, len(array), size, name, keys)


def _common_length(array: pa.Array, name: str, width: int | None, keys: pa.Array) -> int:
    """The one length every row of a variable-size list column has (``width`` when known)."""
    lengths = array.value_lengths().to_numpy(zero_copy_only=False)
    if not len(lengths):
        return width or 0
    size = int(lengths[0]) if width is None else width
    wrong = np.flatnonzero(lengths != size)
    if len(wrong):
        row = int(wrong[0])
        why = "the model's input dim" if width is not None else "the length of row 0"
        raise StreamError(f"features column {name!r} row {row} (stream {describe_key(keys, row)}) holds "
                          f"{int(lengths[row])} values, expected {size} ({why}); every row needs the same length",
                          row=row)
    return size


def _values_to_rows(values: pa.Array, rows: int, size: int, name: str, keys: pa.Array) -> np.ndarray:
    if values.null_count:
        row = int(np.flatnonzero(~values.is_valid().to_numpy(zero_copy_only=False))[0]) // size
        raise StreamError(f"column {name!r} has a null feature value at row {row} "
                          f"(stream {describe_key(keys, row)}); nulls are not allowed", row=row)
    x = values.to_numpy(zero_copy_only=True) if len(values) else np.empty(0, np.float32)
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    return x.reshape(rows, size)


def _scalar_features(batch: pa.RecordBatch, names: tuple[str, ...], width: int | None,
                     keys: pa.Array) -> np.ndarray:
    if width is not None and len(names) != width:
        raise SchemaError(f"`features` names {len(names)} columns but the model's input dim is {width}")
    arrays = []
    for name in names:
        array = _column(batch, name, "features")
        if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
            raise SchemaError(f"features column {name!r} must be numeric, got {array.type}")
        _no_nulls(array, name, keys)
        arrays.append(array.to_numpy(zero_copy_only=False))
    dtype = np.float64 if any(a.dtype == np.float64 for a in arrays) else np.float32
    return np.stack(arrays, axis=1).astype(dtype, copy=False) if arrays else np.empty((batch.num_rows, 0))


def _check_finite(x: np.ndarray, name: str, keys: pa.Array, limit: float | None) -> None:
    if not _finite(x):
        row, col = (int(v[0]) for v in np.nonzero(~np.isfinite(x)))
        raise StreamError(f"column {name!r} has a non-finite value ({x[row, col]}) at row {row}, feature {col} "
                          f"(stream {describe_key(keys, row)}); pass allow_nonfinite=True to accept NaN/Inf",
                          row=row)
    if limit is not None and not _within(x, limit):
        row, col = (int(v[0]) for v in np.nonzero(np.abs(x) > limit))
        raise StreamError(f"column {name!r} has the value {float(x[row, col])!r} at row {row}, feature {col} (stream "
                          f"{describe_key(keys, row)}), beyond the largest value of the model's dtype "
                          f"({limit:.6g}): it would become inf; pass allow_nonfinite=True to accept that", row=row)


def _limit(x: np.ndarray, dtype: Any) -> float | None:
    """The largest magnitude ``x`` may hold to stay finite once cast to the model's ``dtype`` (None: any)."""
    if dtype is None or x.dtype != np.float64:
        return None
    limit = float(torch.finfo(dtype).max) if dtype.is_floating_point else None
    return None if limit is None or limit >= np.finfo(np.float64).max else limit


def _within(x: np.ndarray, limit: float) -> bool:
    flat = x.reshape(-1)
    # x . x <= limit**2 bounds every |x_i| by limit (one BLAS call); otherwise the exact check decides.
    return not flat.size or float(np.dot(flat, flat)) <= limit * limit or bool((np.abs(x) <= limit).all())


def _time_checked(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype == np.float64 and not np.isfinite(values).all():
        row = int(np.argmax(~np.isfinite(values)))
        raise StreamError(f"time column {name!r} has the value {float(values[row])!r} at row {row}; times must be "
                          f"finite", row=row)
    return values


def time_values(array: pa.Array, name: str, expected_type: pa.DataType | None) -> np.ndarray:
    """A time column as int64 (integers, timestamps, dates, durations) or float64 values."""
    kind = array.type
    if expected_type is not None and kind != expected_type:
        raise SchemaError(f"time column {name!r} must be {expected_type} like the earlier batches, got {kind}")
    if pa.types.is_floating(kind):
        return _time_checked(array.to_numpy(zero_copy_only=False).astype(np.float64, copy=False), name)
    if pa.types.is_integer(kind):
        values = array.to_numpy(zero_copy_only=False)
        if values.dtype == np.uint64 and values.size and values.max() > np.iinfo(np.int64).max:
            row = int(np.argmax(values > np.iinfo(np.int64).max))
            raise StreamError(f"time column {name!r} has the uint64 value {int(values[row])} at row {row}, above "
                              f"the int64 maximum; times must fit in int64", row=row)
        return values.astype(np.int64, copy=False)
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_duration(kind):
        storage = pa.int32() if kind == pa.date32() else pa.int64()
        return array.view(storage).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    raise SchemaError(f"time column {name!r} must be an integer, float, timestamp, date or duration, got {kind}")


class BatchParser:
    """:func:`parse_batch` for one runtime, remembering the last schema it accepted: a stream of
    batches with one schema has its column types checked once, and each batch then costs only the
    per-row checks (nulls, finiteness) and the conversion to numpy."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        # schema, key index, features index, settings, (width, value dtype, itemsize, cast limit)
        self._accepted: tuple[pa.Schema, int, int, Any, Any] | None = None
        # Only batches of a key and one features column (no mask, reset, end or time) are remembered.
        self._simple = columns.mask is None and columns.reset is None and columns.end is None \
            and columns.time is None and isinstance(columns.features, str)

    def parse(self, batch: Any, *, width: int | None, expected_key_kind: str | None,
              time_type: pa.DataType | None, allow_nonfinite: bool, dtype: Any = None) -> ParsedBatch:
        accepted, columns = self._accepted, self.columns
        simple = self._simple and type(batch) is pa.RecordBatch
        settings = (width, expected_key_kind, allow_nonfinite, dtype)
        if simple and accepted is not None and accepted[3] == settings and batch.schema.equals(accepted[0]):
            keys, array = batch.column(accepted[1]), batch.column(accepted[2])
            rows = len(array)
            if rows and not keys.null_count and not array.null_count:
                values = array.values
                if not values.null_count:   # the rows' values read straight from the buffer (no copy)
                    size, value_dtype, itemsize, limit = accepted[4]
                    flat = np.frombuffer(values.buffers()[1], value_dtype, rows * size,
                                         (values.offset + array.offset * size) * itemsize)
                    if (allow_nonfinite or _finite(flat)) and (limit is None or _within(flat, limit)):
                        return ParsedBatch(rows, keys, flat.reshape(rows, size))
        parsed = parse_batch(batch, columns, width=width, expected_key_kind=expected_key_kind,
                             time_type=time_type, allow_nonfinite=allow_nonfinite, dtype=dtype)
        features_type = batch.schema.field(columns.features).type if simple else None
        if simple and not pa.types.is_dictionary(parsed.keys.type) and pa.types.is_fixed_size_list(features_type):
            schema = batch.schema
            features = schema.field(columns.features).type
            if features.value_type in (pa.float32(), pa.float64()):   # float16 values are converted: no fast path
                value_dtype = np.dtype(features.value_type.to_pandas_dtype())
                limit = None if allow_nonfinite else _limit(np.empty(0, value_dtype), dtype)
                self._accepted = (schema, schema.get_field_index(columns.key),
                                  schema.get_field_index(columns.features), settings,
                                  (features.list_size, value_dtype, value_dtype.itemsize, limit))
        return parsed


def _finite(x: np.ndarray) -> bool:
    # x . x is NaN or Inf when a value is (or when huge finite values overflow: then the full check
    # decides); one BLAS call is several times cheaper than a ufunc reduction on short rows, and the
    # method cheaper than ``np.vdot`` (no dispatch).
    flat = x.reshape(-1)   # a view of the rows (contiguous)
    return not flat.size or math.isfinite(flat.dot(flat)) or bool(np.isfinite(x).all())


def parse_batch(batch: Any, columns: Columns, *, width: int | None, expected_key_kind: str | None,
                time_type: pa.DataType | None, allow_nonfinite: bool, dtype: Any = None) -> ParsedBatch:
    """Validate ``batch`` against the contract above; raises StreamError/SchemaError, changes nothing.
    ``dtype`` (the model's torch dtype) refuses float64 features that would overflow it to inf."""
    record_batch = as_record_batch(batch)
    if record_batch is None:
        raise SchemaError(f"`batch` must be a pyarrow.RecordBatch or pyarrow.Table, got {type(batch).__name__}")
    batch = record_batch
    keys = _keys(batch, columns.key, expected_key_kind)
    if isinstance(columns.features, str):
        array = _column(batch, columns.features, "features")
        x = _list_features(array, columns.features, width, keys)
        feature_name = columns.features
    else:
        x = _scalar_features(batch, columns.features, width, keys)
        feature_name = ", ".join(columns.features)
    if not allow_nonfinite:
        _check_finite(x, feature_name, keys, _limit(x, dtype))
    parsed = ParsedBatch(batch.num_rows, keys, x,
                         mask=_bool_column(batch, columns.mask, "mask", keys),
                         reset=_bool_column(batch, columns.reset, "reset", keys),
                         end=_bool_column(batch, columns.end, "end", keys))
    if columns.time is not None:
        array = _column(batch, columns.time, "time")
        _no_nulls(array, columns.time, keys)
        parsed.time = time_values(array, columns.time, time_type)
        parsed.time_column = array
    return parsed
