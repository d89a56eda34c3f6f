"""Page-size rules and the page tokens of every List RPC: opaque, authenticated, typed.

A page token is the position after which the next page starts (the keyset
key of the last row served), sealed by the server:

    version(1) key_id(8) issued_at(8) method(8) filters(16) position(n) mac(16)

in unpadded base64url. `mac` is HMAC-SHA256 (cut to 16 bytes) over everything
before it under a key that only the deployment's servers hold (see
`MacKeys`); `method` is a digest of the full gRPC method name and `filters` a
digest of the request's filter, so a token answers only the list and the
filter it was issued for. `position` is laid out by the list's `Listing`, a
fixed schema of typed fields (bounded identifiers, ranged integers, UTC
instants), so a token decodes to those types or to nothing.

Decoding is bounded before it starts: the text is length-capped, then the
MAC is checked, then the fields are read one by one with no recursion. Every
refusal is INVALID_ARGUMENT on `page_token`: a token that does not decode or
whose MAC fails was not issued by this deployment (or was altered); one under
a key the server no longer holds (rotated out) or older than the token
lifetime is stale; a sound token of another list or other filters says so.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ppos.controlplane.core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

TOKEN_FIELD = "page_token"  # noqa: S105 - a field name, not a secret
# Longer than any token a listing here can produce (the longest position is two
# 128-character ids: about 400 characters); checked before anything is decoded.
MAX_TOKEN_CHARS = 1024
# How long a token stays good. A paging walk takes seconds; an operator's
# paused script may take hours. Past this, list again from the start.
TOKEN_LIFETIME = 24 * 3600.0
# Tolerated difference between the clocks of two replicas of one deployment.
CLOCK_LEEWAY = 300.0

_VERSION = 1
_HEADER = struct.Struct(">B8sq8s16s")  # version, key id, issued at (unix s), method, filters
_MAC_BYTES = 16
_MIN_BYTES = _HEADER.size + _MAC_BYTES
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

STALE = "page token expired or not issued by this server; list again from the start"
FOREIGN = "is not a page token issued by this server; list again from the start"
STALE_REASON = "PAGE_TOKEN_EXPIRED"
INVALID_REASON = "PAGE_TOKEN_INVALID"


# -- page sizes ----------------------------------------------------------------------


def page_size(requested: int, *, field: str = "page_size") -> int:
    """The page size to use: the default for 0, refused when negative, capped at the max."""
    if requested < 0:
        raise InvalidArgument.single(field, f"must not be negative, got {requested}")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


# -- positions: what a listing keeps in its tokens -----------------------------------

# Every id this service generates or accepts fits: resource names (`gold-tier`),
# generated ids (`dec_01j...`), request and job ids (`a.b:c-d`).
ID_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_MICROS = int((dt.datetime(9999, 12, 31, tzinfo=dt.UTC) - _EPOCH).total_seconds()) * 10**6
_INT = struct.Struct(">q")
_LENGTH = struct.Struct(">H")


class _Unreadable(Exception):
    """The position bytes do not fit the listing's schema."""


@dataclass(frozen=True)
class Ident:
    """A bounded string of an id's character set (ASCII, so one byte a character)."""

    name: str
    pattern: re.Pattern[str] = ID_CHARS
    max_length: int = 128

    def __post_init__(self) -> None:
        if not 0 < self.max_length < 256:
            raise ValueError("an id in a page token is 1 to 255 characters")

    def accepts(self, value: object) -> bool:
        return (
            isinstance(value, str)
            and len(value) <= self.max_length
            and self.pattern.fullmatch(value) is not None
        )

    def pack(self, value: Any) -> bytes:
        data: bytes = value.encode("ascii")
        return bytes([len(data)]) + data

    def unpack(self, data: bytes, at: int) -> tuple[str, int]:
        if at >= len(data):
            raise _Unreadable
        end = at + 1 + data[at]
        if end > len(data):
            raise _Unreadable
        try:
            value = data[at + 1 : end].decode("ascii")
        except UnicodeDecodeError:
            raise _Unreadable from None
        if not self.accepts(value):
            raise _Unreadable
        return value, end


@dataclass(frozen=True)
class Text:
    """A bounded UTF-8 string with no control character (a sort key such as a
    container image, which an id's character set does not cover)."""

    name: str
    max_bytes: int = 512

    def __post_init__(self) -> None:
        if not 0 < self.max_bytes < 2**16:
            raise ValueError("a text in a page token is 1 to 65535 bytes")

    def accepts(self, value: object) -> bool:
        return (
            isinstance(value, str)
            and len(value.encode("utf-8", "surrogatepass")) <= self.max_bytes
            and value.isprintable()
        )

    def pack(self, value: Any) -> bytes:
        data: bytes = value.encode("utf-8")
        return _LENGTH.pack(len(data)) + data

    def unpack(self, data: bytes, at: int) -> tuple[str, int]:
        if at + _LENGTH.size > len(data):
            raise _Unreadable
        (length,) = _LENGTH.unpack_from(data, at)
        end = at + _LENGTH.size + length
        if end > len(data):
            raise _Unreadable
        try:
            value = data[at + _LENGTH.size : end].decode("utf-8")
        except UnicodeDecodeError:
            raise _Unreadable from None
        if not self.accepts(value):
            raise _Unreadable
        return value, end


@dataclass(frozen=True)
class Integer:
    """An integer in [low, high] (64-bit signed at most)."""

    name: str
    low: int = 0
    high: int = 2**63 - 1

    def accepts(self, value: object) -> bool:
        return type(value) is int and self.low <= value <= self.high

    def pack(self, value: Any) -> bytes:
        return _INT.pack(value)

    def unpack(self, data: bytes, at: int) -> tuple[int, int]:
        if at + _INT.size > len(data):
            raise _Unreadable
        (value,) = _INT.unpack_from(data, at)
        if not self.accepts(value):
            raise _Unreadable
        return int(value), at + _INT.size


