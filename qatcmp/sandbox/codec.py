"""Plain data across a process boundary: an encoder and a decoder that can build nothing else.

The judge decodes what the candidate (model code) sends, so the decoder is the security
boundary: it knows eleven types (None, bool, int, float, complex, str, bytes, list, tuple,
dict, set, frozenset), builds them with their own constructors, looks nothing up by name and
calls no method an object could override (pickle and marshal can build functions or code
objects: never for untrusted bytes). It is a loop over the bytes, not recursion, and it has
caps on size, depth and integer length.

Values are written in post-order (children, then the container with its count), so decoding
is a stack machine: push scalars, pop N items into a container. Floats are their 8 IEEE
bytes (nan, inf and -0.0 come back exactly); tuple and list, set and frozenset stay apart;
bool is not int.

This module uses the standard library only: the sandboxed children import it from a
read-only copy of this file.
"""

from __future__ import annotations

import struct

MAX_DEPTH = 100
MAX_INT_BYTES = 1 << 16  # ~158,000 decimal digits
_LEN = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_COMPLEX = struct.Struct("<dd")

_SCALARS = {type(None): b"N", bool: b"?", int: b"i", float: b"f", complex: b"c", str: b"s", bytes: b"b"}
_CONTAINERS = {list: b"l", tuple: b"t", dict: b"d", set: b"S", frozenset: b"F"}
_BUILD = {ord("l"): list, ord("t"): tuple, ord("S"): set, ord("F"): frozenset}


class CodecError(ValueError):
    """A value that is not plain data, or bytes that do not decode to plain data."""


class Unsupported(CodecError):
    """A value of a type the codec does not carry (named in the message)."""


def type_name(value: object) -> str:
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    name = getattr(kind, "__qualname__", "?")
    return name if module == "builtins" else f"{module}.{name}"


def encode(value: object, *, convert=None, max_bytes: int = 1 << 24, max_depth: int = MAX_DEPTH) -> bytes:  # type: ignore[no-untyped-def]
    """The bytes of a plain value. `convert(obj)` may turn another object into a plain one
    (the candidate side turns numpy scalars and arrays into Python values); what it returns
    is checked like the rest. Raises Unsupported for anything else."""
    out = bytearray()
    stack: list[tuple[object, int, bool]] = [(value, 0, False)]
    while stack:
        obj, depth, is_header = stack.pop()
        if is_header:
            tag, count = obj  # type: ignore[misc]
            out += tag + _LEN.pack(count)
            continue
        kind = type(obj)
        if kind not in _SCALARS and kind not in _CONTAINERS and convert is not None:
            obj = convert(obj)
            kind = type(obj)
        if kind in _SCALARS:
            _encode_scalar(out, kind, obj)
        elif kind in _CONTAINERS:
            if depth >= max_depth:
                raise Unsupported(f"a value nested deeper than {max_depth} levels")
            if kind is dict:
                children = [part for pair in obj.items() for part in pair]  # type: ignore[attr-defined]
                count = len(children) // 2
            else:
                children = list(obj)  # type: ignore[call-overload]
                count = len(children)
            stack.append(((_CONTAINERS[kind], count), depth, True))
            stack.extend((child, depth + 1, False) for child in reversed(children))
        else:
            raise Unsupported(f"a {type_name(obj)} object")
        if len(out) > max_bytes:
            raise Unsupported(f"a value larger than {max_bytes} bytes")
    return bytes(out)


def _encode_scalar(out: bytearray, kind: type, obj: object) -> None:
    if obj is None:
        out += b"N"
    elif kind is bool:
        out += b"?" + (b"\x01" if obj else b"\x00")
    elif kind is int:
        size = (obj.bit_length() + 8) // 8  # type: ignore[attr-defined]  # room for the sign bit
        if size > MAX_INT_BYTES:
            raise Unsupported(f"an integer longer than {MAX_INT_BYTES} bytes")
        out += b"i" + _LEN.pack(size) + obj.to_bytes(size, "little", signed=True)  # type: ignore[attr-defined]
    elif kind is float:
        out += b"f" + _DOUBLE.pack(obj)
    elif kind is complex:
        out += b"c" + _COMPLEX.pack(obj.real, obj.imag)  # type: ignore[attr-defined]
    elif kind is str:
        data = obj.encode("utf-8", "surrogatepass")  # type: ignore[attr-defined]
        out += b"s" + _LEN.pack(len(data)) + data
    else:
        out += b"b" + _LEN.pack(len(obj)) + obj  # type: ignore[arg-type,operator]


def decode(data: bytes, *, max_depth: int = MAX_DEPTH) -> object:
    """The plain value in data, or CodecError. Builds only the eleven plain types."""
    view = memoryview(data)
    size = len(view)
    values: list[object] = []
    depths: list[int] = []
    pos = 0
    try:
        while pos < size:
            tag = view[pos]
            pos += 1
            if tag == 78:  # N
                values.append(None)
                depths.append(0)
                continue
            if tag == 63:  # ?
                flag = view[pos]
                if flag > 1:
                    raise CodecError("a bool that is neither 0 nor 1")
                values.append(flag == 1)
                depths.append(0)
                pos += 1
                continue
            if tag == 102:  # f
                values.append(_DOUBLE.unpack_from(view, pos)[0])
                depths.append(0)
                pos += 8
                continue
            if tag == 99:  # c
                real, imag = _COMPLEX.unpack_from(view, pos)
                values.append(complex(real, imag))
                depths.append(0)
                pos += 16
                continue
            (length,) = _LEN.unpack_from(view, pos)
            pos += 4
            if tag in (105, 115, 98):  # i s b: a payload of `length` bytes
                end = pos + length
                if end > size:
                    raise CodecError("truncated data")
                chunk = bytes(view[pos:end])
                pos = end
                if tag == 105:
                    if length > MAX_INT_BYTES:
                        raise CodecError("an integer that is too long")
                    values.append(int.from_bytes(chunk, "little", signed=True))
                elif tag == 115:
                    values.append(chunk.decode("utf-8", "surrogatepass"))
                else:
                    values.append(chunk)
                depths.append(0)
                continue
            _build_container(tag, length, values, depths, max_depth)
    except (struct.error, IndexError, UnicodeDecodeError, TypeError, OverflowError, MemoryError) as exc:
        # TypeError: an unhashable key or set element (a list inside a set).
        raise CodecError(f"undecodable data ({type(exc).__name__})") from None
    if len(values) != 1:
        raise CodecError("not exactly one value")
    return values[0]


def _build_container(tag: int, count: int, values: list[object], depths: list[int], max_depth: int) -> None:
    width = count * 2 if tag == 100 else count  # d: key, value pairs
    if tag != 100 and tag not in _BUILD:
        raise CodecError(f"unknown tag {tag}")
    if width > len(values):
        raise CodecError("a container with more items than were sent")
    start = len(values) - width
    items = values[start:]
    depth = 1 + max(depths[start:], default=0)
    if depth > max_depth:
        raise CodecError(f"a value nested deeper than {max_depth} levels")
    del values[start:], depths[start:]
    if tag == 100:
        built: object = dict(zip(items[0::2], items[1::2]))
    else:
        built = _BUILD[tag](items)
    values.append(built)
    depths.append(depth)
