"""Node commands (re-image): issue, deliver, report, cancel and time out.

Lifecycle: PENDING -> DELIVERED (heartbeat or command stream; redelivered
until acknowledged) -> ACKNOWLEDGED -> SUCCEEDED | FAILED; TIMED_OUT after the
deadline and CANCELLED by an operator from any unfinished state. A command of
a LOST node stays PENDING, visible, until its deadline; it is never dropped.

Every function here runs inside the caller's write transaction. Row locks are
always taken node first, then commands, so concurrent heartbeats, reports,
cancellations and sweeps never deadlock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from ppos.controlplane.core.ids import new_id
from ppos.controlplane.security.principal import Principal, current_request_id
from ppos.controlplane.services.node_registry import store
from ppos.controlplane.services.node_registry.changelog import COMMANDS_CHANNEL, notify
from ppos.controlplane.services.node_registry.convert import command_snapshot
from ppos.controlplane.services.node_registry.lifecycle import (
    ACTIVE_COMMAND_STATES,
    FINAL_COMMAND_STATES,
)
from ppos.controlplane.services.node_registry.models import NodeCommandRow, NodeRow
from ppos.controlplane.storage import audit

SERVICE = "noderegistry"
REIMAGE = "REIMAGE"
NODE_REPORTS = frozenset({"ACKNOWLEDGED", "SUCCEEDED", "FAILED"})
# Reports a node may make from each state (a repeat of the current state is a no-op).
_NEXT = {
    "DELIVERED": frozenset({"ACKNOWLEDGED", "FAILED"}),
    "ACKNOWLEDGED": frozenset({"SUCCEEDED", "FAILED"}),
}


@dataclass(frozen=True)
class ReimageRequest:
    node_id: str
    image: str
    digest: str
    reason: str
    idempotency_key: str
    timeout_seconds: int

    def sha256(self) -> str:
        body = {
            "kind": REIMAGE,
            "node_id": self.node_id,
            "image": self.image,
            "digest": self.digest,
            "reason": self.reason,
            "timeout_seconds": self.timeout_seconds,
        }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    command: NodeCommandRow
    duplicate: bool


def _audit(
    session: Session, row: NodeCommandRow, before: dict[str, object] | None, reason: str = ""
) -> None:
    audit.record(
        session,
        service=SERVICE,
        resource_kind="node_command",
        resource_id=row.command_id,
        before=before,
        after=command_snapshot(row),
        reason=reason,
    )


def _touch(row: NodeCommandRow, now: dt.datetime) -> None:
    row.resource_version += 1
    row.updated_at = now


def find_by_key(session: Session, request: ReimageRequest) -> Issued | None:
    """The command an idempotency key already made, or None; a different body is refused."""
    if not request.idempotency_key:
        return None
    existing = session.scalars(
        select(NodeCommandRow).where(NodeCommandRow.idempotency_key == request.idempotency_key)
    ).one_or_none()
    if existing is None:
        return None
    if existing.request_sha256 != request.sha256():
        err = AlreadyExists(
            "idempotency key",
            request.idempotency_key,
            f"idempotency key {request.idempotency_key!r} was used for command "
            f"{existing.command_id} with a different request; use a new key",
            reason="IDEMPOTENCY_KEY_REUSED",
        )
        err.metadata["command_id"] = existing.command_id
        raise err
    return Issued(existing, duplicate=True)


def issue_reimage(
    session: Session, request: ReimageRequest, issuer: Principal, now: dt.datetime
) -> Issued:
    known = find_by_key(session, request)
    if known is not None:
        return known
    node = store.lock_node(session, request.node_id)
    known = find_by_key(session, request)  # again, under the node lock: a concurrent twin
    if known is not None:
        return known
    if not node.registered:
        raise FailedPrecondition(
            f"node {node.node_id} has not registered yet: it cannot run a re-image",
            [PreconditionViolation("NODE_STATE", f"node/{node.node_id}", "not registered")],
            reason="NODE_NOT_REGISTERED",
        )
    _refuse_if_reimaging(session, node)
    row = NodeCommandRow(
        command_id=new_id("cmd"),
        node_id=node.node_id,
        kind=REIMAGE,
        target_image=request.image,
        target_digest=request.digest,
        state="PENDING",
        reason=request.reason,
        issued_by_kind=issuer.kind.value,
        issued_by_name=issuer.name,
        acting_for=issuer.acting_for,
        idempotency_key=request.idempotency_key or None,
        request_sha256=request.sha256(),
        request_id=current_request_id.get(),
        timeout_seconds=request.timeout_seconds,
        deadline=now + dt.timedelta(seconds=request.timeout_seconds),
        created_at=now,
        updated_at=now,
        delivery_count=0,
        result_message="",
        resource_version=1,
    )
    session.add(row)
    _audit(session, row, None, request.reason)
    notify(session, COMMANDS_CHANNEL, node.node_id)
    return Issued(row, duplicate=False)


def _refuse_if_reimaging(session: Session, node: NodeRow) -> None:
    """A node runs one re-image at a time."""
    active = session.scalars(
        select(NodeCommandRow).where(
            NodeCommandRow.node_id == node.node_id,
            NodeCommandRow.kind == REIMAGE,
            NodeCommandRow.state.in_(ACTIVE_COMMAND_STATES),
        )
    ).first()
    if active is not None:
        raise FailedPrecondition(
            f"node {node.node_id} already has re-image command {active.command_id} "
            f"({active.state}); cancel it or wait for it to finish",
            [
                PreconditionViolation(
                    "COMMAND_IN_PROGRESS", f"node_command/{active.command_id}", active.state
                )
            ],
            reason="REIMAGE_IN_PROGRESS",
            metadata={"command_id": active.command_id},
        )


def open_commands(session: Session, node_id: str) -> list[NodeCommandRow]:
    """The node's unfinished commands, oldest first, locked (the node row is locked first)."""
    return list(
        session.scalars(
            select(NodeCommandRow)
            .where(
                NodeCommandRow.node_id == node_id,
                NodeCommandRow.state.in_(ACTIVE_COMMAND_STATES),
            )
            .order_by(NodeCommandRow.created_at, NodeCommandRow.command_id)
            .with_for_update()
        )
    )


