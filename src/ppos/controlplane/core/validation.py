"""Field validation that reports every violation at once, by field path.

One vocabulary for every handler, documented for users in docs/api-input.md:

- identifiers come from a fixed ASCII character set with a maximum length
  (`Syntax`: resource names, region names, server-issued and external ids,
  request ids and idempotency keys, hostnames, image references);
- numbers written as text take ASCII digits only (`str.isdigit` also accepts
  "²", which `int` refuses, and "١٢", which `int` reads as 12);
- free text refuses NUL, C0 and C1 control characters (newline and tab only in
  the fields that say so), bidirectional overrides and isolates and
  zero-width characters, and has a maximum length. The same input gets the
  same answer on SQLite and PostgreSQL (which cannot store a NUL);
- repeated and map fields have a maximum number of values, checked before
  their values so a huge list costs one violation, not one per value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sized
from dataclasses import dataclass

from ppos.controlplane.core.errors import FieldViolation, InvalidArgument

# Kubernetes label syntax: optional DNS prefix, name of 63 chars, values of 63.
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
RESOURCE_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{1,61}[a-z0-9])$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
REGION = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]{0,12}(\.[0-9]{1,12})?")

MAX_REASON = 1024
MAX_DISPLAY_NAME = 256
MAX_MESSAGE = 1024
MAX_LABELS = 64
MAX_LABEL_SELECTOR = 4096
MAX_MAP_ENTRIES = 16
MAX_ENUM_FILTER = 32
MAX_REGIONS = 64
# A resource version is a decimal int64 that fits comfortably: 18 digits.
MAX_VERSION_DIGITS = 18
# Shown map keys and values are cut to this many characters in descriptions.
_SHOWN = 64

# What free text may not hold. C0 controls (U+0000-U+001F) but for the tab
# and newline that multi-line fields allow, DEL and C1 (U+007F-U+009F), the
# Arabic letter mark, zero-width space/non-joiner/joiner and the LRM/RLM marks
# (U+200B-U+200F), line and paragraph separators and the bidi embeddings and
# overrides (U+2028-U+202E), word joiner, invisible operators and the bidi
# isolates (U+2060-U+2069), and the zero-width no-break space (U+FEFF).
_INVISIBLE = "\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
_NOT_TEXT_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")
_NOT_TEXT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]")


@dataclass(frozen=True)
class Syntax:
    """An identifier's character set and length, and how to say so to a user."""

    pattern: re.Pattern[str]
    max_length: int
    rule: str  # completes "must be ..."

    def accepts(self, value: str) -> bool:
        return len(value) <= self.max_length and self.pattern.fullmatch(value) is not None


# Names operators choose for tenants, queues, partners, routes and policies.
RESOURCE_NAME = Syntax(
    RESOURCE_ID,
    63,
    "3 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit",
)
# Ids the control plane issues (node_..., cmd_..., job_..., swp_..., dec_...),
# ids of synced jobs as the registries name them (job_1779116602472_1d246),
# request ids and idempotency keys.
OBJECT_ID = Syntax(
    REQUEST_ID,
    128,
    "1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
)
REGION_NAME = Syntax(
    REGION,
    63,
    "a region name like eu-west-1: 2 to 63 lowercase letters, "
    "digits or '-', starting with a letter",
)
CLUSTER_NAME = Syntax(
    REGION,
    63,
    "a cluster name like c1: 2 to 63 lowercase letters, digits or '-', starting with a letter",
)
# RFC 1123 host names: dot-separated labels of 1 to 63 letters, digits or '-'.
HOSTNAME = Syntax(
    re.compile(
        r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    ),
    253,
    "a host name: at most 253 characters of dot-separated labels of letters, digits "
    "or '-' (a label neither starts nor ends with '-')",
)
# Container image references as OCI registries write them
# (registry.example/ppos/preflight-worker:7.4.1).
IMAGE_REFERENCE = Syntax(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*"),
    512,
    "an image reference like registry.example/team/image:1.2.3: at most 512 letters, "
    "digits, '.', '_', '-', '/', ':' or '@', starting with a letter or digit",
)
DIGEST = Syntax(IMAGE_DIGEST, 71, "sha256: followed by 64 lowercase hex digits")
RESOURCE_VERSION = Syntax(
    re.compile(f"[0-9]{{1,{MAX_VERSION_DIGITS}}}"),
    MAX_VERSION_DIGITS,
    "a resource version: the digits 0-9 of meta.resource_version, as read",
)
# Kinds in the audit log: tenant, queue, node, sync_sweep...
RESOURCE_KIND = Syntax(
    re.compile(r"[a-z][a-z0-9_]*"),
    64,
    "a resource kind like tenant or sync_sweep: at most 64 lowercase letters, digits or '_'",
)
# Resource ids in the audit log: any of the above, a tenant/queue pair, a time.
AUDIT_RESOURCE_ID = Syntax(
    re.compile(r"[\x21-\x7e]+"),
    256,
    "1 to 256 visible ASCII characters (no spaces)",
)


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why `value` is not acceptable free text (characters only), or None."""
    found = (_NOT_TEXT_LINES if multiline else _NOT_TEXT_LINE).search(value)
    if found is None:
        return None
    char = found.group()
    what = "control characters" if char <= "\x9f" else "invisible or bidi-control characters"
    allowed = " other than newline and tab" if multiline else ""
    return f"must not contain {what}{allowed} (U+{ord(char):04X} at position {found.start()})"


def ascii_digits(value: str) -> int | None:
    """The number `value` spells in ASCII digits 0-9 (at most 18), or None."""
    if len(value) > MAX_VERSION_DIGITS or not _DIGITS.fullmatch(value):
        return None
    return int(value)


def ascii_decimal(value: str) -> float | None:
    """The number `value` spells as ASCII digits with an optional '.', or None.

    `float` also reads "1e-1", " 0.5", "nan", "inf" and Arabic-Indic digits.
    """
    if not value or value == "." or not _DECIMAL.fullmatch(value):
        return None
    return float(value)


def shown(value: str) -> str:
    """`value` quoted for a description: escaped, cut to a readable length."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} characters)"


