"""A hash chain over stored rows: each link commits to its predecessor and to every field.

`link = SHA-256(previous link || encode(domain, fields))`. The encoding is
unambiguous: each value carries a type tag and, for text and bytes, its
length, so no two different rows (or a value split differently across two
fields) encode alike. Datetimes are microseconds since the epoch in UTC.

`field_checks` is a forensic aid, not a proof: a CRC-32 of each field's
encoding, stored beside the link, so a verifier that finds a link broken can
say which field changed. Whoever rewrites a row can rewrite its checks too;
the link and the signed checkpoints are what prove.

This is the chain's v1 encoding, kept for the rows chained with it (and for
registrysync_0002, which chained the rows stored before it); rows are chained
in v2 since (core/pgrecord.py, services/registry_sync/chain.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any

GENESIS = bytes(32)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT = struct.Struct(">Bq")
_LENGTH = struct.Struct(">BI")

Value = None | bool | int | str | bytes | dt.datetime


def _none(value: None) -> bytes:
    return b"\x00"


def _int(value: int) -> bytes:
    return _INT.pack(1, value)


def _bool(value: bool) -> bytes:
    return _INT.pack(5, int(value))


def _str(value: str) -> bytes:
    data = value.encode("utf-8")
    return _LENGTH.pack(2, len(data)) + data


def _bytes(value: bytes | bytearray | memoryview) -> bytes:
    data = bytes(value)
    return _LENGTH.pack(3, len(data)) + data


def _datetime(value: dt.datetime) -> bytes:
    if value.tzinfo is None:
        raise ValueError("naive datetime in a hash chain")
    delta = value - _EPOCH
    return _INT.pack(4, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


# By exact type: one lookup per field (this runs for every field of every row verified).
_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    type(None): _none,
    int: _int,
    bool: _bool,
    str: _str,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    dt.datetime: _datetime,
}


def encode_value(value: Value) -> bytes:
    """One field: a type tag, then a fixed-size integer or a length-prefixed byte string."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        raise TypeError(f"cannot encode {type(value).__name__} in a hash chain")
    return encoder(value)


def encode(domain: bytes, values: Sequence[Value]) -> bytes:
    return b"".join([_LENGTH.pack(0, len(domain)), domain, *map(encode_value, values)])


def link(previous: bytes, domain: bytes, values: Sequence[Value]) -> bytes:
    digest = hashlib.sha256(previous)
    digest.update(_LENGTH.pack(0, len(domain)) + domain)
    digest.update(b"".join(map(encode_value, values)))
    return digest.digest()


def field_checks(values: Sequence[Value]) -> bytes:
    return b"".join(zlib.crc32(encode_value(v)).to_bytes(4, "big") for v in values)


def changed_fields(names: Sequence[str], values: Sequence[Value], checks: bytes) -> list[str]:
    """The fields whose stored check no longer matches (all when the checks are unusable)."""
    return differing(names, field_checks(values), checks)


def differing(names: Sequence[str], fresh: bytes, checks: bytes) -> list[str]:
    """The names whose 4-byte check in `fresh` differs from the one in `checks` (all
    of them when the stored checks are not as long: unusable)."""
    if len(checks) != len(fresh):
        return list(names)
    return [
        name
        for index, name in enumerate(names)
        if fresh[index * 4 : index * 4 + 4] != checks[index * 4 : index * 4 + 4]
    ]
