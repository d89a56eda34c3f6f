"""The table of hostile field values, by RPC and field, for test_hostile_fields.

Each `Field` names one request field by its path, how to build a request that
is valid but for that field (`base`), and the field's kind in the validation
vocabulary; `variants` turns it into the hostile requests to send: NUL, ANSI
escapes, CRLF, zero-width and bidi characters, over-long values, "²" and
"١٢" for numbers, 70,000 values for repeated filters, oversized maps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from ppos.controlplane.core.validation import (
    AUDIT_RESOURCE_ID,
    CLUSTER_NAME,
    DIGEST,
    HOSTNAME,
    IMAGE_REFERENCE,
    MAX_DISPLAY_NAME,
    MAX_LABEL_SELECTOR,
    MAX_MESSAGE,
    MAX_REASON,
    OBJECT_ID,
    REGION_NAME,
    RESOURCE_KIND,
    RESOURCE_NAME,
    RESOURCE_VERSION,
    Syntax,
    map_key_path,
)

# Control and invisible characters no identifier or free text may hold.
HOSTILE_CHARACTERS = {
    "nul": "\x00",
    "ansi-escape": "\x1b[31m",
    "crlf": "\r\n",
    "tab": "\t",
    "c1-next-line": "\x85",
    "zero-width-space": "\u200b",
    "word-joiner": "\u2060",
    "byte-order-mark": "\ufeff",
    "bidi-override": "\u202e",
    "bidi-isolate": "\u2066",
}
REPEATED = 70_000
MAP_ENTRIES = 1_000


@dataclass(frozen=True)
class Kind:
    """What a field holds: an identifier of a syntax, free text, a number, a list...

    `sample` is a valid value; hostile variants put a character in its middle,
    so only that character can be the reason for a refusal.
    """

    name: str
    sample: str = ""
    max_length: int = 0
    multiline: bool = False


def ident(syntax: Syntax, sample: str) -> Kind:
    assert syntax.accepts(sample), sample
    return Kind("id", sample=sample, max_length=syntax.max_length)


def text(max_length: int, *, multiline: bool = False) -> Kind:
    return Kind("text", sample="gold", max_length=max_length, multiline=multiline)


NUMBER = Kind("number")
SELECTOR = Kind("selector", sample="tier=gold", max_length=MAX_LABEL_SELECTOR)
REPEATED_ENUM = Kind("repeated-enum")
REPEATED_REGION = Kind("repeated-region")
REPEATED_MESSAGE = Kind("repeated-message")
LABELS = Kind("labels")
RESOURCE = ident(RESOURCE_NAME, "acme")
OBJECT = ident(OBJECT_ID, "job_1779116602472_1d246")
REGION = ident(REGION_NAME, "eu-west-1")
CLUSTER = ident(CLUSTER_NAME, "c1")
IMAGE = ident(IMAGE_REFERENCE, "registry.example/ppos/worker:7.4.1")
SHA256 = ident(DIGEST, "sha256:" + "ab" * 32)
VERSION = ident(RESOURCE_VERSION, "12")
KIND = ident(RESOURCE_KIND, "tenant")
AUDIT_ID = ident(AUDIT_RESOURCE_ID, "acme/q1")
HOST = ident(HOSTNAME, "worker-1.example")
REASON = text(MAX_REASON)
NAME = text(MAX_DISPLAY_NAME)
MESSAGE = text(MAX_MESSAGE, multiline=True)


@dataclass(frozen=True)
class Field:
    method: str  # service short name and method: "governance/ProvisionTenant"
    path: str  # where the value goes: "queues[0].spec.reason", "parameters['region']"
    kind: Kind
    base: Callable[[Any], Message]  # a request valid but for this field (given the world)
    caller: str = "operator"  # or "node", "enrolling"

    @property
    def descriptor_path(self) -> str:
        """The path as the request's descriptor names it (indices and map keys dropped)."""
        return re.sub(r"\[[^\]]*\]", "", self.path)


@dataclass(frozen=True)
class Variant:
    field: Field
    name: str
    value: Any
    expected_path: str

    @property
    def id(self) -> str:
        return f"{self.field.method}:{self.field.path}:{self.name}"

    def request(self, world: Any) -> Message:
        message = self.field.base(world)
        put(message, self.field.path, self.value)
        return message


def variants(field: Field) -> Iterator[Variant]:
    kind = field.kind
    path = field.path
    if kind.name in ("id", "text", "selector"):
        middle = len(kind.sample) // 2
        for name, char in HOSTILE_CHARACTERS.items():
            if kind.multiline and char in ("\t", "\r\n"):
                char = "\r"  # multi-line text allows tab and newline, not CR
            value = kind.sample[:middle] + char + kind.sample[middle:]
            yield Variant(field, name, value, path)
        filler = "1" if kind.sample.isdigit() else "a"
        yield Variant(field, "too-long", filler * (kind.max_length + 1), path)
    elif kind.name == "number":
        for name, value in (("superscript-two", "²"), ("arabic-indic-12", "١٢"), ("nul", "1\x00")):
            yield Variant(field, name, value, path)
    elif kind.name == "repeated-enum":
        yield Variant(field, f"{REPEATED}-values", [1] * REPEATED, path)
    elif kind.name == "repeated-region":
        yield Variant(field, f"{REPEATED}-values", ["eu-west-1"] * REPEATED, path)
        yield Variant(field, "nul", ["eu-west-1\x00"], f"{path}[0]")
        yield Variant(field, "zero-width-space", ["eu\u200bwest-1"], f"{path}[0]")
    elif kind.name == "repeated-message":
        yield Variant(field, "too-many", REPEATED_MESSAGE, path)
    elif kind.name == "labels":
        yield Variant(
            field, f"{MAP_ENTRIES}-entries", {f"k{i}": "v" for i in range(MAP_ENTRIES)}, path
        )
        for name in ("nul", "ansi-escape", "zero-width-space", "bidi-override"):
            char = HOSTILE_CHARACTERS[name]
            yield Variant(
                field, f"value-{name}", {"tier": f"go{char}ld"}, map_key_path(path, "tier")
            )
            key = f"ti{char}er"
            yield Variant(field, f"key-{name}", {key: "gold"}, map_key_path(path, key))
    else:
        raise AssertionError(f"unknown kind {kind.name}")


_STEP = re.compile(r"(\w+)(?:\[(\d+)\]|\['([^']*)'\])?")


def put(message: Message, path: str, value: Any) -> None:
    """Set the field at `path` (`a.b[0].c`, `m['key']`) of `message` to `value`."""
    steps = path.split(".")
    target: Any = message
    for index, step in enumerate(steps):
        found = _STEP.fullmatch(step)
        assert found is not None, step
        name, position, key = found.groups()
        last = index == len(steps) - 1
        if key is not None:
            mapping = getattr(target, name)
            assert last, path
            mapping[key] = value
            return
        if position is not None:
            target = getattr(target, name)[int(position)]
            assert not last, path
            continue
        if not last:
            target = getattr(target, name)
            continue
        current = getattr(target, name)
        if value is REPEATED_MESSAGE:
            first = current[0]
            for _ in range(MAP_ENTRIES):
                current.add().CopyFrom(first)
        elif isinstance(value, dict):
            current.update(value)
        elif isinstance(value, list):
            del current[:]
            current.extend(value)
        else:
            setattr(target, name, value)