class Violations:
    """Collects field violations; `raise_if_any` turns them into INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._items.append(FieldViolation(field, description))

    def require(self, field: str, value: str, what: str = "is required") -> bool:
        if not value:
            self.add(field, what)
            return False
        return True

    def match(self, field: str, value: str, pattern: re.Pattern[str], what: str) -> bool:
        if not pattern.fullmatch(value):
            self.add(field, what)
            return False
        return True

    def syntax(self, field: str, value: str, syntax: Syntax, *, required: bool = True) -> bool:
        """An identifier: required (or empty when optional) and of its syntax."""
        if not value:
            if required:
                self.add(field, "is required")
            return False
        if not syntax.accepts(value):
            self.add(field, f"must be {syntax.rule}")
            return False
        return True

    def resource_id(self, field: str, value: str) -> bool:
        return self.syntax(field, value, RESOURCE_NAME)

    def object_id(self, field: str, value: str, *, required: bool = True) -> bool:
        return self.syntax(field, value, OBJECT_ID, required=required)

    def region(self, field: str, value: str, *, required: bool = True) -> bool:
        return self.syntax(field, value, REGION_NAME, required=required)

    def resource_version(self, field: str, value: str) -> int | None:
        """An `expected_resource_version` (None: not given or refused)."""
        if not value:
            return None
        number = ascii_digits(value)
        if number is None:
            self.add(field, f"must be {RESOURCE_VERSION.rule}, got {shown(value)}")
        return number

    def whole_number(self, field: str, value: str, low: int, high: int, what: str) -> int | None:
        """A number written as text, in ASCII digits and within [low, high]."""
        number = ascii_digits(value)
        if number is None or not low <= number <= high:
            self.add(field, f"{what}, got {shown(value)}")
            return None
        return number

    def text(
        self,
        field: str,
        value: str,
        *,
        max_length: int,
        required: bool = False,
        multiline: bool = False,
        what: str = "is required",
    ) -> bool:
        """Free text: no control, bidi-control or zero-width characters; bounded."""
        if required and not value.strip():
            self.add(field, what)
            return False
        if len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters, got {len(value)}")
            return False
        problem = text_problem(value, multiline=multiline)
        if problem is not None:
            self.add(field, problem)
            return False
        return True

    def reason(self, field: str, value: str, *, required: bool = True) -> None:
        self.text(
            field,
            value,
            max_length=MAX_REASON,
            required=required,
            what="is required: say why (destructive actions carry a reason)",
        )

    def int_range(self, field: str, value: int, low: int, high: int) -> bool:
        if not low <= value <= high:
            self.add(field, f"must be between {low} and {high}, got {value}")
            return False
        return True

    def at_most(self, field: str, values: Sized, maximum: int, what: str = "values") -> bool:
        """A repeated or map field's size; check it before checking each value."""
        if len(values) > maximum:
            self.add(field, f"at most {maximum} {what}, got {len(values)}")
            return False
        return True

    def labels(self, field: str, labels: Mapping[str, str]) -> None:
        if not self.at_most(field, labels, MAX_LABELS, "labels"):
            return
        for key, value in labels.items():
            path = map_key_path(field, key)
            problem = label_key_problem(key)
            if problem:
                self.add(path, problem)
            problem = label_value_problem(value)
            if problem:
                self.add(path, problem)

    def label_selector(self, field: str, value: str) -> bool:
        """The selector's text as a whole: bounded, printable ASCII (then parse it)."""
        if len(value) > MAX_LABEL_SELECTOR:
            self.add(field, f"must be at most {MAX_LABEL_SELECTOR} characters, got {len(value)}")
            return False
        if not value.isascii() or not value.isprintable():
            self.add(field, "must be printable ASCII: label keys, values, '=', '!' and ','")
            return False
        return True

    @property
    def empty(self) -> bool:
        return not self._items

    def raise_if_any(self) -> None:
        if self._items:
            raise InvalidArgument(self._items)


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key, or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and not _LABEL_PREFIX.fullmatch(prefix):
        return "key prefix must be a DNS subdomain"
    if not _LABEL_NAME.fullmatch(name):
        return (
            "key name must be 1 to 63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if _LABEL_VALUE.fullmatch(value):
        return None
    return (
        "value must be at most 63 characters of letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit"
    )


def map_key_path(field: str, key: str) -> str:
    """The path of one entry of a map field: `parameters['region']`."""
    return f"{field}[{shown(key)}]"
