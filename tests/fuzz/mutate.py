"""Hostile variants of a valid request: structure-aware mutation of its fields, and
raw bytes (random, truncated, invalid UTF-8, unknown fields, nested groups).

A seeded generator of our own rather than hypothesis: every run sends exactly the
number of requests asked for, in a fixed order per seed, against a live server;
shrinking, a health check on slow examples and an example database would only get
in the way of that bounded, reproducible count.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ppos.controlplane.services.node_registry.watch_encoding import varint

INT32 = (0, 1, -1, 2**31 - 1, -(2**31), 2**31 - 2)
INT64 = (*INT32, 2**63 - 1, -(2**63), 2**53 + 1, -(2**53))
UINT32 = (0, 1, 2**32 - 1)
UINT64 = (0, 1, 2**64 - 1, 2**63)
ENUMS = (-1, -(2**31), 2**31 - 1, 99, 1000, 7)
FLOATS = (0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e308, -1e-308)

HOSTILE_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 64,
    "\t\r\n",
    "line\r\nInjected: header",
    "\x1b[31mred\x1b[0m",
    "\x07\x08\x7f",
    "\u0085\u009b",
    "\u202eevil\u202c",
    "zero\u200bwidth\ufeff",
    "²",
    "١٢",
    "٣",
    "0x10",
    "-1",
    "1e309",
    "NaN",
    "Infinity",
    "9" * 40,
    "' OR '1'='1",
    "%s%n%x",
    "{{7*7}}",
    "../../../etc/passwd",
    "\U0001f600" * 8,
    "Ω" * 100,
    "a" * 64,
    "a" * 129,
    "a" * 257,
    "A" * 4096,
    "x" * 20_000,
    "tier in (a,b",
    "=,!=,==",
    "k=v,k2!=v2,!k3",
    "sha256:" + "g" * 64,
    "req_\x00",
)
SHORT_STRINGS = tuple(value for value in HOSTILE_STRINGS if len(value) <= 64)
HUGE_SIZES = (100_000, 1_000_000)
UNKNOWN_FIELD = 12_345


def _varint(value: int) -> bytes:
    """A varint as protobuf writes it: negative numbers as their 64-bit two's complement."""
    return varint(value & ((1 << 64) - 1))