@dataclass(frozen=True)
class Instant:
    """A timezone-aware instant, kept to the microsecond, read back in UTC."""

    name: str

    def accepts(self, value: object) -> bool:
        return (
            isinstance(value, dt.datetime)
            and value.utcoffset() is not None
            and 0 <= _micros(value) <= _MAX_MICROS
        )

    def pack(self, value: Any) -> bytes:
        return _INT.pack(_micros(value))

    def unpack(self, data: bytes, at: int) -> tuple[dt.datetime, int]:
        if at + _INT.size > len(data):
            raise _Unreadable
        (micros,) = _INT.unpack_from(data, at)
        if not 0 <= micros <= _MAX_MICROS:
            raise _Unreadable
        return _EPOCH + dt.timedelta(microseconds=micros), at + _INT.size


def _micros(value: dt.datetime) -> int:
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


Field = Ident | Text | Integer | Instant
Position = tuple[Any, ...]


@dataclass(frozen=True)
class Listing:
    """One List RPC's paging: its full gRPC method name and the fields of its position."""

    method: str
    fields: tuple[Field, ...]
    tag: bytes  # what a token keeps of the method name: 8 bytes of its SHA-256

    def __init__(self, method: str, *fields: Field) -> None:
        if not re.fullmatch(r"/[\w.]+/\w+", method) or not fields:
            raise ValueError(f"a listing needs a full method name and fields, got {method!r}")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "tag", hashlib.sha256(method.encode()).digest()[:8])

    def pack(self, position: Position) -> bytes:
        if len(position) != len(self.fields):
            raise ValueError(f"{self.method}: {len(position)} values for {len(self.fields)}")
        out = bytearray()
        for spec, value in zip(self.fields, position, strict=True):
            if not spec.accepts(value):
                # A row whose key the schema does not cover is a bug here, not the caller's.
                raise ValueError(f"{self.method}: {spec.name} does not fit its page-token field")
            out += spec.pack(value)
        return bytes(out)

    def unpack(self, data: bytes) -> Position:
        values: list[Any] = []
        at = 0
        for spec in self.fields:
            value, at = spec.unpack(data, at)
            values.append(value)
        if at != len(data):
            raise _Unreadable
        return tuple(values)


def filter_digest(filters: Mapping[str, Any]) -> bytes:
    """Digest of a request's filter: canonical JSON (sorted keys), SHA-256, 16 bytes."""
    raw = json.dumps(filters, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(raw.encode()).digest()[:16]


# -- keys and the codec --------------------------------------------------------------


class MacKeys(Protocol):
    """The deployment's page-token keys: one to issue with, every one still accepted."""

    def signing_key(self) -> tuple[bytes, bytes]:
        """(8-byte key id, key) that new tokens are sealed with."""
        ...

    def key(self, key_id: bytes) -> bytes | None:
        """The key with this id, or None when this server does not (or no longer) hold it."""
        ...


class PageTokens:
    """Issues and reads the page tokens of every listing, under the deployment's keys."""

    def __init__(
        self,
        keys: MacKeys,
        *,
        lifetime: float = TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._lifetime = lifetime
        self._clock = clock

    def issue(self, listing: Listing, filters: Mapping[str, Any], position: Position) -> str:
        """Token for the page after `position`, good for `listing` under `filters` only."""
        key_id, key = self._keys.signing_key()
        header = _HEADER.pack(
            _VERSION, key_id, int(self._clock()), listing.tag, filter_digest(filters)
        )
        body = header + listing.pack(position)
        sealed = body + _mac(key, body)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def read(
        self,
        listing: Listing,
        filters: Mapping[str, Any],
        token: str,
        *,
        field: str = TOKEN_FIELD,
    ) -> Position | None:
        """The position in `token` (None for no token); INVALID_ARGUMENT on `field` when
        the token is malformed, altered, stale, or of another listing or filter."""
        if not token:
            return None

        def refuse(description: str, reason: str = INVALID_REASON) -> InvalidArgument:
            return InvalidArgument.single(field, description, reason=reason)

        if len(token) > MAX_TOKEN_CHARS or not _BASE64URL.fullmatch(token):
            raise refuse(FOREIGN)
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise refuse(FOREIGN) from None
        if len(sealed) < _MIN_BYTES or sealed[0] != _VERSION:
            raise refuse(FOREIGN)
        body, mac = sealed[:-_MAC_BYTES], sealed[-_MAC_BYTES:]
        _, key_id, issued_at, tag, digest = _HEADER.unpack_from(body)
        key = self._keys.key(key_id)
        if key is None:
            raise refuse(STALE, STALE_REASON)  # rotated out, or never ours
        if not hmac.compare_digest(mac, _mac(key, body)):
            raise refuse(FOREIGN)
        now = self._clock()
        if not now - self._lifetime <= issued_at <= now + CLOCK_LEEWAY:
            raise refuse(STALE, STALE_REASON)
        if tag != listing.tag:
            raise refuse("was issued by another list; list again from the start")
        if digest != filter_digest(filters):
            raise refuse(
                "was issued for other filters: repeat the request's filters, "
                "or list again from the start"
            )
        try:
            return listing.unpack(body[_HEADER.size :])
        except _Unreadable:
            # Sealed by us but not of this schema: a token from before a schema change.
            raise refuse(STALE, STALE_REASON) from None


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, hashlib.sha256)[:_MAC_BYTES]
