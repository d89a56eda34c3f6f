"""Reading governed rows inside a write transaction, with the right refusals.

Lock order, the same in every transaction that takes more than one: a tenant,
then its queues (by id), then its routes (by id); the outbox dispatcher takes
queues and routes in that order too. A transaction that locks a tenant at all
locks it before any of its queues or routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition, NotFound, PreconditionViolation
from ppos.controlplane.services.governance.models import (
    PartnerRouteRow,
    PartnerRow,
    PolicyRow,
    QueueRow,
    TenantRow,
)


def tenant(session: Session, tenant_id: str, *, lock: bool = True) -> TenantRow:
    row = session.get(TenantRow, tenant_id, with_for_update=lock)
    if row is None:
        raise NotFound("tenant", tenant_id)
    return row


def live_tenant(session: Session, tenant_id: str) -> TenantRow:
    """The tenant, locked, refusing a retired one (it is kept only for audit)."""
    row = tenant(session, tenant_id)
    if row.phase == "RETIRED":
        raise FailedPrecondition(
            f"tenant {tenant_id!r} is retired; retired tenants cannot change",
            [PreconditionViolation("TENANT_PHASE", f"tenant/{tenant_id}", "tenant is RETIRED")],
            reason="TENANT_RETIRED",
        )
    return row


def queue(session: Session, tenant_id: str, queue_id: str, *, lock: bool = True) -> QueueRow:
    row = session.get(QueueRow, (tenant_id, queue_id), with_for_update=lock)
    if row is None:
        raise NotFound("queue", f"{tenant_id}/{queue_id}")
    return row


def route(session: Session, route_id: str, *, lock: bool = True) -> PartnerRouteRow:
    if lock:  # its tenant first (a route never moves to another tenant)
        owner = session.scalar(
            select(PartnerRouteRow.tenant_id).where(PartnerRouteRow.route_id == route_id)
        )
        if owner is not None:
            session.get(TenantRow, owner, with_for_update=True)
    row = session.get(PartnerRouteRow, route_id, with_for_update=lock)
    if row is None:
        raise NotFound("partner route", route_id)
    return row


def policy(session: Session, policy_id: str, *, lock: bool = True) -> PolicyRow:
    row = session.get(PolicyRow, policy_id, with_for_update=lock)
    if row is None:
        raise NotFound("governance policy", policy_id)
    return row


@dataclass
class References:
    """Collects references to resources that do not exist (or do not fit), then refuses."""

    session: Session
    problems: list[PreconditionViolation] = field(default_factory=list)

    def partner(self, path: str, partner_id: str, *, review: bool = False) -> PartnerRow | None:
        if not partner_id:
            return None
        row = self.session.get(PartnerRow, partner_id)
        if row is None:
            self.problems.append(
                PreconditionViolation(
                    "UNKNOWN_PARTNER",
                    f"partner/{partner_id}",
                    f"{path} names partner {partner_id!r}, which does not exist",
                )
            )
        elif review and not row.accepts_review:
            self.problems.append(
                PreconditionViolation(
                    "PARTNER_REFUSES_REVIEW",
                    f"partner/{partner_id}",
                    f"{path} names partner {partner_id!r}, which does not take review work",
                )
            )
        return row

    def tenant(self, path: str, tenant_id: str) -> TenantRow | None:
        if not tenant_id:
            return None
        row = self.session.get(TenantRow, tenant_id)
        if row is None:
            self.problems.append(
                PreconditionViolation(
                    "UNKNOWN_TENANT",
                    f"tenant/{tenant_id}",
                    f"{path} names tenant {tenant_id!r}, which does not exist",
                )
            )
        return row

    def queue(self, path: str, tenant_id: str, queue_id: str) -> QueueRow | None:
        if not queue_id:
            return None
        row = self.session.get(QueueRow, (tenant_id, queue_id))
        if row is None:
            self.problems.append(
                PreconditionViolation(
                    "UNKNOWN_QUEUE",
                    f"queue/{tenant_id}/{queue_id}",
                    f"{path} names queue {queue_id!r} of tenant {tenant_id!r}, which does not "
                    "exist",
                )
            )
        return row

    def region(self, path: str, region: str, known: list[str]) -> None:
        if region and region not in known:
            self.problems.append(
                PreconditionViolation(
                    "REGION_NOT_CONFIGURED",
                    f"region/{region}",
                    f"{path} names region {region!r}, which has no gateway configured "
                    f"(configured: {', '.join(known) or 'none'}; see PPOS_GATEWAYS)",
                )
            )

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        reasons = {p.type for p in self.problems}
        reason = reasons.pop() if len(reasons) == 1 else "UNKNOWN_REFERENCE"
        raise FailedPrecondition(
            "request refers to what does not exist or does not fit: "
            + "; ".join(p.description for p in self.problems),
            self.problems,
            reason=reason,
        )