def _key(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _page_tokens() -> list[str]:
    """Tokens an attacker would forge for an unsigned base64-JSON page token."""
    deep = "[" * 5000 + "]" * 5000
    bodies = [
        '{"after":"x"}',
        "null",
        "Infinity",
        '{"after":1e400}',
        '{"after":' + "1" * 31 + "}",
        '{"after":[1,2,3]}',
        '{"after":{"a":{}}}',
        '{"after":["2026-01-01T00:00:00","x"]}',
        '{"after":["not a date","x"]}',
        "[]",
        deep,
        '{"offset":-1}',
        '{"offset":' + str(2**70) + "}",
    ]
    tokens = [base64.urlsafe_b64encode(body.encode()).decode() for body in bodies]
    tokens += ["!!!", "a", "====", base64.b64encode(b"\xff\xfe\x00").decode()]
    return tokens


PAGE_TOKENS = tuple(_page_tokens())
# Values a forged position may carry where a timestamp, id or number belongs.
HOSTILE_JSON: tuple[Any, ...] = (
    None,
    "x",
    "",
    "\u0000",
    "2026-13-45T99:99:99",
    "2026-01-01T00:00:00",
    float("inf"),
    float("nan"),
    10**30,
    -1,
    2**63,
    [],
    [1, 2, 3],
    {"a": {}},
    True,
    "²",
)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


class Mutator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._bulk = False  # inside a field with many values: small values only

    # -- structure-aware -----------------------------------------------------------

    def mutate(self, message: Message) -> bytes:
        """`message` with 1-3 hostile field values, maybe plus unknown fields."""
        for _ in range(self.rng.randint(1, 3)):
            self._mutate_one(message, depth=0)
        data = message.SerializeToString()
        if self.rng.random() < 0.15:
            data += self._unknown_field()
        return data

    def _mutate_one(self, message: Message, depth: int) -> None:
        fields = list(message.DESCRIPTOR.fields)
        if not fields:
            return
        field = self.rng.choice(fields)
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            self._mutate_map(getattr(message, field.name))
        elif field.is_repeated:
            self._mutate_repeated(message, field, depth)
        elif field.message_type is not None:
            sub = getattr(message, field.name)
            if self.rng.random() < 0.15:
                message.ClearField(field.name)
            elif depth < 4:
                sub.SetInParent()
                self._mutate_one(sub, depth + 1)
        elif field.type == FieldDescriptor.TYPE_STRING:
            self._set(message, field, self.hostile_string(field.name, getattr(message, field.name)))
        else:
            self._set(message, field, self.hostile_scalar(field))

    def _set(self, message: Message, field: FieldDescriptor, value: Any) -> None:
        try:
            setattr(message, field.name, value)
        except (ValueError, TypeError):  # out of the field's range: set what fits
            setattr(message, field.name, self._fallback(field))

    def _fallback(self, field: FieldDescriptor) -> Any:
        if field.type == FieldDescriptor.TYPE_STRING:
            return "\x00"
        if field.type == FieldDescriptor.TYPE_BOOL:
            return True
        return 0

    def _mutate_repeated(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        values = getattr(message, field.name)
        roll = self.rng.random()
        if roll < 0.2:
            del values[:]
            return
        # Many values, each small: one request stays a few MB at most.
        counts = (1, 2, 3) if self._bulk else (1, 2, 50, 1000)
        if field.message_type is not None:
            count = self.rng.choice(counts)
            with self._in_bulk(count > 3):
                for _ in range(count):
                    item = values.add()
                    if depth < 4 and self.rng.random() < 0.5:
                        self._mutate_one(item, depth + 1)
            return
        count = self.rng.choice((*counts, 70_000) if not self._bulk else counts)
        same = self.rng.random() < 0.5
        with self._in_bulk(count > 3):
            first = self.hostile_scalar(field)
            for _ in range(count):
                value = first if same else self.hostile_scalar(field)
                try:
                    values.append(value)
                except (ValueError, TypeError):
                    values.append(self._fallback(field))

    @contextlib.contextmanager
    def _in_bulk(self, bulk: bool) -> Iterator[None]:
        before, self._bulk = self._bulk, self._bulk or bulk
        try:
            yield
        finally:
            self._bulk = before

    def _mutate_map(self, entries: Any) -> None:
        roll = self.rng.random()
        if roll < 0.3:
            for i in range(self.rng.choice((65, 1000))):
                entries[f"k{i}"] = "v"
        else:
            key = self.rng.choice(SHORT_STRINGS if self._bulk else HOSTILE_STRINGS)
            entries[key] = self.rng.choice(SHORT_STRINGS if self._bulk else HOSTILE_STRINGS)

    def hostile_scalar(self, field: FieldDescriptor) -> Any:
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self.hostile_string(field.name)
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.rng.randbytes(self.rng.choice((0, 1, 64) if self._bulk else (0, 64, 4096)))
        if kind == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_ENUM:
            known = [v.number for v in field.enum_type.values]
            return self.rng.choice((*ENUMS, *known))
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return self.rng.choice(FLOATS)
        if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return self.rng.choice(UINT32)
        if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return self.rng.choice(UINT64)
        if kind in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SFIXED64,
        ):
            return self.rng.choice(INT64)
        return self.rng.choice(INT32)

    def hostile_string(self, name: str, current: str = "") -> str:
        if name == "page_token" and self.rng.random() < 0.8:
            forged = self.forged_token(current)
            if forged is not None and self.rng.random() < 0.7:
                return forged
            return self.rng.choice(PAGE_TOKENS)
        if self._bulk:
            return self.rng.choice(SHORT_STRINGS)
        roll = self.rng.random()
        if roll < 0.01:
            return "i" * self.rng.choice(HUGE_SIZES)
        if roll < 0.12:
            alphabet = "".join(chr(c) for c in range(0x20)) + "abc-_.:/=,!\u200b\u202e\u00a0²"
            return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(1, 80)))
        return self.rng.choice(HOSTILE_STRINGS)

    def forged_token(self, token: str) -> str | None:
        """A real page token (base64 JSON) with one part of its position made hostile."""
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (ValueError, RecursionError):  # not a token of ours (or one forged deep)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("p"), dict):
            return None
        position: dict[str, Any] = data["p"]
        roll = self.rng.random()
        if roll < 0.1:
            data["p"] = self.rng.choice(HOSTILE_JSON)
        elif roll < 0.2:
            data["k"] = self.rng.choice(("", "other", None, 1, ["x"]))
        elif position:
            key = self.rng.choice(sorted(position))
            value = position[key]
            if isinstance(value, list) and value and self.rng.random() < 0.5:
                value = list(value)
                value[self.rng.randrange(len(value))] = self.rng.choice(HOSTILE_JSON)
                position[key] = value
            elif self.rng.random() < 0.2:
                del position[key]
            else:
                position[key] = self.rng.choice(HOSTILE_JSON)
        else:
            position["after"] = self.rng.choice(HOSTILE_JSON)
        if self.rng.random() < 0.05:
            return _b64("[" * 5000 + json.dumps(data) + "]" * 5000)
        return _b64(json.dumps(data, allow_nan=True))

    def _unknown_field(self) -> bytes:
        number = self.rng.choice((UNKNOWN_FIELD, 536_870_911, 1000))
        choices: list[Callable[[], bytes]] = [
            lambda: _key(number, 0) + _varint(self.rng.randrange(1 << 64)),
            lambda: _key(number, 2) + _varint(5) + b"\xff\xfe\x00ab",
            lambda: _key(number, 5) + b"\x00\x00\x80\x7f",
            lambda: _key(number, 1) + b"\x00" * 8,
            lambda: _key(number, 3) + _key(number, 4),
        ]
        return self.rng.choice(choices)()

    # -- raw bytes -------------------------------------------------------------------

    def raw(self, valid: bytes, first_string_field: int | None) -> bytes:
        """Bytes that are not (or barely) the request's encoding."""
        rng = self.rng
        makers: list[Callable[[], bytes]] = [
            lambda: rng.randbytes(rng.randint(0, 64)),
            lambda: b"\xff",
            lambda: b"\x0a\x01",
            lambda: valid[: rng.randint(0, max(len(valid) - 1, 0))],
            lambda: self._flip(valid),
            lambda: _key(first_string_field or 1, 2) + _varint(4) + b"\xff\xfe\xc0\x80",
            lambda: _key(first_string_field or 1, 2) + _varint(3) + b"\xed\xa0\x80",
            lambda: _key(1, 3) * rng.choice((101, 1000, 20_000)),
            lambda: (_key(1, 3) * 101) + (_key(1, 4) * 101),
            lambda: _key(first_string_field or 1, 2) + _varint(2**31),
            lambda: _key(first_string_field or 1, 0) + b"\xff" * 11,
            lambda: _key(0, 0) + b"\x00",
            lambda: _key(first_string_field or 1, 7) + b"\x00",
            lambda: valid + _key(1, 2) + _varint(10) + b"abc",
            lambda: _key(1, 2) + _varint(100_000) + b"\x0a" * 100_000,
            lambda: self._nested_messages(rng.choice((100, 1000))),
        ]
        return rng.choice(makers)()

    def _flip(self, data: bytes) -> bytes:
        if not data:
            return b"\x80"
        raw = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            index = self.rng.randrange(len(raw))
            raw[index] ^= 1 << self.rng.randrange(8)
        return bytes(raw)

    @staticmethod
    def _nested_messages(depth: int) -> bytes:
        """Field 1 as a length-delimited message nested `depth` deep."""
        body = b""
        for _ in range(depth):
            body = _key(1, 2) + _varint(len(body)) + body
        return body
