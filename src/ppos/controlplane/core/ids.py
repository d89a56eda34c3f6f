"""Time-ordered unique ids with a readable prefix.

128 bits (48 bits of milliseconds, then 80 random bits) in lowercase Crockford
base32, 26 characters. Base32 of big-endian bytes keeps byte order, and the
Crockford alphabet is ascending, so ids sort by creation time.
"""

from __future__ import annotations

import base64
import itertools
import os
import time

_RFC4648 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_CROCKFORD_LOWER = b"0123456789abcdefghjkmnpqrstvwxyz"
_TO_CROCKFORD = bytes.maketrans(_RFC4648, _CROCKFORD_LOWER)


def ulid() -> str:
    """26 characters: creation time first, then randomness."""
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)
    return base64.b32encode(raw)[:26].translate(_TO_CROCKFORD).decode()


_PROCESS = os.urandom(6).hex()
_SEQUENCE = itertools.count(1)


def request_id() -> str:
    """A request id: unique across processes (a random per-process part) and cheap
    enough to make for every call that arrives without one."""
    return f"req_{_PROCESS}{next(_SEQUENCE):x}"


def new_id(prefix: str) -> str:
    """For example `node_06dbz8k2m8x9q4r5s6t7v8w9yc`."""
    return f"{prefix}_{ulid()}"
