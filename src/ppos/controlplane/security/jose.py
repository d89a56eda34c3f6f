"""Compact JWS, as our tokens use it: base64url segments, compact JSON, the header
peeked at only to route a token."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

MAX_TOKEN_LENGTH = 4096

# A compact JWS of our one algorithm: ES256 signatures are 64 bytes (r || s, RFC
# 7518 3.4), 86 base64url characters whose last one carries 2 bits and 4 zero
# bits of padding, so this also rejects non-canonical encodings of the signature.
COMPACT_ES256 = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{85}[AQgw])")
JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(value: dict[str, Any]) -> bytes:
    return JSON_ENCODER.encode(value).encode()


def peek_header(token: str) -> dict[str, Any] | None:
    """The unverified JOSE header, parsed only to route the token (by `typ`)."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    segment = token[: token.index(".")]
    try:
        header = json.loads(b64decode(segment))
    except (ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None
