"""Node commands as they touch their node: a node's report, an operator's cancel.

A re-image moves its node's readiness (REIMAGING while acknowledged, then
NOT_READY); each runs in the caller's unit of work, node row first, then the
command.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.node_registry import commands, store
from ppos.controlplane.services.node_registry.changelog import Change, record_changes
from ppos.controlplane.services.node_registry.convert import node_snapshot
from ppos.controlplane.services.node_registry.lifecycle import set_readiness
from ppos.controlplane.services.node_registry.models import NodeCommandRow, NodeRow


def report_command(
    session: Session,
    principal: Principal,
    command_id: str,
    state: str,
    message: str,
    now: dt.datetime,
) -> NodeCommandRow:
    """The calling node reports on one of its commands."""
    node = store.own_node(session, principal)  # node row first, then the command
    row, changed = commands.report(session, node, command_id, state, message, now)
    if changed and row.kind == commands.REIMAGE:
        _reimage_readiness(session, node, state, now)
    return row


def _reimage_readiness(session: Session, node: NodeRow, state: str, now: dt.datetime) -> None:
    before = node_snapshot(node)
    previous = node.readiness
    if state == "ACKNOWLEDGED":
        changed = set_readiness(node, "REIMAGING", "ReimageInProgress", now)
    elif node.readiness == "REIMAGING":
        why = "ReimageSucceeded" if state == "SUCCEEDED" else "ReimageFailed"
        changed = set_readiness(node, "NOT_READY", why, now)
    else:
        changed = False
    if changed:
        record_changes(session, [Change(node, node.readiness_reason, previous)], now)
        store.audit_node(session, node, before)


def cancel_command(
    session: Session, command_id: str, reason: str, now: dt.datetime
) -> NodeCommandRow:
    """Cancel an unfinished command; a re-image under way leaves its node NOT_READY."""
    found = store.get_command(session, command_id)
    node = store.lock_node(session, found.node_id)  # node first, then the command
    row = commands.lock_command(session, command_id)
    was_running = row.state == "ACKNOWLEDGED"
    commands.cancel(session, row, reason, now)
    if was_running and node.readiness == "REIMAGING":
        before = node_snapshot(node)
        previous = node.readiness
        set_readiness(node, "NOT_READY", "ReimageCancelled", now)
        record_changes(session, [Change(node, "ReimageCancelled", previous)], now)
        store.audit_node(session, node, before, reason=reason)
    return row
