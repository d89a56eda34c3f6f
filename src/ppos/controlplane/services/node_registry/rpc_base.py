"""What the parts of the NodeRegistryService servicer share."""

from __future__ import annotations

import grpc

from ppos.controlplane.core.errors import PermissionDenied, StaleResourceVersion
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.node_registry.models import NodeRow

SERVICE = "noderegistry"
Context = grpc.aio.ServicerContext[object, object]


def only_self(principal: Principal, field: str, node_id: str) -> None:
    """A node can address only itself: its id comes from its credential."""
    if node_id and node_id != principal.name:
        raise PermissionDenied(
            f"{field} {node_id!r} is not the calling node: a node credential can only "
            f"act for its own node ({principal.name})",
            reason="NODE_ID_MISMATCH",
            metadata={"field": field},
        )


def expected_version(violations: Violations, field: str, value: str) -> int | None:
    """The caller's `expected_resource_version` (None: no check); ASCII digits only."""
    return violations.resource_version(field, value)


def check_version(row: NodeRow, expected: int | None) -> None:
    if expected is not None and expected != row.resource_version:
        raise StaleResourceVersion("node", row.node_id, str(expected), str(row.resource_version))
