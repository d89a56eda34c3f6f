"""Kubernetes-style label selectors: parse once, match in Python (in SQL: storage.labels).

Supported requirements, comma-separated (all must hold):
`key=value`, `key==value`, `key!=value` (also true when the key is absent),
`key` (the key exists) and `!key` (the key does not exist). Keys and values
follow Kubernetes label syntax. Anything else is refused with a description
of what is wrong and where.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ppos.controlplane.core.validation import Violations, label_key_problem, label_value_problem

Operator = Literal["=", "!=", "exists", "!exists"]
MAX_REQUIREMENTS = 32


class SelectorError(ValueError):
    """The selector text is malformed; the message says which part and why."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Operator
    value: str = ""

    def matches(self, labels: Mapping[str, Any]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        present = self.key in labels and str(labels[self.key]) == self.value
        return present if self.op == "=" else not present


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, Any]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def canonical(self) -> str:
        parts = []
        for req in sorted(self.requirements, key=lambda r: (r.key, r.op, r.value)):
            if req.op == "exists":
                parts.append(req.key)
            elif req.op == "!exists":
                parts.append("!" + req.key)
            else:
                parts.append(f"{req.key}{req.op}{req.value}")
        return ",".join(parts)


def parse_selector(text: str) -> LabelSelector:
    """Parse `gpu=true,tier!=edge,!spot`; SelectorError when malformed."""
    text = text.strip()
    if not text:
        return LabelSelector()
    parts = text.split(",")
    if len(parts) > MAX_REQUIREMENTS:
        raise SelectorError(f"at most {MAX_REQUIREMENTS} requirements")
    requirements = []
    for index, raw in enumerate(parts, start=1):
        requirements.append(_requirement(raw.strip(), index))
    return LabelSelector(tuple(requirements))


def selector_field(violations: Violations, field: str, text: str) -> LabelSelector:
    """The selector in request field `field`; its problems go to `violations`."""
    if violations.label_selector(field, text):
        try:
            return parse_selector(text)
        except SelectorError as exc:
            violations.add(field, str(exc))
    return LabelSelector()


def _requirement(part: str, index: int) -> Requirement:
    where = f"requirement {index} ({part!r})"
    if not part:
        raise SelectorError(f"requirement {index} is empty (stray comma?)")
    if " in " in f" {part} " or " notin " in f" {part} " or "(" in part:
        raise SelectorError(
            f"{where}: set-based selectors (in, notin) are not supported; "
            "use key=value, key!=value, key or !key"
        )
    op: Operator
    if "!=" in part:
        key, value, op = *part.split("!=", 1), "!="
    elif "==" in part:
        key, value, op = *part.split("==", 1), "="
    elif "=" in part:
        key, value, op = *part.split("=", 1), "="
    elif part.startswith("!"):
        key, value, op = part[1:], "", "!exists"
    else:
        key, value, op = part, "", "exists"
    key, value = key.strip(), value.strip()
    problem = label_key_problem(key) if key else "key is empty"
    if problem:
        raise SelectorError(f"{where}: {problem}")
    value_problem = label_value_problem(value) if op in ("=", "!=") else None
    if value_problem:
        raise SelectorError(f"{where}: {value_problem}")
    return Requirement(key, op, value)
