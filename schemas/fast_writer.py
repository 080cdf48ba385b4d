"""A writer for the event envelope that skips fastavro's per-field dispatch on the hot path.

The producer encodes every event once, inside the trading loop; fastavro spends ~0.3 µs per
field on generic dispatch, most of it on envelope fields whose values repeat (producer id,
host, symbol, detector). This writer handles the top-level fields itself — strings (encoded
once and cached), ints/longs, enums — and hands the payload record to fastavro's compiled
writer. The plan is built from the schema, so a new schema version works as long as its
top-level fields use those types; otherwise `plan_for()` returns None and the codec uses
fastavro alone. Output is byte-identical to fastavro (tests/unit/test_codec.py checks it
with hypothesis); any value it does not take (wrong type, out of range) raises, and the
codec then lets fastavro write the event and name the problem.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from fastavro._write import write_data

INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)
_CACHE_LIMIT = 4096
_DOUBLE = struct.Struct("<d")
_SHIFTS = [tuple(range(0, 7 * (k - 1), 7)) for k in range(11)]


def varint(n: int, bounds: tuple[int, int] = LONG_RANGE) -> bytes:
    """Avro's zigzag varint of an int or long."""
    if type(n) is not int or not bounds[0] <= n <= bounds[1]:
        raise ValueError(f"{n!r} is not an Avro {'int' if bounds == INT_RANGE else 'long'}")
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _SMALL[z]
    if z < 0x4000:
        return bytes((z & 0x7F | 0x80, z >> 7))
    if z < 0x200000:
        return bytes((z & 0x7F | 0x80, z >> 7 & 0x7F | 0x80, z >> 14))
    if 0x40000000000 <= z < 0x100000000000000:
        # 7 groups (2^42..2^49: a sequence, epoch << 32 | n) or 8 (2^49..2^56: every µs timestamp this
        # century): three 14-bit chunks from a table, then the last one or two groups. ~4x faster than
        # building the bytes group by group.
        low = _CHUNK[z & 0x3FFF] + _CHUNK[z >> 14 & 0x3FFF] + _CHUNK[z >> 28 & 0x3FFF]
        return low + (_SMALL[z >> 42] if z < 0x2000000000000 else _LAST_CHUNK[z >> 42])
    groups = (z.bit_length() + 6) // 7
    return bytes([(z >> s) & 0x7F | 0x80 for s in _SHIFTS[groups]] + [z >> 7 * (groups - 1)])


_SMALL = [bytes([z]) for z in range(0x80)]
# Two varint groups of a 14-bit chunk: with the continuation bit on both (_CHUNK), or only on the
# first (_LAST_CHUNK, for a value whose top group is the chunk's second); ~1 MB for both.
_CHUNK = [bytes((c & 0x7F | 0x80, c >> 7 | 0x80)) for c in range(0x4000)]
_LAST_CHUNK = [bytes((c & 0x7F | 0x80, c >> 7)) for c in range(0x4000)]


def _compile_record(fields: list[tuple[str, Callable[[Any], bytes]]], name: str) -> Callable[[bytearray, dict], None]:
    """One straight-line function writing a record's fields (as dataclasses and attrs generate their
    methods): a loop over fields cost more than the encoding itself."""
    namespace: dict[str, Any] = {}
    lines = [f"def {name}(out, record):"]
    for i, (field, encode) in enumerate(fields):
        namespace[f"encode{i}"] = encode
        lines.append(f"    out += encode{i}(record[{field!r}])")
    exec("\n".join(lines), namespace)  # generated from the schema only: no outside input
    return namespace[name]


class EnvelopeWriter:
    """write(out, event): the envelope's fields, then the payload union's branch index and record."""

    def __init__(self, head: list[tuple[str, Callable[[Any], bytes]]], union_field: str | None,
                 branches: dict[str, tuple[bytes, Callable[[bytearray, dict], None]]]) -> None:  # fmt: skip
        self._head = _compile_record(head, "write_head")
        self._union_field = union_field
        self._branches = branches

    def write(self, out: bytearray, event: dict) -> None:
        self._head(out, event)
        if self._union_field is not None:
            branch, record = event[self._union_field]
            index, write_branch = self._branches[branch]
            out += index
            write_branch(out, record)


def _string_encoder() -> Callable[[Any], bytes]:
    cache: dict[str, bytes] = {}

    def encode(value: Any) -> bytes:
        if type(value) is not str:
            raise TypeError(f"{value!r} is not a string")
        encoded = cache.get(value)  # not try/except: a miss (every event id) would cost a raise
        if encoded is not None:
            return encoded
        raw = value.encode()
        encoded = varint(len(raw)) + raw
        if len(cache) < _CACHE_LIMIT:  # repeated values (producer, host, symbol) are cached; ids miss
            cache[value] = encoded
        return encoded

    return encode


def _enum_encoder(symbols: list[str]) -> Callable[[Any], bytes]:
    table = {symbol: varint(i) for i, symbol in enumerate(symbols)}

    def encode(value: Any) -> bytes:
        return table[value]

    return encode


def _int(value: Any) -> bytes:
    return varint(value, INT_RANGE)


def _double(value: Any) -> bytes:
    if type(value) is not float and type(value) is not int:
        raise TypeError(f"{value!r} is not a double")
    return _DOUBLE.pack(value)


def _field_encoder(kind: Any, named: dict) -> Callable[[Any], bytes] | None:
    if isinstance(kind, dict) and kind.get("type") in ("string", "int", "long", "double"):  # with a doc, say
        kind = kind["type"]
    if kind == "string":
        return _string_encoder()
    if kind == "long":
        return varint
    if kind == "int":
        return _int
    if kind == "double":
        return _double
    if isinstance(kind, dict) and kind.get("type") == "enum":
        return _enum_encoder(kind["symbols"])
    if isinstance(kind, str) and named.get(kind, {}).get("type") == "enum":
        return _enum_encoder(named[kind]["symbols"])
    return None


def plan_for(schema: dict, named: dict, options: dict) -> EnvelopeWriter | None:
    """A writer for `schema` (parsed, logical types stripped), or None if it uses other field types:
    top-level fields of the kinds above, plus at most one union of records (the payload), whose
    records are compiled the same way or else written by fastavro's compiled writer."""
    head: list[tuple[str, Callable[[Any], bytes]]] = []
    union_field = None
    branches: dict[str, tuple[bytes, Callable[[bytearray, dict], None]]] = {}
    for field in schema.get("fields", []):
        kind = field["type"]
        encode = _field_encoder(kind, named)
        if encode is not None and union_field is None:
            head.append((field["name"], encode))
        elif (
            encode is None
            and union_field is None
            and isinstance(kind, list)
            and all(isinstance(b, dict) and b.get("type") == "record" for b in kind)
        ):
            union_field = field["name"]
            for index, branch in enumerate(kind):
                branches[branch["name"]] = (varint(index), _branch_writer(branch, named, options))
        else:
            return None  # another type, or a field after the union: fastavro writes the whole event
    return EnvelopeWriter(head, union_field, branches)


def _branch_writer(record: dict, named: dict, options: dict) -> Callable[[bytearray, dict], None]:
    fields = [(f["name"], _field_encoder(f["type"], named)) for f in record["fields"]]
    if all(encode is not None for _, encode in fields):
        return _compile_record(fields, "write_branch")  # type: ignore[arg-type]

    def with_fastavro(out: bytearray, value: dict) -> None:
        write_data(out, value, record, named, "", options)

    return with_fastavro
