"""Who is calling, as the edge resolves it: the call context of core.context."""

from __future__ import annotations

from ppos.controlplane.core.context import (
    ANONYMOUS,
    OperatorRole,
    Principal,
    PrincipalKind,
    current_method,
    current_principal,
    current_request_id,
    internal,
)

__all__ = [
    "ANONYMOUS",
    "OperatorRole",
    "Principal",
    "PrincipalKind",
    "current_method",
    "current_principal",
    "current_request_id",
    "internal",
]