def reimage_running(rows: Sequence[NodeCommandRow]) -> bool:
    """Whether one of these commands is a re-image the node acknowledged."""
    return any(row.kind == REIMAGE and row.state == "ACKNOWLEDGED" for row in rows)


def hand_over(
    session: Session, rows: Sequence[NodeCommandRow], now: dt.datetime, *, include_delivered: bool
) -> list[NodeCommandRow]:
    """Hand the node its waiting commands (from `open_commands`).

    PENDING ones become DELIVERED; with `include_delivered`, DELIVERED ones not
    yet acknowledged are handed over again (at-least-once). Overdue ones are
    left to the sweep, which times them out.
    """
    states = ("PENDING", "DELIVERED") if include_delivered else ("PENDING",)
    handed = [row for row in rows if row.state in states and row.deadline > now]
    for row in handed:
        before = command_snapshot(row) if row.state == "PENDING" else None
        row.delivery_count += 1
        if row.state == "PENDING":
            row.state = "DELIVERED"
            row.delivered_at = now
        _touch(row, now)
        if before is not None:
            _audit(session, row, before)  # first delivery; redeliveries only count up
    return handed


def deliver(
    session: Session, node: NodeRow, now: dt.datetime, *, include_delivered: bool
) -> list[NodeCommandRow]:
    return hand_over(
        session, open_commands(session, node.node_id), now, include_delivered=include_delivered
    )


