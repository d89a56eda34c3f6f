"""What operators do to a node: cordon, uncordon, drain.

Each runs in the caller's unit of work on the locked node row, checks the
caller's expected resource version, logs the change and audits it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition
from ppos.controlplane.core.errors import PreconditionViolation as Violation
from ppos.controlplane.core.versions import check_version
from ppos.controlplane.services.node_registry.changelog import Change, record_changes
from ppos.controlplane.services.node_registry.convert import node_snapshot
from ppos.controlplane.services.node_registry.lifecycle import set_readiness, set_schedulable
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.services.node_registry.store import audit_node, lock_node

# Why a node in each readiness cannot be drained.
_UNDRAINABLE = {
    "DRAINING": "it is already draining (uncordon it first to start over)",
    "REIMAGING": "it is being re-imaged",
    "LOST": "it is LOST and runs nothing we know of (cordon it instead)",
}


def cordon(session: Session, node_id: str, expected: str, reason: str, now: dt.datetime) -> NodeRow:
    row = lock_node(session, node_id)
    check_version("node", row.node_id, expected, row.resource_version)
    before = node_snapshot(row)
    if not set_schedulable(row, False, reason, now):
        return row  # already cordoned for this reason
    row.generation += 1
    record_changes(session, [Change(row, "Cordoned", row.readiness)], now)
    audit_node(session, row, before, reason=reason)
    return row


def uncordon(session: Session, node_id: str, expected: str, now: dt.datetime) -> NodeRow:
    row = lock_node(session, node_id)
    check_version("node", row.node_id, expected, row.resource_version)
    before = node_snapshot(row)
    previous = row.readiness
    changed = set_schedulable(row, True, "", now)
    if row.drain_deadline is not None:
        row.drain_deadline = None
        changed = True
    if row.readiness == "DRAINING":
        changed = set_readiness(row, "NOT_READY", "DrainCancelled", now) or changed
    if not changed:
        return row  # already schedulable
    row.generation += 1
    record_changes(session, [Change(row, "Uncordoned", previous)], now)
    audit_node(session, row, before)
    return row


def drain(
    session: Session,
    node_id: str,
    expected: str,
    reason: str,
    grace: float,
    now: dt.datetime,
) -> NodeRow:
    """Cordon the node and give its work `grace` seconds (then the sweep ends the drain)."""
    row = lock_node(session, node_id)
    check_version("node", row.node_id, expected, row.resource_version)
    refusal = _UNDRAINABLE.get(row.readiness)
    if refusal is None and not row.registered:
        refusal = "it has not registered yet (cordon it instead)"
    if refusal is not None:
        raise FailedPrecondition(
            f"node {row.node_id} cannot be drained: {refusal}",
            [Violation("NODE_STATE", f"node/{row.node_id}", row.readiness)],
            reason="NODE_NOT_DRAINABLE",
            metadata={"readiness": row.readiness},
        )
    before = node_snapshot(row)
    previous = row.readiness
    set_schedulable(row, False, reason, now)
    set_readiness(row, "DRAINING", "DrainRequested", now)
    row.drain_deadline = now + dt.timedelta(seconds=grace)
    row.generation += 1
    record_changes(session, [Change(row, "DrainRequested", previous)], now)
    audit_node(session, row, before, reason=reason)
    return row
