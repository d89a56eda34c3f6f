"""NodeFilter: validated once, applied in SQL (ListNodes) or in memory (WatchNodes)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_

from ppos.controlplane.core.selectors import LabelSelector, selector_field
from ppos.controlplane.core.validation import (
    CLUSTER_NAME,
    IMAGE_REFERENCE,
    MAX_ENUM_FILTER,
    Violations,
)
from ppos.controlplane.noderegistry.v1 import node_pb2 as pb
from ppos.controlplane.services.node_registry.convert import READINESS_NAME
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.storage.labels import selector_clause


@dataclass(frozen=True, slots=True)
class NodeView:
    """The attributes a filter looks at, as of one version of a node."""

    region: str
    cluster: str
    readiness: str
    container_image: str
    labels: Mapping[str, Any]

    @classmethod
    def of(cls, row: NodeRow) -> NodeView:
        return cls(row.region, row.cluster, row.readiness, row.container_image, dict(row.labels))


@dataclass(frozen=True)
class NodeQuery:
    region: str = ""
    cluster: str = ""
    readiness: frozenset[str] = frozenset()
    container_image: str = ""
    selector: LabelSelector = field(default_factory=LabelSelector)

    @property
    def everything(self) -> bool:
        return not (
            self.region
            or self.cluster
            or self.readiness
            or self.container_image
            or not self.selector.empty
        )

    def matches(self, view: NodeView) -> bool:
        if self.region and view.region != self.region:
            return False
        if self.cluster and view.cluster != self.cluster:
            return False
        if self.readiness and view.readiness not in self.readiness:
            return False
        if self.container_image and view.container_image != self.container_image:
            return False
        return self.selector.matches(view.labels)

    def where(self, query: Select[Any]) -> Select[Any]:
        clauses: list[ColumnElement[bool]] = []
        if self.region:
            clauses.append(NodeRow.region == self.region)
        if self.cluster:
            clauses.append(NodeRow.cluster == self.cluster)
        if self.readiness:
            clauses.append(NodeRow.readiness.in_(sorted(self.readiness)))
        if self.container_image:
            clauses.append(NodeRow.container_image == self.container_image)
        labels = selector_clause(self.selector, NodeRow.labels)
        if labels is not None:
            clauses.append(labels)
        return query.where(and_(*clauses)) if clauses else query

    def fingerprint(self) -> str:
        """Stable digest of the filter (binds page tokens to the filter they came from)."""
        text = "|".join(
            [
                self.region,
                self.cluster,
                ",".join(sorted(self.readiness)),
                self.container_image,
                self.selector.canonical(),
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_filter(message: pb.NodeFilter, violations: Violations, *, prefix: str) -> NodeQuery:
    """Validate a NodeFilter, adding every problem to `violations`."""
    violations.region(f"{prefix}.region", message.region, required=False)
    violations.syntax(f"{prefix}.cluster", message.cluster, CLUSTER_NAME, required=False)
    readiness = set()
    bounded = violations.at_most(f"{prefix}.readiness", message.readiness, MAX_ENUM_FILTER)
    for index, value in enumerate(message.readiness if bounded else ()):
        name = READINESS_NAME.get(value)
        if name is None:
            violations.add(f"{prefix}.readiness[{index}]", f"is not a readiness state ({value})")
        else:
            readiness.add(name)
    violations.syntax(
        f"{prefix}.container_image", message.container_image, IMAGE_REFERENCE, required=False
    )
    selector = selector_field(violations, f"{prefix}.label_selector", message.label_selector)
    return NodeQuery(
        region=message.region,
        cluster=message.cluster,
        readiness=frozenset(readiness),
        container_image=message.container_image,
        selector=selector,
    )
