"""Stable key groups: a 64-bit hash of a stream key that is the same everywhere, and ``hash % groups``.

:func:`key_group` assigns every stream key to one of ``groups`` groups, e.g. to shard streams over
servers or to split a replay into parts. The group of a key never depends on the machine, the process,
``PYTHONHASHSEED``, the Python, numpy or Arrow version, or on how the key column is encoded (int8 or
int64, string or large_string, dictionary-encoded, sliced, chunked). It is defined below precisely
enough to be reimplemented in any language.

Definition
----------
All arithmetic is on unsigned 64-bit integers, modulo 2**64; ``^`` is exclusive or, ``>>`` a logical
right shift::

    splitmix64(z):
        z = z + 0x9E3779B97F4A7C15
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)

- **Integer key** ``v`` (any signed or unsigned integer type, value in ``[-2**63, 2**63)``)::

      stable_hash(v) = splitmix64(v mod 2**64)          # the int64 two's-complement bits of v

- **String key** ``s``: let ``b`` be its UTF-8 bytes and ``len`` their number. Cut ``b`` into 8-byte
  words ``w_0, w_1, ..., w_{m-1}`` (``m = ceil(len / 8)``), each read as a little-endian unsigned
  64-bit integer, the last one padded with zero bytes::

      stable_hash(s) = splitmix64( len * 0xD6E8FEB86659FD93
                                   + sum over k < m of splitmix64(w_k ^ (k * 0x9E3779B97F4A7C15)) )

  The empty string has no words: ``stable_hash("") = splitmix64(0)``.

- **Group**: ``key_group(key, groups) = stable_hash(key) mod groups`` for ``1 <= groups < 2**31``.

A dictionary-encoded key hashes as its decoded value. Integer and string keys are meant for different
key columns and are not kept apart: the key ``1`` and the key ``"1"`` have unrelated hashes, but the
key ``0`` and the empty string ``""`` have the same one (``splitmix64(0)``).

For example ``stable_hash(0) = 0xE220A8397B1DCDAF`` (the first output of the SplitMix64 generator
seeded with 0) and ``stable_hash("a") = splitmix64(0xD6E8FEB86659FD93 + splitmix64(0x61))``.

Example:
    >>> import pyarrow as pa, streamlstm as sl
    >>> hex(sl.runtime.key_groups.stable_hash(0))
    '0xe220a8397b1dcdaf'
    >>> sl.key_group([0, 1, 2, 3], groups=128).tolist()
    [47, 65, 78, 109]
    >>> sl.key_group("sensor-7"), sl.key_group(pa.array(["sensor-7"]).dictionary_encode()).tolist()
    (95, [95])

The computation is vectorized with numpy over whole Arrow arrays: no Python loop runs over rows, and
none over the byte positions of a string, so a long key costs what its bytes cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamlstm.errors import ArgumentTypeError, ConfigError, SchemaError, StreamError

__all__ = ["key_group", "key_group_of_hashes", "stable_hash"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LENGTH = np.uint64(0xD6E8FEB86659FD93)
_INT64_MAX = np.iinfo(np.int64).max
_MAX_GROUPS = 2**31

_SUPPORTED = "an integer type, string, large_string, or a dictionary of one of those"


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on a uint64 array (wraps modulo 2**64; numpy arrays never warn)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _too_big(values: np.ndarray) -> np.ndarray | None:
    """Where uint64 values exceed the int64 maximum (None for other dtypes or when none does)."""
    if values.dtype != np.uint64 or not values.size:
        return None
    mask = values > np.uint64(_INT64_MAX)
    return mask if mask.any() else None


def _hash_ints(values: np.ndarray) -> np.ndarray:
    """Hashes of integer values (the caller has rejected uint64 values above the int64 maximum)."""
    return _splitmix64(values.astype(np.int64).view(np.uint64))


def _hash_strings(array: pa.Array) -> np.ndarray:
    """Hashes of a string or large_string array, straight from its offsets and data buffers.

    Null slots hash as whatever bytes they span (callers reject nulls first).
    """
    n = len(array)
    if n == 0:
        return np.empty(0, np.uint64)
    _, offsets_buffer, data_buffer = array.buffers()
    offset_type = np.dtype(np.int64 if pa.types.is_large_string(array.type) else np.int32)
    raw = np.frombuffer(offsets_buffer, dtype=offset_type, count=n + 1, offset=array.offset * offset_type.itemsize)
    base = int(raw[0])
    offsets = raw.astype(np.int64) - base          # the array's bytes are data[base : base + offsets[-1]]
    lengths = np.diff(offsets)
    total = int(offsets[-1])
    counts = (lengths + 7) // 8                    # words per string
    words_total = int(counts.sum())
    sums = np.zeros(n, np.uint64)
    if words_total:
        # The array's bytes, then 8 zero bytes so that the last word of the last string can be read whole.
        padded = np.zeros(total + 8, np.uint8)
        padded[:total] = np.frombuffer(data_buffer, dtype=np.uint8, count=total, offset=base)
        first_word = np.cumsum(counts) - counts    # index of each string's first word
        k = np.arange(words_total, dtype=np.int64) - np.repeat(first_word, counts)   # word index in its string
        start = np.repeat(offsets[:-1], counts) + 8 * k
        windows = np.lib.stride_tricks.sliding_window_view(padded, 8)   # windows[i] = padded[i : i + 8]
        word_bytes = windows[start]                                      # [words_total, 8], a copy
        valid = np.minimum(np.repeat(lengths, counts) - 8 * k, 8)        # bytes of each word inside its string
        word_bytes[np.arange(8) >= valid[:, None]] = 0
        words = word_bytes.view("<u8").reshape(words_total).astype(np.uint64)
        mixed = _splitmix64(words ^ (k.astype(np.uint64) * _GOLDEN))
        prefix = np.zeros(words_total + 1, np.uint64)
        np.cumsum(mixed, dtype=np.uint64, out=prefix[1:])
        sums = prefix[first_word + counts] - prefix[first_word]          # modulo 2**64; 0 for an empty string
    return _splitmix64(lengths.astype(np.uint64) * _LENGTH + sums)


class _RowError(Exception):
    """A null key (``value`` None) or a uint64 key above the int64 maximum at ``row`` of one chunk."""

    def __init__(self, row: int, value: int | None = None) -> None:
        super().__init__(row, value)
        self.row, self.value = row, value


def _first_false(mask: pa.Array | np.ndarray) -> int:
    if isinstance(mask, pa.Array):
        mask = mask.to_numpy(zero_copy_only=False)
    return int(np.argmin(mask))


def _hash_array(array: pa.Array) -> np.ndarray:
    """Hashes of one (non-chunked) Arrow array; raises _RowError for a null or out-of-range key."""
    if array.null_count:
        raise _RowError(_first_false(array.is_valid()))
    if not pa.types.is_dictionary(array.type):
        if pa.types.is_integer(array.type):
            values = array.to_numpy(zero_copy_only=False)
            too_big = _too_big(values)
            if too_big is not None:
                row = int(np.argmax(too_big))
                raise _RowError(row, int(values[row]))
            return _hash_ints(values)
        return _hash_strings(array)
    # Dictionary-encoded: hash each dictionary entry once, then take by index. Entries no row uses may
    # be null or out of range; only the ones used count.
    dictionary = array.dictionary
    indices = array.indices.to_numpy(zero_copy_only=False)
    if dictionary.null_count:
        used_valid = dictionary.is_valid().to_numpy(zero_copy_only=False)[indices]
        if not used_valid.all():
            raise _RowError(_first_false(used_valid))
        dictionary = pc.fill_null(dictionary, pa.scalar(0 if pa.types.is_integer(dictionary.type) else "",
                                                        dictionary.type))
    if not pa.types.is_integer(dictionary.type):
        return _hash_strings(dictionary)[indices]
    values = dictionary.to_numpy(zero_copy_only=False)
    too_big = _too_big(values)
    if too_big is not None:
        used_too_big = too_big[indices]
        if used_too_big.any():
            row = int(np.argmax(used_too_big))
            raise _RowError(row, int(values[indices[row]]))
        values = np.where(too_big, np.uint64(0), values)
    return _hash_ints(values)[indices]


def _as_arrow(keys: Any) -> tuple[pa.Array | pa.ChunkedArray, bool]:
    """``keys`` as Arrow data, and whether it was one Python scalar."""
    if isinstance(keys, (pa.Array, pa.ChunkedArray)):
        return keys, False
    scalar = isinstance(keys, (int, str, np.integer, np.str_))
    if not scalar and not isinstance(keys, (list, tuple, range, np.ndarray)):
        raise ArgumentTypeError(f"`keys` must be a pyarrow Array or ChunkedArray, an int, a str, or a list, tuple "
                                f"or numpy array of them, got {type(keys).__name__}")
    try:
        return pa.array([keys] if scalar else keys), scalar
    except OverflowError as exc:
        raise StreamError(f"`keys` holds an integer outside int64 (integer keys must be in [-2**63, 2**63)): "
                          f"{exc}") from exc
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"`keys` must be all ints or all strs, got {type(keys).__name__} that pyarrow "
                                f"cannot convert: {exc}") from exc


def _check_type(arrow_type: pa.DataType) -> None:
    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if not (pa.types.is_integer(value_type) or pa.types.is_string(value_type)
            or pa.types.is_large_string(value_type)):
        raise SchemaError(f"`keys` must be {_SUPPORTED}, got {arrow_type}")


def _hashes(keys: Any) -> tuple[np.ndarray, bool]:
    data, scalar = _as_arrow(keys)
    if pa.types.is_null(data.type) and not len(data):   # pa.array([])
        return np.empty(0, np.uint64), scalar
    _check_type(data.type)
    chunks = data.chunks if isinstance(data, pa.ChunkedArray) else [data]
    parts, start = [], 0
    for chunk in chunks:
        try:
            parts.append(_hash_array(chunk))
        except _RowError as exc:
            row = start + exc.row
            if exc.value is None:
                raise StreamError(f"`keys` has a null at row {row}; a null key has no hash or group") from None
            raise StreamError(f"`keys` has the uint64 value {exc.value} at row {row}, above the int64 maximum "
                              f"{_INT64_MAX}; integer keys must fit in int64") from None
        start += len(chunk)
    hashes = parts[0] if len(parts) == 1 else np.concatenate([np.empty(0, np.uint64), *parts])
    return hashes.astype(np.uint64, copy=False), scalar


def stable_hash(keys: Any) -> Any:
    """The stable 64-bit hash of every key (the definition is in the module docstring).

    Args:
        keys: a pyarrow Array or ChunkedArray of integers, strings (string or large_string) or a
            dictionary of either; or a Python int, str, or list of them (converted with ``pa.array``).

    Returns:
        np.ndarray[uint64] with one hash per key, or a Python int for a single int or str key.

    Raises:
        StreamError: a null key, or a uint64 key above the int64 maximum (the row is named).
        SchemaError: keys of another Arrow type (float, bool, binary, ...).
        ArgumentTypeError: ``keys`` cannot be converted to Arrow.

    Example:
        >>> stable_hash(["", "a"]).tolist() == [stable_hash(""), stable_hash("a")]
        True
    """
    hashes, scalar = _hashes(keys)
    return int(hashes[0]) if scalar else hashes


def key_group(keys: Any, groups: int = 128) -> Any:
    """The group of every key: ``stable_hash(keys) % groups``, the same on every machine and process.

    Args:
        keys: as for :func:`stable_hash`.
        groups (int, 128): how many groups, ``1 <= groups < 2**31``.

    Returns:
        np.ndarray[int64] with one group per key, or a Python int for a single int or str key.

    Raises:
        ConfigError: ``groups`` out of range; ArgumentTypeError: ``groups`` is not an int.
        StreamError, SchemaError, ArgumentTypeError: bad keys, as for :func:`stable_hash`.

    Example:
        >>> import streamlstm as sl
        >>> sl.key_group(["sensor-1", "sensor-2", "sensor-1"], groups=7).tolist()
        [5, 2, 5]
    """
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise ArgumentTypeError(f"`groups` must be an integer, got {type(groups).__name__}")
    if not 1 <= groups < _MAX_GROUPS:
        raise ConfigError(f"`groups` must be an integer between 1 and 2**31 - 1, got {groups}")
    hashes, scalar = _hashes(keys)
    result = key_group_of_hashes(hashes, groups).astype(np.int64)
    return int(result[0]) if scalar else result


def key_group_of_hashes(hashes: np.ndarray, groups: int) -> np.ndarray:
    """``hashes % groups`` as int32, for hashes already computed with :func:`stable_hash` (the stream
    runtime's key index hashes string keys anyway)."""
    return (hashes % np.uint64(groups)).astype(np.int32)
