"""What the parts of the NodeRegistryService servicer share."""

from __future__ import annotations

import grpc

from ppos.controlplane.core.errors import PermissionDenied
from ppos.controlplane.security.principal import Principal

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
