"""Arrow <-> numpy / torch helpers shared by the stream runtime, the Flight client and the dashboard.

A stream's features and outputs travel as one ``FixedSizeList<float>[width]`` column: row ``i`` holds
the ``width`` values of one step. These helpers convert such columns without copying where the memory
layout allows it:

- :func:`as_record_batch`: a RecordBatch or Table as one RecordBatch;
- :func:`fixed_list`: a ``[n, width]`` numpy array as a FixedSizeList array (null rows where ``valid``
  is False);
- :func:`fixed_list_to_numpy`: a FixedSizeList array (or ChunkedArray) as a ``[n, width]`` numpy array,
  slices respected;
- :func:`as_tensor`: ``torch.from_numpy`` for read-only Arrow memory, without torch's warning.

This module needs only numpy and pyarrow; torch is imported by :func:`as_tensor` when first called.

Example:
    >>> import numpy as np
    >>> from streamlstm.arrow import fixed_list, fixed_list_to_numpy
    >>> column = fixed_list(np.array([[1, 2], [3, 4], [5, 6]]), valid=np.array([True, False, True]))
    >>> column.type, column.null_count
    (FixedSizeListType(fixed_size_list<item: float>[2]), 1)
    >>> fixed_list_to_numpy(column.slice(1))
    array([[nan, nan],
           [ 5.,  6.]], dtype=float32)
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from streamlstm.errors import ArgumentTypeError, ShapeError

if TYPE_CHECKING:
    import torch

__all__ = ["as_record_batch", "as_tensor", "fixed_list", "fixed_list_to_numpy"]

_quiet = False   # torch's read-only warning has been silenced once (it warns once per process anyway)
_torch: Any = None   # torch, imported by the first as_tensor call (an import statement per call shows)


def as_record_batch(batch: Any) -> pa.RecordBatch | None:
    """``batch`` as one RecordBatch (a Table's chunks combined), or None when it is neither.

    Example:
        >>> table = pa.table({"id": [1, 2]})
        >>> as_record_batch(table).num_rows, as_record_batch([1, 2]) is None
        (2, True)
    """
    if isinstance(batch, pa.RecordBatch):
        return batch
    if isinstance(batch, pa.Table):
        combined = batch.combine_chunks()
        batches = combined.to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=batch.schema)
    return None


def fixed_list(values: Any, valid: Any = None) -> pa.FixedSizeListArray:
    """A ``FixedSizeList<float>[width]`` array with one row per row of ``values``.

    Args:
        values (np.ndarray): ``[n, width]`` values, ``width >= 1``. float16, float32 and float64 keep
            their type; anything else (integers, bools, nested lists) becomes float32. A C-contiguous
            float array is shared with the result, not copied: do not change it while the result is used.
        valid (np.ndarray, None): ``[n]`` bools; the rows where it is False are null. None: no nulls.

    Raises:
        ShapeError: ``values`` is not 2-D with ``width >= 1``, or ``valid`` is not ``[n]``.
        ArgumentTypeError: ``values`` is not numeric.

    Example:
        >>> fixed_list(np.zeros((2, 3), np.float64)).type
        FixedSizeListType(fixed_size_list<item: double>[3])
    """
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"`values` must be a numeric array, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] < 1:
        raise ShapeError(f"`values` must have shape [n, width] with width >= 1, got {list(array.shape)}")
    if array.dtype.kind != "f":
        array = array.astype(np.float32)
    n, width = array.shape
    flat = pa.array(np.ascontiguousarray(array).reshape(-1))
    mask = None
    if valid is not None:
        valid = np.asarray(valid)
        if valid.dtype != np.bool_ or valid.shape != (n,):
            raise ShapeError(f"`valid` must be a bool array of shape [{n}], got {valid.dtype} {list(valid.shape)}")
        if not valid.all():
            mask = pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(flat, width, mask=mask)


def _chunk_to_numpy(array: pa.FixedSizeListArray, width: int) -> np.ndarray:
    # ``array.values`` ignores the array's slice offset (and ``flatten()`` drops null rows): cut by hand.
    values = array.values.slice(array.offset * width, len(array) * width)
    flat = values.to_numpy(zero_copy_only=False)   # zero-copy unless there are null values (-> NaN)
    if array.null_count:
        flat = flat.astype(np.float64 if flat.dtype.kind != "f" else flat.dtype, copy=True)
        result = flat.reshape(len(array), width)
        result[~array.is_valid().to_numpy(zero_copy_only=False)] = np.nan
        return result
    return flat.reshape(len(array), width)


def fixed_list_to_numpy(array: pa.FixedSizeListArray | pa.ChunkedArray) -> np.ndarray:
    """The ``[n, width]`` numpy array of a FixedSizeList column (an Array or a ChunkedArray).

    The result shares Arrow's memory (read-only) when it can: one chunk, no nulls. Slices are respected.
    Null rows and null values read as NaN (a copy; integer values then become float64).

    Raises:
        ArgumentTypeError: ``array`` is not a FixedSizeList of numbers.

    Example:
        >>> fixed_list_to_numpy(pa.chunked_array([fixed_list(np.ones((1, 2))), fixed_list(np.zeros((1, 2)))]))
        array([[1., 1.],
               [0., 0.]])
    """
    arrow_type = getattr(array, "type", None)
    if not isinstance(array, (pa.Array, pa.ChunkedArray)) or not pa.types.is_fixed_size_list(arrow_type) \
            or not (pa.types.is_integer(arrow_type.value_type) or pa.types.is_floating(arrow_type.value_type)):
        got = arrow_type if isinstance(array, (pa.Array, pa.ChunkedArray)) else type(array).__name__
        raise ArgumentTypeError(f"`array` must be a pyarrow FixedSizeList array of numbers, got {got}")
    width = arrow_type.list_size
    if isinstance(array, pa.Array):
        return _chunk_to_numpy(array, width)
    chunks = [_chunk_to_numpy(chunk, width) for chunk in array.chunks]
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        return np.empty((0, width), arrow_type.value_type.to_pandas_dtype())
    return np.concatenate(chunks)


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy(array)``, also for Arrow's read-only memory, without torch's warning.

    The tensor shares ``array``'s memory. torch warns once per process that it cannot protect a read-only
    array from writes; callers of this function never write to such tensors, so the warning is silenced.

    Example:
        >>> x = fixed_list_to_numpy(fixed_list(np.ones((2, 3), np.float32)))
        >>> x.flags.writeable, as_tensor(x).shape
        (False, torch.Size([2, 3]))
    """
    global _quiet, _torch
    if _torch is None:
        import torch as _torch
    if _quiet or array.flags.writeable:
        return _torch.from_numpy(array)
    with warnings.catch_warnings():   # torch warns once per process about read-only arrays
        warnings.simplefilter("ignore", UserWarning)
        tensor = _torch.from_numpy(array)
    _quiet = True
    return tensor
