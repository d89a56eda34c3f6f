"""The resources' store: the queries and row writes their use cases run.

Everything here runs inside the caller's unit of work (a session of
`db.write`/`db.read`), except `read_tenant_page`, which reads through the
quick reads (Core SQL compiled once, no ORM session: storage.reads).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, String, bindparam, or_, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists
from ppos.controlplane.core.selectors import LabelSelector
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.common import record_change
from ppos.controlplane.services.governance.convert import fill_tenant
from ppos.controlplane.services.governance.enums import GOVERNANCE_STATE, QUEUE_STATE
from ppos.controlplane.services.governance.models import (
    GatewayHoldRow,
    PartnerRouteRow,
    PartnerRow,
    QueueRow,
    TenantRow,
)
from ppos.controlplane.services.governance.outbox import commands, reachability
from ppos.controlplane.services.governance.paging import Page
from ppos.controlplane.services.governance.snapshots import partner_snapshot, queue_snapshot
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.reads import PreparedRead, quick_reads

_TENANTS = TenantRow.__table__
_TENANTS_AFTER: dict[int, PreparedRead] = {}


# -- tenants ---------------------------------------------------------------------


class TenantEntry(NamedTuple):
    """A tenant as a ListTenants reply carries it: its id (the page's position)
    and its encoding as one element of the reply's `tenants` (tag, length and
    the Tenant's bytes), so a reply is the join of its entries' bytes."""

    tenant_id: str
    entry: bytes


def tenant_entry(row: Any) -> TenantEntry:
    reply = pb.ListTenantsResponse()
    fill_tenant(reply.tenants.add(), row)
    return TenantEntry(row.tenant_id, reply.SerializeToString())


def tenants_after(phase_count: int) -> PreparedRead:
    """ListTenants' page query (Core SQL compiled once, no ORM session: storage.reads),
    one per number of phases asked for (at most one per phase); each row made
    into its Tenant message once while it stays the same (storage.reads)."""
    found = _TENANTS_AFTER.get(phase_count)
    if found is None:
        query = select(_TENANTS).where(_TENANTS.c.tenant_id > bindparam("after"))
        if phase_count:
            named = [bindparam(f"phase_{index}", type_=String) for index in range(phase_count)]
            query = query.where(_TENANTS.c.phase.in_(named))
        found = PreparedRead(
            query.order_by(_TENANTS.c.tenant_id).limit(bindparam("limit")),
            bounded=not phase_count,  # by key order under a LIMIT (a phase filter may scan)
            convert=tenant_entry,
        )
        _TENANTS_AFTER[phase_count] = found
    return found


async def read_tenant_page(
    db: Database, phases: list[str], selector: LabelSelector, page: Page
) -> list[TenantEntry]:
    """One page of tenants (size + 1 when more follow) in the given phases (any
    when empty) whose labels match `selector`, as reply entries (kept by row
    and shared with other reads when the page is one statement)."""
    reads = quick_reads(db)
    wanted = sorted(set(phases))
    statement = tenants_after(len(wanted))
    bound: dict[str, object] = {f"phase_{i}": phase for i, phase in enumerate(wanted)}
    bound["limit"] = page.size + 1
    bound["after"] = page.after[0] if page.after else ""

    def filtered() -> list[Any]:
        """Pages filtered by labels: batches until the page is full."""
        found: list[Any] = []
        while len(found) <= page.size:
            batch = reads.rows_sync(statement, bound)
            if not batch:
                break
            found.extend(row for row in batch if selector.matches(row.labels))
            bound["after"] = batch[-1].tenant_id
            if len(batch) <= page.size:
                break
        return found[: page.size + 1]

    if not selector.empty:
        return [tenant_entry(row) for row in await db.run_in_executor(filtered)]
    return await reads.converted(statement, **bound)  # one statement: the page itself


def new_tenant_row(tenant_id: str, spec: res_pb.TenantSpec, labels: dict[str, str]) -> TenantRow:
    now = utcnow()
    return TenantRow(
        tenant_id=tenant_id,
        display_name=spec.display_name,
        default_region=spec.default_region,
        default_partner_id=spec.default_partner_id or None,
        labels=labels,
        phase="ACTIVE",
        reason="",
        resource_version=1,
        generation=1,
        created_at=now,
        updated_at=now,
    )


# -- queues ----------------------------------------------------------------------


def new_queue_row(tenant: TenantRow, queue_id: str, spec: res_pb.QueueSpec) -> QueueRow:
    now = utcnow()
    state = QUEUE_STATE.to_name(spec.state) if spec.state else "ACTIVE"
    return QueueRow(
        tenant_id=tenant.tenant_id,
        queue_id=queue_id,
        region=spec.region or tenant.default_region,
        capacity=spec.capacity,
        state=state,
        reason=spec.reason,
        priority=spec.priority,
        applied_capacity=0,
        applied_state="",
        applied_generation=0,
        applied_at=None,
        resource_version=1,
        generation=1,
        created_at=now,
        updated_at=now,
    )


def tenant_queues(session: Session, tenant_id: str) -> list[QueueRow]:
    """A tenant's queues, locked for update, in id order."""
    query = (
        select(QueueRow)
        .where(QueueRow.tenant_id == tenant_id)
        .order_by(QueueRow.queue_id)
        .with_for_update()
    )
    return list(session.scalars(query).all())


def queue_regions(session: Session, tenant_id: str) -> set[str]:
    """The regions the tenant's queues are in."""
    return set(session.scalars(select(QueueRow.region).where(QueueRow.tenant_id == tenant_id)))


def queue_page(
    session: Session, page: Page, *, tenant_id: str, region: str, states: list[str]
) -> list[QueueRow]:
    """One page of queues (size + 1 when more follow), by tenant then queue id."""
    query = select(QueueRow)
    if tenant_id:
        query = query.where(QueueRow.tenant_id == tenant_id)
    if region:
        query = query.where(QueueRow.region == region)
    if states:
        # HELD is shown, not stored: the queues of a region whose gateway is held,
        # or routed to a partner that is.
        matches: ColumnElement[bool] = QueueRow.state.in_([s for s in states if s != "HELD"])
        if "HELD" in states:
            matches = or_(
                matches,
                QueueRow.region.in_(select(GatewayHoldRow.region)),
                reachability.routed_to_held_partner(),
            )
        query = query.where(matches)
    return list(session.scalars(page.window(query, QueueRow.tenant_id, QueueRow.queue_id)))


def record_queue(session: Session, queue: QueueRow, before: Any, reason: str) -> None:
    """The audit entry of a queue's change."""
    record_change(
        session,
        "queue",
        f"{queue.tenant_id}/{queue.queue_id}",
        before,
        queue_snapshot(queue),
        reason=reason,
    )


def push_queue(
    session: Session,
    queue: QueueRow,
    tenant_phase: str,
    reason: str,
    actor: Principal,
    decision_id: str | None = None,
) -> str:
    """The outbox command that tells the queue's gateway its capacity and state."""
    command = commands.apply_queue_policy(queue, tenant_phase, reason)
    return commands.enqueue(session, command, actor=actor, decision_id=decision_id).command_id


# -- routes ----------------------------------------------------------------------


def new_route_row(route_id: str, spec: res_pb.PartnerRouteSpec, tenant_id: str) -> PartnerRouteRow:
    now = utcnow()
    return PartnerRouteRow(
        route_id=route_id,
        tenant_id=tenant_id,
        queue_id=spec.queue_id,
        partner_id=spec.partner_id,
        fallback_partner_id=spec.fallback_partner_id or None,
        priority=spec.priority,
        condition_states=[GOVERNANCE_STATE.to_name(s) for s in spec.condition.governance_states],
        condition_source_region=spec.condition.source_region,
        applied_generation=0,
        resource_version=1,
        generation=1,
        created_at=now,
        updated_at=now,
    )


def tenant_routes(session: Session, tenant_id: str) -> list[PartnerRouteRow]:
    """A tenant's partner routes, locked for update, in id order."""
    query = (
        select(PartnerRouteRow)
        .where(PartnerRouteRow.tenant_id == tenant_id)
        .order_by(PartnerRouteRow.route_id)
        .with_for_update()
    )
    return list(session.scalars(query).all())


def route_page(
    session: Session, page: Page, *, tenant_id: str, partner_id: str
) -> list[PartnerRouteRow]:
    """One page of partner routes (size + 1 when more follow), by route id."""
    query = select(PartnerRouteRow)
    if tenant_id:
        query = query.where(PartnerRouteRow.tenant_id == tenant_id)
    if partner_id:
        query = query.where(PartnerRouteRow.partner_id == partner_id)
    return list(session.scalars(page.window(query, PartnerRouteRow.route_id)))


# -- partners --------------------------------------------------------------------


def partner_page(session: Session, page: Page) -> list[PartnerRow]:
    """One page of partners (size + 1 when more follow), by partner id."""
    return list(session.scalars(page.window(select(PartnerRow), PartnerRow.partner_id)))


def add_partner(session: Session, request: pb.CreatePartnerRequest) -> PartnerRow:
    """CreatePartner's unit of work: the partner and its audit entry."""
    if session.get(PartnerRow, request.partner_id) is not None:
        raise AlreadyExists("partner", request.partner_id)
    now = utcnow()
    row = PartnerRow(
        partner_id=request.partner_id,
        display_name=request.display_name,
        region=request.region,
        accepts_review=request.accepts_review,
        resource_version=1,
        generation=1,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    record_change(session, "partner", row.partner_id, None, partner_snapshot(row))
    return row
