"""streamlstm.key_group / stable_hash: fixed values, an independent reference, encodings, processes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamlstm as sl
from streamlstm.errors import ArgumentTypeError, ConfigError, SchemaError, StreamError
from streamlstm.runtime.key_groups import key_group, stable_hash

# -- an independent, straightforward reference: one key at a time, Python ints masked to 64 bits --------------
M64 = 0xFFFFFFFFFFFFFFFF


def ref_splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_hash(key: int | str) -> int:
    if isinstance(key, int):
        return ref_splitmix64(key & M64)
    data = key.encode("utf-8")
    total = len(data) * 0xD6E8FEB86659FD93
    for start in range(0, len(data), 8):
        word = int.from_bytes(data[start:start + 8].ljust(8, b"\0"), "little")
        total += ref_splitmix64(word ^ ((start // 8) * 0x9E3779B97F4A7C15 & M64))
    return ref_splitmix64(total & M64)


# -- fixed keys and their groups, written down once (computed with ref_hash) ---------------------------------
INTS = [0, 1, 2, 3, 7, 42, 1000, 123456789, 2**31 - 1, 2**32, -1, -2, -1000, 2**63 - 1, -2**63]
INT_GROUPS_128 = [47, 65, 78, 109, 87, 21, 72, 121, 103, 56, 32, 33, 98, 39, 91]
INT_GROUPS_7 = [2, 2, 4, 2, 2, 5, 0, 5, 1, 6, 0, 0, 6, 2, 6]

LONG = "".join(chr(ord("a") + i % 26) for i in range(100))
#          bytes: 0   1    1    2     7          8           9            8           12            9      4    100
STRINGS = ["", "a", "b", "ab", "1234567", "12345678", "123456789", "sensor-7", "überstraße", "日本語", "🙂", LONG]
STRING_GROUPS_128 = [47, 35, 14, 123, 53, 13, 11, 95, 85, 42, 113, 43]
STRING_GROUPS_7 = [2, 4, 1, 5, 5, 5, 0, 1, 6, 6, 4, 4]

HASHES = {  # full 64-bit values; stable_hash(0) is SplitMix64's well-known first output for seed 0
    0: 0xE220A8397B1DCDAF, -1: 0xE4D971771B652C20, 2**63 - 1: 0x2A67D7552E039EA7, -2**63: 0x481EC0A212A9F3DB,
    "": 0xE220A8397B1DCDAF, "a": 0x0493D9FE2FF87BA3, "12345678": 0xD4D1D6221355E08D,
    "123456789": 0x87D88BC8CC3F318B, "überstraße": 0x4340336AD828BED5,
}


def test_the_fixed_keys_have_the_fixed_lengths():
    assert [len(s.encode()) for s in STRINGS] == [0, 1, 1, 2, 7, 8, 9, 8, 12, 9, 4, 100]


@pytest.mark.parametrize("keys, groups, expected", [
    (INTS, 128, INT_GROUPS_128), (INTS, 7, INT_GROUPS_7),
    (STRINGS, 128, STRING_GROUPS_128), (STRINGS, 7, STRING_GROUPS_7),
])
def test_fixed_groups(keys, groups, expected):
    assert [ref_hash(k) % groups for k in keys] == expected   # the literals are the reference's
    result = key_group(keys, groups)
    assert result.dtype == np.int64
    assert result.tolist() == expected
    assert [key_group(k, groups) for k in keys] == expected   # one key at a time: Python ints


def test_fixed_hashes():
    for key, expected in HASHES.items():
        assert ref_hash(key) == expected
        assert stable_hash(key) == expected
        assert isinstance(stable_hash(key), int)
    hashes = stable_hash(INTS)
    assert hashes.dtype == np.uint64
    assert hashes.tolist() == [ref_hash(k) for k in INTS]


def test_public_name():
    assert sl.key_group is key_group
    assert sl.key_group(["a", "b"], groups=128).tolist() == STRING_GROUPS_128[1:3]
    assert key_group(5) == key_group([5])[0] == key_group(np.int64(5)) == key_group(pa.array([5], pa.int8()))[0]
    assert key_group("a") == key_group(np.str_("a")) == STRING_GROUPS_128[1]


# -- the vectorized hash equals the reference on arbitrary keys ------------------------------------------------
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-2**63, 2**63 - 1), max_size=50))
def test_int_hashes_match_the_reference(keys):
    assert stable_hash(pa.array(keys, pa.int64())).tolist() == [ref_hash(k) for k in keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(text, max_size=30), st.integers(0, 30), st.integers(0, 30))
def test_string_hashes_match_the_reference(keys, lo, length):
    expected = [ref_hash(k) for k in keys]
    for arrow_type in (pa.string(), pa.large_string()):
        array = pa.array(keys, arrow_type)
        assert stable_hash(array).tolist() == expected
        assert stable_hash(array.slice(lo, length)).tolist() == expected[lo:lo + length]
        assert stable_hash(array.dictionary_encode()).tolist() == expected


def test_a_long_key():
    key = "".join(chr(0x41 + (i * 7919) % 0x2000) for i in range(50_000))   # ~140 kB of UTF-8
    assert stable_hash([key, "x", key[1:]]).tolist() == [ref_hash(key), ref_hash("x"), ref_hash(key[1:])]


# -- encodings of the same keys give the same groups --------------------------------------------------------
def test_integer_types_agree():
    small = [0, 1, 5, 100, 127]
    expected = key_group(pa.array(small, pa.int64())).tolist()
    for arrow_type in (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
                       pa.uint64()):
        assert key_group(pa.array(small, arrow_type)).tolist() == expected, arrow_type
    negative = [-128, -1, 0, 127]
    expected = key_group(pa.array(negative, pa.int64())).tolist()
    for arrow_type in (pa.int8(), pa.int16(), pa.int32()):
        assert key_group(pa.array(negative, arrow_type)).tolist() == expected, arrow_type
    assert key_group(pa.array([2**63 - 1], pa.uint64())).tolist() == [INT_GROUPS_128[INTS.index(2**63 - 1)]]
    assert key_group(np.array(INTS, np.int64)).tolist() == INT_GROUPS_128


def test_string_encodings_agree():
    expected = STRING_GROUPS_128
    plain = pa.array(STRINGS, pa.string())
    forms = {
        "string": plain,
        "large_string": pa.array(STRINGS, pa.large_string()),
        "dictionary": plain.dictionary_encode(),
        "dictionary<large_string>": pa.array(STRINGS, pa.large_string()).dictionary_encode(),
        "chunked": pa.chunked_array([plain.slice(0, 5), plain.slice(5, 0), plain.slice(5)]),
        "chunked dictionaries": pa.chunked_array([pa.array(STRINGS[:4]).dictionary_encode(),
                                                  pa.array(STRINGS[4:]).dictionary_encode()]),
        "repeated dictionary": pa.DictionaryArray.from_arrays(pa.array(range(len(STRINGS)), pa.int8()),
                                                              pa.array(STRINGS)),
    }
    for name, array in forms.items():
        assert key_group(array).tolist() == expected, name
    padded = pa.array(["pad", *STRINGS, "pad"])
    assert key_group(padded.slice(1, len(STRINGS))).tolist() == expected
    assert key_group(padded.dictionary_encode().slice(1, len(STRINGS))).tolist() == expected
    large = pa.array(["pad", *STRINGS], pa.large_string())
    assert key_group(large.slice(1)).tolist() == expected


def test_integer_encodings_agree():
    plain = pa.array(INTS, pa.int64())
    for array in (plain.dictionary_encode(), pa.chunked_array([plain.slice(0, 3), plain.slice(3)]),
                  pa.array([99, *INTS], pa.int64()).slice(1)):
        assert key_group(array).tolist() == INT_GROUPS_128


def test_empty_inputs():
    for keys in ([], pa.array([], pa.string()), pa.array([], pa.int32()), pa.chunked_array([], pa.int64()),
                 pa.array(["a"]).slice(1)):
        result = key_group(keys)
        assert result.dtype == np.int64 and result.shape == (0,)
        assert stable_hash(keys).dtype == np.uint64


def test_strings_that_are_all_empty():
    assert stable_hash(["", "", ""]).tolist() == [ref_hash("")] * 3


def test_unused_dictionary_entries_do_not_matter():
    with_null = pa.DictionaryArray.from_arrays(pa.array([1, 1, 2], pa.int8()), pa.array([None, "a", "b"]))
    assert key_group(with_null).tolist() == key_group(["a", "a", "b"]).tolist()
    too_big = pa.DictionaryArray.from_arrays(pa.array([1, 1], pa.int8()), pa.array([2**64 - 1, 5], pa.uint64()))
    assert key_group(too_big).tolist() == key_group([5, 5]).tolist()


# -- the same in every process -------------------------------------------------------------------------------
def test_stable_across_processes():
    root = Path(__file__).resolve().parents[2]
    code = (f"import json, streamlstm as sl; print(json.dumps([sl.key_group({INTS!r}).tolist(), "
            f"sl.key_group({STRINGS!r}, 7).tolist(), hash('a') % 1000]))")
    results = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout))
    assert results[0][2] != results[1][2]   # the processes really hash str differently
    for ints, strings, _ in results:
        assert ints == INT_GROUPS_128
        assert strings == STRING_GROUPS_7


# -- errors ----------------------------------------------------------------------------------------------------
def test_null_keys_name_the_row():
    cases = [
        (pa.array([1, None, 3]), 1),
        (pa.array(["a", "b", None]), 2),
        (pa.array(["a", None]).dictionary_encode(), 1),
        (pa.DictionaryArray.from_arrays(pa.array([0, 1]), pa.array(["a", None])), 1),   # a null dictionary value
        (pa.chunked_array([pa.array([1, 2]), pa.array([3, None])]), 3),
        ([1, 2, None], 2),
    ]
    for keys, row in cases:
        with pytest.raises(StreamError, match=rf"`keys` has a null at row {row}\b"):
            key_group(keys)
        with pytest.raises(ValueError):
            stable_hash(keys)


def test_uint64_above_int64_names_value_and_row():
    big = 2**63 + 5
    for keys, row in [(pa.array([1, big], pa.uint64()), 1),
                      (pa.chunked_array([pa.array([1, 2], pa.uint64()), pa.array([big], pa.uint64())]), 2),
                      (pa.DictionaryArray.from_arrays(pa.array([0, 0, 1]), pa.array([7, big], pa.uint64())), 2)]:
        with pytest.raises(StreamError, match=rf"uint64 value {big} at row {row}.*int64 maximum"):
            key_group(keys)
    for keys in (2**64, 2**63, -2**63 - 1, [1, 2**63]):
        with pytest.raises(StreamError, match=r"outside int64 \(integer keys must be in \[-2\*\*63, 2\*\*63\)\)"):
            key_group(keys)


def test_unsupported_key_types():
    for keys, type_name in [(pa.array([1.5]), "double"), ([1.5, 2.0], "double"), (pa.array([True]), "bool"),
                            (True, "bool"), (pa.array([b"ab"]), "binary"),
                            (pa.array([1.0]).dictionary_encode(), "dictionary<values=double")]:
        with pytest.raises(SchemaError, match=rf"`keys` must be an integer type, string, .*got {type_name}"):
            key_group(keys)
    for keys in (object(), {"a": 1}, b"ab", 1.5):
        with pytest.raises(ArgumentTypeError, match="`keys` must be a pyarrow Array or ChunkedArray, an int, a str"):
            key_group(keys)
    with pytest.raises(ArgumentTypeError, match="`keys` must be all ints or all strs, got list"):
        key_group([1, "a"])


@pytest.mark.parametrize("groups, error, message", [
    (0, ConfigError, "`groups` must be an integer between 1 and 2\\*\\*31 - 1, got 0"),
    (-3, ConfigError, "got -3"),
    (2**31, ConfigError, f"got {2**31}"),
    (True, ArgumentTypeError, "`groups` must be an integer, got bool"),
    (8.0, ArgumentTypeError, "`groups` must be an integer, got float"),
    ("8", ArgumentTypeError, "got str"),
    (None, ArgumentTypeError, "got NoneType"),
])
def test_bad_groups(groups, error, message):
    with pytest.raises(error, match=message):
        key_group([1, 2], groups)


def test_group_bounds():
    assert key_group(INTS, 1).tolist() == [0] * len(INTS)
    top = 2**31 - 1
    assert key_group(INTS, top).tolist() == [ref_hash(k) % top for k in INTS]
    assert key_group(INTS, np.int32(7)).tolist() == INT_GROUPS_7


# -- the groups are well spread ------------------------------------------------------------------------------------
def test_sequential_ints_spread_over_groups():
    counts = np.bincount(key_group(np.arange(10_000), 128), minlength=128)
    assert len(counts) == 128
    assert counts.min() >= 40 and counts.max() <= 120, (counts.min(), counts.max())


def test_sequential_names_spread_over_groups():
    counts = np.bincount(key_group([f"sensor-{i}" for i in range(10_000)], 128), minlength=128)
    assert counts.min() >= 40 and counts.max() <= 120, (counts.min(), counts.max())
