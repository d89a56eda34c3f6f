"""Readiness and schedulability transitions of one node (pure functions on a row).

Readiness (READY, NOT_READY, DRAINING, REIMAGING, LOST) is what the node can
do; schedulability (cordon) is what operators allow. They are separate axes,
as in Kubernetes: a cordoned node can be READY.
"""

from __future__ import annotations

import datetime as dt

from ppos.controlplane.services.node_registry.models import NodeRow

ACTIVE_COMMAND_STATES = ("PENDING", "DELIVERED", "ACKNOWLEDGED")
FINAL_COMMAND_STATES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED")


def set_readiness(row: NodeRow, readiness: str, reason: str, now: dt.datetime) -> bool:
    """Move `row` to `readiness` for `reason`; True when anything changed."""
    if row.readiness == readiness and row.readiness_reason == reason:
        return False
    if row.readiness != readiness:
        row.last_transition_at = now
    row.readiness = readiness
    row.readiness_reason = reason
    return True


def set_schedulable(row: NodeRow, schedulable: bool, reason: str, now: dt.datetime) -> bool:
    if row.schedulable == schedulable and row.unschedulable_reason == reason:
        return False
    if row.schedulable != schedulable:
        row.schedulable_transition_at = now
    row.schedulable = schedulable
    row.unschedulable_reason = reason
    return True


def heartbeat_readiness(
    row: NodeRow,
    *,
    ready: bool,
    not_ready_reason: str,
    slots_in_use: int,
    reimage_in_progress: bool,
) -> tuple[str, str]:
    """Readiness and reason a heartbeat leads to from the row's current state.

    - LOST comes back through NOT_READY first (`HeartbeatResumed`), whatever
      the node says; its next heartbeat decides from there.
    - While a re-image the node acknowledged is running: REIMAGING.
    - DRAINING stays until the node reports no slot in use (`Drained`), the
      drain deadline passes (the sweep) or an operator uncordons.
    - Otherwise the node's own word: READY, or NOT_READY with its reason.
    """
    if row.readiness == "LOST":
        return "NOT_READY", "HeartbeatResumed"
    if reimage_in_progress:
        return "REIMAGING", "ReimageInProgress"
    if row.readiness == "DRAINING":
        if slots_in_use == 0:
            return "NOT_READY", "Drained"
        return "DRAINING", row.readiness_reason
    if ready:
        return "READY", "HeartbeatReady"
    return "NOT_READY", not_ready_reason or "NodeNotReady"
