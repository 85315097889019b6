"""The plain-data codec: exact round trips, and a decoder that builds nothing else."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatcmp.sandbox.codec import CodecError, Unsupported, decode, encode

hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.complex_numbers(allow_nan=False)
    | st.text() | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=12,
)
plain = st.recursive(
    hashable,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner) | st.dictionaries(hashable, inner, max_size=4)
    | st.sets(hashable, max_size=4) | st.frozensets(hashable, max_size=4),
    max_leaves=20,
)


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (True is not 1, (1,) is not [1])."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)  # type: ignore[arg-type]
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))  # type: ignore[arg-type]
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)  # type: ignore[attr-defined,index]
    return a == b


@settings(max_examples=300, deadline=None)
@given(plain)
def test_round_trip_keeps_values_and_types(value: object) -> None:
    assert same(decode(encode(value)), value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308,
                                   complex(math.nan, -0.0), 2 ** 4000, -(2 ** 63), True, False, "\ud800", b"\x00"])
def test_edge_values(value: object) -> None:
    back = decode(encode(value))
    assert type(back) is type(value)
    if isinstance(value, complex):
        assert struct.pack("<dd", back.real, back.imag) == struct.pack("<dd", value.real, value.imag)  # type: ignore[union-attr]
    else:
        assert same(back, value)


class LyingInt(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


class FakeArray:
    __module__ = "numpy"

    def __eq__(self, other: object) -> bool:
        return True

    def tolist(self) -> "FakeArray":
        return self


@pytest.mark.parametrize("value", [LyingInt(1), FakeArray(), object(), [1, FakeArray()], {"k": len}, range(3),
                                   bytearray(b"x"), {1: {2: LyingInt(0)}}])
def test_anything_else_is_refused_by_name(value: object) -> None:
    with pytest.raises(Unsupported):
        encode(value)


def test_convert_may_turn_objects_into_plain_values_only() -> None:
    assert decode(encode([1, FakeArray()], convert=lambda o: [2, 3] if isinstance(o, FakeArray) else o)) == [1, [2, 3]]
    with pytest.raises(Unsupported):
        encode(FakeArray(), convert=lambda o: o)


def test_depth_and_size_caps() -> None:
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(Unsupported, match="deeper"):
        encode(deep)
    with pytest.raises(Unsupported, match="larger"):
        encode("x" * 1000, max_bytes=100)
    raw = b"N" + (b"l" + struct.pack("<I", 1)) * 1000
    with pytest.raises(CodecError, match="deeper"):
        decode(raw)


@pytest.mark.parametrize("raw", [
    b"", b"X", b"i", b"s" + struct.pack("<I", 10) + b"abc", b"l" + struct.pack("<I", 3),
    b"NN", b"?\x02", b"s" + struct.pack("<I", 1) + b"\xff",
    b"N" + b"N" + b"l" + struct.pack("<I", 2) + b"S" + struct.pack("<I", 1),  # a list inside a set
    b"N" + b"d" + struct.pack("<I", 1),  # a dict with half a pair
    b"i" + struct.pack("<I", 1 << 20) + b"\x00" * (1 << 20),  # an integer too long
])
def test_undecodable_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_to_plain_data_or_fail_cleanly(raw: bytes) -> None:
    try:
        value = decode(raw)
    except CodecError:
        return
    assert same(decode(encode(value)), value)
