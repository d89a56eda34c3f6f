"""Opaque page tokens and page-size rules shared by every List RPC."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ppos.controlplane.core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, field: str = "page_size") -> int:
    """The page size to use: the default for 0, refused when negative, capped at the max."""
    if requested < 0:
        raise InvalidArgument.single(field, f"must not be negative, got {requested}")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode_token(kind: str, position: dict[str, Any]) -> str:
    """Token for the page after `position`, bound to the list `kind`."""
    raw = json.dumps({"k": kind, "p": position}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(kind: str, token: str, *, field: str = "page_token") -> dict[str, Any] | None:
    """Position encoded in `token`, None for the first page; INVALID_ARGUMENT when forged."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument.single(field, "is not a token this server issued") from None
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("p"), dict):
        raise InvalidArgument.single(field, f"is not a token of this list ({kind})")
    position: dict[str, Any] = data["p"]
    return position
