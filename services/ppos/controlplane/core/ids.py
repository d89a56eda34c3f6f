"""Time-ordered unique ids (ULID layout, Crockford base32) with a readable prefix."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars)).lower()


def new_id(prefix: str) -> str:
    """For example `node_01jd3v6k2m8x9q4r5s6t7v8w9y`."""
    return f"{prefix}_{ulid()}"
