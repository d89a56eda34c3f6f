"""Recording what deliveries came to: one fenced statement per group of outcomes.

A group of outcomes (deliveries that finished together) is written in one
transaction: which of the group's leases this replica still holds (one SELECT
by their tokens, lease.py, locking the rows on PostgreSQL); the acknowledged
ones in one executemany of a fixed, fenced UPDATE (compiled once, sent as one
batch), the others (retries, failures: rare) in one UPDATE choosing their values
by CASE on the command id; one INSERT of the audit entries of the commands it
ended; what the gateways now hold; the gateways' reachability. Only outcomes
whose lease was still held count for the rest: a replica that lost a lease (it froze, another
replica delivered the command since) changes nothing, not even a gateway's
hold, since a call that timed out while its caller was frozen says nothing
about the gateway.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, Update, bindparam, case, update
from sqlalchemy.orm import Session

from ppos.controlplane.security.principal import internal
from ppos.controlplane.services.governance.common import SERVICE
from ppos.controlplane.services.governance.enums import GATEWAY_QUEUE_STATE
from ppos.controlplane.services.governance.models import PartnerRouteRow, QueueRow
from ppos.controlplane.services.governance.outbox import reachability
from ppos.controlplane.services.governance.outbox.commands import gateway_method
from ppos.controlplane.services.governance.outbox.lease import (
    OUTBOX,
    Lease,
    held_by,
    held_by_token,
    token_values,
)
from ppos.controlplane.storage import audit
from ppos.controlplane.storage.leases import DatabaseClock
from ppos.preflight.v1 import gateway_service_pb2 as gw_pb

DISPATCHER = internal("outbox-dispatcher")
MAX_ERROR = 2000
_QUEUES = cast(Table, QueueRow.__table__)
_ROUTES = cast(Table, PartnerRouteRow.__table__)


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to, waiting to be recorded."""

    lease: Lease
    state: str  # ACKNOWLEDGED, PENDING (retry later) or FAILED
    receiver_id: str = ""
    duplicate: bool = False
    detail: str = ""
    retry_in: float = 0.0
    reached: bool = True  # the receiver answered (False: unreachable, slow, overloaded)
    unreachable_partner: str = ""  # the gateway answered that it cannot reach this partner


def write_outcomes(
    session: Session, owner: str, outcomes: Sequence[Outcome], clock: DatabaseClock
) -> list[bool]:
    """Record a group of outcomes in one transaction; per outcome, whether it took
    effect (False: the lease had passed to another replica, nothing written)."""
    if not outcomes:
        return []
    recorded = _update_commands(session, owner, outcomes, clock)
    effective = [o for o in outcomes if o.lease.command_id in recorded]
    audit.record_all(session, [_audit_entry(o) for o in effective if o.state != "PENDING"])
    _apply_statuses(session, [o.lease for o in effective if o.state == "ACKNOWLEDGED"], clock)
    reachability.note_deliveries(
        session, [(o.lease.target, o.reached, o.detail) for o in effective], DISPATCHER
    )
    reachability.note_partners(
        session,
        [
            (o.lease.method, o.lease.payload, o.state, o.unreachable_partner, o.detail)
            for o in effective
        ],
        DISPATCHER,
    )
    return [o.lease.command_id in recorded for o in outcomes]


def _update_commands(
    session: Session, owner: str, outcomes: Sequence[Outcome], clock: DatabaseClock
) -> set[str]:
    """Write the outcomes of the leases still held; their command ids."""
    leased = [o.lease for o in outcomes]
    held = set(
        session.connection()
        .execute(held_by_token(clock.postgres), token_values(owner, leased))
        .scalars()
    )
    effective = [o for o in outcomes if o.lease.command_id in held]
    _write_acknowledged(session, owner, [o for o in effective if o.state == "ACKNOWLEDGED"], clock)
    _write_others(session, owner, [o for o in effective if o.state != "ACKNOWLEDGED"], clock)
    return held


def _write_acknowledged(
    session: Session, owner: str, acknowledged: Sequence[Outcome], clock: DatabaseClock
) -> None:
    if not acknowledged:
        return
    bound = clock.bound() | {"b_owner": owner}
    session.connection().execute(
        _acknowledge_statement(clock.postgres),
        [
            bound
            | {
                "b_id": o.lease.command_id,
                "b_attempts": o.lease.attempts,
                "b_receiver": o.receiver_id[:128],
                "b_duplicate": o.duplicate,
            }
            for o in acknowledged
        ],
    )


@functools.cache
def _acknowledge_statement(postgres: bool) -> Update:
    """The fenced UPDATE of one acknowledged command, built once: run as one
    executemany per group, its compiled form reused from group to group."""
    column = OUTBOX.c
    now = DatabaseClock(postgres).now_bound()
    return (
        update(OUTBOX)
        .where(
            column.command_id == bindparam("b_id"),
            column.attempts == bindparam("b_attempts"),
            column.lease_owner == bindparam("b_owner"),
            column.state == "SENT",
        )
        .values(
            state="ACKNOWLEDGED",
            lease_owner="",
            lease_expires_at=None,
            updated_at=now,
            last_error="",
            receiver_command_id=bindparam("b_receiver"),
            receiver_duplicate=bindparam("b_duplicate"),
            acknowledged_at=now,
        )
    )


