"""A row encoded as PostgreSQL's binary record format (`record_send`): the chain's v2 encoding.

`record_send(ROW(a, b, ...))` is a column count, then for each column its
type OID, its length (-1 for NULL) and its binary value: int8 big-endian,
text as UTF-8, bytea as is, timestamptz as microseconds since 2000-01-01 UTC.
It is unambiguous (every value is typed and length-prefixed), PostgreSQL
computes it in C with one call per row, and Python builds the same bytes here,
so the sync (both databases) and the verifier agree byte for byte.

`field_checks` is the forensic aid of hashchain.py in this encoding: a CRC-32
of each column's segment, so a broken link can name the changed field.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
import zlib
from collections.abc import Callable, Sequence

from ppos.controlplane.core import hashchain

INT8 = 20
TEXT = 25
BYTEA = 17
TIMESTAMPTZ = 1184
SQL_TYPES = {INT8: "int8", TEXT: "text", BYTEA: "bytea", TIMESTAMPTZ: "timestamptz"}

_COUNT = struct.Struct(">i")
_INT8 = struct.Struct(">Iiq")
_VAR = struct.Struct(">Ii")
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# A value of the wrong type (only a tamperer's edit on SQLite stores one): oid 0 and
# length -2, which PostgreSQL never sends, so it can never match a sealed row.
_FOREIGN = _VAR.pack(0, -2)
# For encoders that know their values' types (the sync's): `INT8_SEGMENT(INT8, 8, value)`.
INT8_SEGMENT = _INT8.pack
NULL_INT8 = _VAR.pack(INT8, -1)
VAR_HEADER = _VAR.pack


def _micros(value: dt.datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime in a hash chain")
    delta = value - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _foreign(value: object) -> bytes:
    return _FOREIGN + repr(value).encode()


def _int8(value: object) -> bytes:
    if type(value) is int:
        return _INT8.pack(INT8, 8, value)
    return _VAR.pack(INT8, -1) if value is None else _foreign(value)


# Most text columns repeat from row to row (region, status, tenant, image, sweep)
# and a page's rows share their sync time: their segments are remembered.
@functools.lru_cache(maxsize=4096)
def text_segment(value: str) -> bytes:
    data = value.encode()
    return _VAR.pack(TEXT, len(data)) + data


def _text(value: object) -> bytes:
    if type(value) is str:
        return text_segment(value)
    return _VAR.pack(TEXT, -1) if value is None else _foreign(value)


def _bytea(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return _VAR.pack(BYTEA, len(data)) + data
    return _VAR.pack(BYTEA, -1) if value is None else _foreign(value)


@functools.lru_cache(maxsize=64)
def timestamptz_segment(value: dt.datetime) -> bytes:
    return _INT8.pack(TIMESTAMPTZ, 8, _micros(value))


def _timestamptz(value: object) -> bytes:
    if type(value) is dt.datetime:
        return timestamptz_segment(value)
    return _VAR.pack(TIMESTAMPTZ, -1) if value is None else _foreign(value)


# One function per type, chosen once per column: this runs for every field of every row synced.
ENCODERS: dict[int, Callable[[object], bytes]] = {
    INT8: _int8,
    TEXT: _text,
    BYTEA: _bytea,
    TIMESTAMPTZ: _timestamptz,
}


def segment(oid: int, value: object) -> bytes:
    """One column: type OID, length and value (NULL: length -1 and no value)."""
    return ENCODERS[oid](value)


def segments(oids: Sequence[int], values: Sequence[object]) -> list[bytes]:
    return [ENCODERS[oid](value) for oid, value in zip(oids, values, strict=True)]


def count(columns: int) -> bytes:
    """The record's header: its number of columns."""
    return _COUNT.pack(columns)


def encode(parts: Sequence[bytes]) -> bytes:
    """The record of the columns' segments, as `record_send` gives it."""
    return _COUNT.pack(len(parts)) + b"".join(parts)


@functools.cache
def _checks(columns: int) -> struct.Struct:
    return struct.Struct(f">{columns}I")


def field_checks(parts: Sequence[bytes]) -> bytes:
    return _checks(len(parts)).pack(*map(zlib.crc32, parts))


def changed_fields(names: Sequence[str], parts: Sequence[bytes], checks: bytes) -> list[str]:
    """The fields whose stored check no longer matches (all when the checks are unusable)."""
    return hashchain.differing(names, field_checks(parts), checks)
