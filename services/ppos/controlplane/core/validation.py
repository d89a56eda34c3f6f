"""Field validation that reports every violation at once, by field path."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ppos.controlplane.core.errors import FieldViolation, InvalidArgument

# Kubernetes label syntax: optional DNS prefix, name of 63 chars, values of 63.
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
RESOURCE_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{1,61}[a-z0-9])$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
REGION = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_REASON = 1024


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

    def resource_id(self, field: str, value: str) -> bool:
        if not self.require(field, value):
            return False
        return self.match(
            field,
            value,
            RESOURCE_ID,
            "must be 3 to 63 lowercase letters, digits or '-', starting and ending "
            "with a letter or digit",
        )

    def reason(self, field: str, value: str, *, required: bool = True) -> None:
        if required and not value.strip():
            self.add(field, "is required: say why (destructive actions carry a reason)")
        elif len(value) > MAX_REASON:
            self.add(field, f"must be at most {MAX_REASON} characters")

    def int_range(self, field: str, value: int, low: int, high: int) -> bool:
        if not low <= value <= high:
            self.add(field, f"must be between {low} and {high}, got {value}")
            return False
        return True

    def labels(self, field: str, labels: Mapping[str, str]) -> None:
        if len(labels) > 64:
            self.add(field, "at most 64 labels")
        for key, value in labels.items():
            problem = label_key_problem(key)
            if problem:
                self.add(f"{field}[{key!r}]", problem)
            if not _LABEL_VALUE.fullmatch(value):
                self.add(
                    f"{field}[{key!r}]",
                    "value must be at most 63 characters of letters, digits, '-', '_' "
                    "or '.', starting and ending with a letter or digit",
                )

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
