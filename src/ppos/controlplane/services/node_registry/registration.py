"""A node declares itself: region, cluster, labels, capacity and container version."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition, PreconditionViolation
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.node_registry.changelog import Change, record_changes
from ppos.controlplane.services.node_registry.convert import node_snapshot
from ppos.controlplane.services.node_registry.lifecycle import set_readiness
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.services.node_registry.store import audit_node, own_node


@dataclass(frozen=True)
class Declaration:
    region: str
    cluster: str  # '' keeps the enrolled cluster
    labels: dict[str, str]
    capacity_slots: int
    image: str
    digest: str


def register_node(
    session: Session, principal: Principal, declared: Declaration, now: dt.datetime
) -> NodeRow:
    """The calling node as declared; a restart with the same declaration changes nothing."""
    row = own_node(session, principal)
    if row.region != declared.region:
        raise FailedPrecondition(
            f"node {row.node_id} was enrolled for region {row.region}, not {declared.region}",
            [PreconditionViolation("REGION", f"node/{row.node_id}", row.region)],
            reason="REGION_MISMATCH",
        )
    before = node_snapshot(row)
    spec = (declared.cluster or row.cluster, dict(declared.labels), declared.capacity_slots)
    container = (declared.image, declared.digest)
    spec_changed = spec != (row.cluster, dict(row.labels), row.capacity_slots)
    container_changed = container != (row.container_image, row.container_digest)
    first = not row.registered
    row.last_heartbeat_at = now  # registering proves the node is alive
    if not (first or spec_changed or container_changed):
        return row  # a node agent restarting with the same declaration
    row.cluster, row.labels, row.capacity_slots = spec
    row.container_image, row.container_digest = container
    row.registered = True
    if spec_changed:
        row.generation += 1
    previous = row.readiness
    if first:
        set_readiness(row, "NOT_READY", "Registered", now)
    record_changes(session, [Change(row, "Registered" if first else "Reregistered", previous)], now)
    audit_node(session, row, before)
    return row
