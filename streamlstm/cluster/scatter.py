"""Putting the shards' outputs back in input order with one copy.

Shard ``s`` returns the outputs of input rows ``rows[s]`` (in input order). A column whose values are
fixed-width numbers without nulls (int, float, or a fixed-size list of them: the model's outputs and
states) is scattered straight into one preallocated numpy array, ``out[rows[s]] = part_s``, and wrapped
as an Arrow array without a further copy. Any other column (strings, dictionaries, timestamps, nulls)
is concatenated and taken with the inverse permutation, as Arrow does it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["scatter_batches"]


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _as_matrix(column: pa.Array) -> np.ndarray | None:
    """``column``'s values as a numpy [rows, width] view (no copy), or None when it is not fixed-width
    numbers without nulls."""
    kind = column.type
    if column.null_count:
        return None
    if _is_number(kind):
        return column.to_numpy(zero_copy_only=True).reshape(len(column), 1)
    if pa.types.is_fixed_size_list(kind) and _is_number(kind.value_type):
        values = column.flatten()   # the child values of the rows of ``column`` (its offset applied)
        if values.null_count:
            return None
        return values.to_numpy(zero_copy_only=True).reshape(len(column), kind.list_size)
    return None


def _scatter_column(parts: Sequence[pa.Array], rows: Sequence[np.ndarray], n: int) -> pa.Array | None:
    """One array of ``n`` rows with ``parts[i]`` at ``rows[i]``, or None when a part is not fixed-width."""
    matrices = [_as_matrix(part) for part in parts]
    if any(m is None for m in matrices):
        return None
    kind = parts[0].type
    out = np.empty((n, matrices[0].shape[1]), matrices[0].dtype)
    for matrix, where in zip(matrices, rows):
        out[where] = matrix
    if pa.types.is_fixed_size_list(kind):
        return pa.FixedSizeListArray.from_arrays(pa.array(out.reshape(-1), kind.value_type), type=kind)
    return pa.array(out.reshape(-1), kind)


def scatter_batches(batches: Sequence[pa.RecordBatch], rows: Sequence[np.ndarray], inverse: np.ndarray
                    ) -> pa.RecordBatch:
    """The rows of ``batches[i]`` put at ``rows[i]`` of one batch (the ``rows`` partition ``range(n)``;
    ``inverse`` is the permutation that puts the batches, concatenated, in that order). Same schema."""
    schema, n = batches[0].schema, len(inverse)
    columns: list[pa.Array | None] = [_scatter_column([b.column(i) for b in batches], rows, n)
                                      for i in range(len(schema))]
    rest = [i for i, column in enumerate(columns) if column is None]
    if rest:
        taken = pa.concat_batches([b.select(rest) for b in batches]).take(pa.array(inverse))
        for j, i in enumerate(rest):
            columns[i] = taken.column(j)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
