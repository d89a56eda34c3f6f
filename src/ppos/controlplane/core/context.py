"""The call context: who is calling and under which request id.

The edge resolves both once per call and sets them here; handlers, the audit
log (storage) and the logs read them. Core holds them so the floors below
security need not import it. A principal never holds the credential it was
proven with.
"""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass
from functools import cached_property


class PrincipalKind(enum.Enum):
    ANONYMOUS = "anonymous"
    OPERATOR = "operator"
    NODE = "node"
    ENROLLING_NODE = "enrolling-node"
    PEER = "service"
    INTERNAL = "internal"  # background work of this process (schedulers, reconcilers)
    POLICY = "policy"  # a governance policy acting through the reconciler (name: policy id)


class OperatorRole(enum.IntEnum):
    """What an operator may do; each role may do all the lesser ones may."""

    VIEWER = 1  # reads and watches
    OPERATOR = 2  # day-to-day actions: cordon, drain, re-image, pause, sweeps, admin jobs
    ADMIN = 3  # also tenants, queues, partners, routes and policies

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    name: str
    # For nodes: the credential generation the token was minted under.
    credential_generation: int = 0
    # For enrolling nodes: SHA-256 (hex) of the enrollment token; the token itself
    # never leaves the edge.
    enrollment_token_sha256: str = ""
    # For peers: the principal the peer acted for (its `act` claim), if any.
    acting_for: str = ""
    # For operators: the role their credential grants (the control token: ADMIN).
    role: OperatorRole | None = None

    @cached_property
    def display(self) -> str:
        """`operator:alice`, `node:node_01...`, `service:ppos.controlplane.governance`."""
        return f"{self.kind.value}:{self.name}"


ANONYMOUS = Principal(PrincipalKind.ANONYMOUS, "anonymous")

current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "ppos_principal", default=ANONYMOUS
)
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "ppos_request_id", default=""
)
current_method: contextvars.ContextVar[str] = contextvars.ContextVar("ppos_method", default="")


def internal(name: str) -> Principal:
    """The principal of this process's own background work (e.g. `scheduler`)."""
    return Principal(PrincipalKind.INTERNAL, name)