def _write_others(
    session: Session, owner: str, outcomes: Sequence[Outcome], clock: DatabaseClock
) -> None:
    """Retries and failures: one statement, each command's values chosen by CASE."""
    if not outcomes:
        return
    column = OUTBOX.c
    retried = {
        o.lease.command_id: clock.after(o.retry_in) for o in outcomes if o.state == "PENDING"
    }
    next_attempt: ColumnElement[Any] = column.next_attempt_at
    if retried:
        next_attempt = case(retried, value=column.command_id, else_=column.next_attempt_at)
    session.execute(
        update(OUTBOX)
        .where(held_by(owner, [o.lease for o in outcomes]))
        .values(
            state=case({o.lease.command_id: o.state for o in outcomes}, value=column.command_id),
            lease_owner="",
            lease_expires_at=None,
            updated_at=clock.now(),
            last_error=case(
                {o.lease.command_id: _error(o) for o in outcomes}, value=column.command_id
            ),
            next_attempt_at=next_attempt,
        )
    )


def _error(outcome: Outcome) -> str:
    return "" if outcome.state == "ACKNOWLEDGED" else outcome.detail[:MAX_ERROR]


def _audit_entry(outcome: Outcome) -> dict[str, Any]:
    """An acknowledged or failed command's audit entry (a retry is routine: visible
    on the row, not an audit event)."""
    before = outcome.lease.snapshot
    return audit.entry_values(
        service=SERVICE,
        resource_kind="command",
        resource_id=outcome.lease.command_id,
        before=before,
        after=before | {"state": outcome.state, "last_error": _error(outcome)},
        method=f"outbox:{outcome.state.lower()}",
        actor=DISPATCHER,
    )


def _newest_applied(
    acknowledged: list[Lease],
) -> tuple[dict[tuple[str, str], gw_pb.ApplyQueuePolicyRequest], dict[str, int]]:
    """Per queue, the newest policy acknowledged; per route, its newest generation."""
    queues: dict[tuple[str, str], gw_pb.ApplyQueuePolicyRequest] = {}
    routes: dict[str, int] = {}
    for lease in acknowledged:
        if lease.method == gateway_method("ApplyQueuePolicy"):
            queue = gw_pb.ApplyQueuePolicyRequest.FromString(lease.payload)
            key = (queue.tenant_id, queue.queue_id)
            if key not in queues or queues[key].generation < queue.generation:
                queues[key] = queue
        elif lease.method == gateway_method("ApplyPartnerRoute"):
            route = gw_pb.ApplyPartnerRouteRequest.FromString(lease.payload)
            if not route.delete:
                routes[route.route_id] = max(routes.get(route.route_id, 0), route.generation)
    return queues, routes


def _apply_statuses(session: Session, acknowledged: list[Lease], clock: DatabaseClock) -> None:
    """Record what the gateways now hold (newer generations only).

    Lock order: handlers lock a tenant, then its queues (by id), then its routes
    (by id); here, after this dispatcher's own leased commands (which no handler
    waits for while holding a tenant), queues by key, then routes by key, each row
    updated once. Once matters on PostgreSQL: a second UPDATE of a row this
    transaction already updated re-checks its foreign key, taking a KEY SHARE lock
    on the tenant, which a handler holding the tenant and waiting for the queue
    blocks: the deadlock the load found. One statement per table, run for each
    row in key order (executemany).
    """
    queues, routes = _newest_applied(acknowledged)
    if queues:
        bound = clock.bound()
        session.connection().execute(
            _queue_applied_statement(clock.postgres),
            [
                bound
                | {
                    "b_tenant": tenant_id,
                    "b_queue": queue_id,
                    "b_generation": queue.generation,
                    "b_capacity": queue.capacity,
                    "b_state": GATEWAY_QUEUE_STATE.to_name(queue.state),
                }
                for (tenant_id, queue_id), queue in sorted(queues.items())
            ],
        )
    if routes:
        r = _ROUTES.c
        session.execute(
            update(_ROUTES)
            .where(
                r.route_id == bindparam("b_route"),
                r.applied_generation < bindparam("b_generation"),
            )
            .values(applied_generation=bindparam("b_generation")),
            [
                {"b_route": route_id, "b_generation": generation}
                for route_id, generation in sorted(routes.items())
            ],
        )


@functools.cache
def _queue_applied_statement(postgres: bool) -> Update:
    """What a gateway now holds of one queue, if newer; built once (executemany)."""
    q = _QUEUES.c
    return (
        update(_QUEUES)
        .where(
            q.tenant_id == bindparam("b_tenant"),
            q.queue_id == bindparam("b_queue"),
            q.applied_generation < bindparam("b_generation"),
        )
        .values(
            applied_capacity=bindparam("b_capacity"),
            applied_state=bindparam("b_state"),
            applied_generation=bindparam("b_generation"),
            applied_at=DatabaseClock(postgres).now_bound(),
        )
    )
