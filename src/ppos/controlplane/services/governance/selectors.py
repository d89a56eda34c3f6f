"""Kubernetes-style equality label selectors: `tier=gold,env!=test,gpu,!legacy`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ppos.controlplane.core.errors import InvalidArgument
from ppos.controlplane.core.validation import (
    Violations,
    label_key_problem,
    label_value_problem,
)

# As many as the node registry's selectors take.
MAX_REQUIREMENTS = 32


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        equal = present and str(labels[self.key]) == self.value
        return equal if self.op == "=" else not equal


def parse_selector(text: str, *, field: str = "label_selector") -> list[Requirement]:
    violations = Violations()
    violations.label_selector(field, text)
    violations.raise_if_any()
    parts = text.split(",")
    if len(parts) > MAX_REQUIREMENTS:
        raise InvalidArgument.single(field, f"at most {MAX_REQUIREMENTS} requirements")
    requirements = []
    for raw in (part.strip() for part in parts):
        if not raw:
            continue
        if "!=" in raw:
            key, value = (s.strip() for s in raw.split("!=", 1))
            op = "!="
        elif "=" in raw:
            key, value = (s.strip() for s in raw.split("=", 1))
            key, value = key.rstrip("="), value.lstrip("=")
            op = "="
        elif raw.startswith("!"):
            key, value, op = raw[1:].strip(), "", "!exists"
        else:
            key, value, op = raw, "", "exists"
        problem = label_key_problem(key)
        if not problem and op in ("=", "!="):
            problem = label_value_problem(value)
        if problem:
            raise InvalidArgument.single(field, f"{raw!r}: {problem}")
        requirements.append(Requirement(key, op, value))
    return requirements


def matches(requirements: list[Requirement], labels: Mapping[str, Any]) -> bool:
    return all(r.matches(labels) for r in requirements)
