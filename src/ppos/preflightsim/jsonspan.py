"""Where each member of a JSON object sits in its bytes, without parsing values.

The simulator takes an engine output from a JSON Lines envelope byte for
byte: the value of `canonicalPayload` is sliced out of the line, never
decoded and re-encoded (which would lose big integers, 1e400, duplicate keys,
key order, escapes and whitespace). This scanner only finds where values
start and end; it checks structure (balanced brackets, closed strings), not
the finer grammar of numbers and literals, which `json.loads` of the whole
line has already checked.
"""

from __future__ import annotations

import json

_WHITESPACE = b" \t\n\r"
_OPENERS = {ord("{"): ord("}"), ord("["): ord("]")}
_QUOTE = ord('"')
_BACKSLASH = ord("\\")
_DELIMITERS = frozenset(b" \t\n\r,]}:")


class SpanError(ValueError):
    """The bytes are not a JSON object with distinct top-level keys."""


def _skip_ws(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in _WHITESPACE:
        pos += 1
    return pos


def _string_end(data: bytes, pos: int) -> int:
    """Index just past the string starting at `pos` (a quote)."""
    pos += 1
    while pos < len(data):
        byte = data[pos]
        if byte == _BACKSLASH:
            pos += 2
            continue
        if byte == _QUOTE:
            return pos + 1
        pos += 1
    raise SpanError("unterminated string")


def value_end(data: bytes, pos: int) -> int:
    """Index just past the JSON value starting at `pos` (no leading whitespace)."""
    if pos >= len(data):
        raise SpanError("value expected, end of input found")
    first = data[pos]
    if first == _QUOTE:
        return _string_end(data, pos)
    if first in _OPENERS:
        stack = [_OPENERS[first]]
        pos += 1
        while stack:
            if pos >= len(data):
                raise SpanError("unbalanced brackets")
            byte = data[pos]
            if byte == _QUOTE:
                pos = _string_end(data, pos)
                continue
            if byte in _OPENERS:
                stack.append(_OPENERS[byte])
            elif byte in (ord("}"), ord("]")) and byte != stack.pop():
                raise SpanError("mismatched brackets")
            pos += 1
        return pos
    start = pos
    while pos < len(data) and data[pos] not in _DELIMITERS:
        pos += 1
    if pos == start:
        raise SpanError(f"value expected at byte {start}")
    return pos


def member_spans(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level `key -> (start, end)` of each value of the JSON object in `data`."""
    pos = _skip_ws(data, 0)
    if pos >= len(data) or data[pos] != ord("{"):
        raise SpanError("not a JSON object")
    spans: dict[str, tuple[int, int]] = {}
    pos = _skip_ws(data, pos + 1)
    if pos < len(data) and data[pos] == ord("}"):
        return _finish(data, pos + 1, spans)
    while True:
        if pos >= len(data) or data[pos] != _QUOTE:
            raise SpanError(f"member name expected at byte {pos}")
        key_end = _string_end(data, pos)
        key = json.loads(data[pos:key_end])
        if key in spans:
            raise SpanError(f"envelope key {key!r} appears twice")
        pos = _skip_ws(data, key_end)
        if pos >= len(data) or data[pos] != ord(":"):
            raise SpanError(f"':' expected after {key!r}")
        start = _skip_ws(data, pos + 1)
        end = value_end(data, start)
        spans[key] = (start, end)
        pos = _skip_ws(data, end)
        if pos < len(data) and data[pos] == ord(","):
            pos = _skip_ws(data, pos + 1)
            continue
        if pos < len(data) and data[pos] == ord("}"):
            return _finish(data, pos + 1, spans)
        raise SpanError(f"',' or '}}' expected at byte {pos}")


def _finish(data: bytes, pos: int, spans: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    if _skip_ws(data, pos) != len(data):
        raise SpanError("trailing bytes after the object")
    return spans
