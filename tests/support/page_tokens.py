"""Page tokens a hostile client would send: old-style JSON, nesting, junk, random bytes."""

from __future__ import annotations

import base64
import json
import random

from ppos.controlplane.core.pagination import MAX_TOKEN_CHARS


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def old_style(value: object) -> str:
    """What the unsigned tokens of earlier versions looked like: base64 of JSON."""
    return b64(json.dumps(value).encode())


HOSTILE = [
    "not-a-token",
    "====",
    "a",
    "ñ",
    "\x00",
    "a" * (MAX_TOKEN_CHARS + 1),
    old_style({"k": "tenants", "p": {"a": "x", "f": "0" * 16}}),
    old_style({"k": "nodes", "p": {"after": "x"}}),
    old_style({"after": "x"}),
    old_style(None),
    b64(b"Infinity"),
    b64(b"NaN"),
    old_style(10**30),
    old_style({"k": "queues", "p": {"a": [[1], {"x": 2}], "f": {}}}),
    old_style({"k": "decisions", "p": {"a": ["2026-01-01T00:00:00", "x"], "f": None}}),
    old_style({"k": "quarantine", "p": {"after": 10**30, "region": []}}),
    b64(b"[" * 5000 + b"]" * 5000),
    b64(b'{"a":' * 5000 + b"1" + b"}" * 5000),
    b64(b"\x01" + b"\x00" * 80),  # the current version byte, nothing else right
]


def random_tokens(seed: int, count: int) -> list[str]:
    """Random bytes as base64url, with and without the current version byte, and raw."""
    chooser = random.Random(seed)
    found = []
    for _ in range(count):
        data = bytes(chooser.randrange(256) for _ in range(chooser.randrange(1, 200)))
        found += [b64(data), b64(b"\x01" + data), data.decode("latin-1")]
    return found