def lock_command(session: Session, command_id: str) -> NodeCommandRow:
    row = session.scalars(
        select(NodeCommandRow).where(NodeCommandRow.command_id == command_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound("node command", command_id)
    return row


def report(
    session: Session,
    node: NodeRow,
    command_id: str,
    state: str,
    message: str,
    now: dt.datetime,
) -> tuple[NodeCommandRow, bool]:
    """Apply a node's report; returns the command and whether it changed."""
    row = lock_command(session, command_id)
    if row.node_id != node.node_id:
        raise PermissionDenied(
            f"command {command_id} belongs to another node: a node can report only on "
            "its own commands",
            reason="NOT_YOUR_COMMAND",
        )
    if row.state == state:
        return row, False  # a retried report: already recorded
    if row.state in FINAL_COMMAND_STATES:
        raise FailedPrecondition(
            f"command {command_id} is already {row.state}; it cannot become {state}",
            [PreconditionViolation("COMMAND_STATE", f"node_command/{command_id}", row.state)],
            reason="COMMAND_FINISHED",
            metadata={"state": row.state},
        )
    if state not in _NEXT.get(row.state, frozenset()):
        hint = (
            "it has not been delivered yet"
            if row.state == "PENDING"
            else "acknowledge it first"
            if state == "SUCCEEDED"
            else "this step is out of order"
        )
        raise FailedPrecondition(
            f"command {command_id} is {row.state}: it cannot become {state} ({hint})",
            [PreconditionViolation("COMMAND_STATE", f"node_command/{command_id}", row.state)],
            reason="INVALID_COMMAND_TRANSITION",
            metadata={"state": row.state},
        )
    before = command_snapshot(row)
    row.state = state
    if state == "ACKNOWLEDGED":
        row.acknowledged_at = now
    else:
        row.finished_at = now
    row.result_message = message
    _touch(row, now)
    _audit(session, row, before)
    return row, True


def cancel(session: Session, row: NodeCommandRow, reason: str, now: dt.datetime) -> None:
    """Cancel an unfinished command (row locked by the caller, node first)."""
    if row.state in FINAL_COMMAND_STATES:
        raise FailedPrecondition(
            f"command {row.command_id} is already {row.state}; only unfinished commands "
            "can be cancelled",
            [PreconditionViolation("COMMAND_STATE", f"node_command/{row.command_id}", row.state)],
            reason="COMMAND_FINISHED",
            metadata={"state": row.state},
        )
    before = command_snapshot(row)
    row.state = "CANCELLED"
    row.finished_at = now
    row.result_message = f"cancelled: {reason}"[:1024]
    _touch(row, now)
    _audit(session, row, before, reason)


def overdue(session: Session, now: dt.datetime, limit: int) -> Sequence[tuple[str, str]]:
    """(command id, node id) of unfinished commands past their deadline (no locks)."""
    rows = session.execute(
        select(NodeCommandRow.command_id, NodeCommandRow.node_id)
        .where(NodeCommandRow.state.in_(ACTIVE_COMMAND_STATES), NodeCommandRow.deadline <= now)
        .order_by(NodeCommandRow.deadline)
        .limit(limit)
    ).all()
    return [(str(r[0]), str(r[1])) for r in rows]


def time_out(session: Session, row: NodeCommandRow, node: NodeRow | None, now: dt.datetime) -> None:
    """Mark an overdue command TIMED_OUT, saying why (e.g. the node was LOST)."""
    before = command_snapshot(row)
    previous = row.state
    row.state = "TIMED_OUT"
    row.finished_at = now
    if node is not None and node.readiness == "LOST" and previous == "PENDING":
        detail = "never delivered: the node was LOST"
    elif previous == "PENDING":
        detail = "never delivered: the node did not heartbeat or stream commands"
    elif previous == "DELIVERED":
        detail = "delivered but never acknowledged"
    else:
        detail = "acknowledged but never completed"
    row.result_message = f"timed out after {row.timeout_seconds}s: {detail}"
    _touch(row, now)
    _audit(session, row, before)
