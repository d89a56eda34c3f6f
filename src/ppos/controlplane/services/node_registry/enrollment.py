"""Enrollment use cases: approve an enrollment, redeem it for a node, revoke it, renew a
credential.

Each runs in the caller's unit of work; the credential itself is minted by
the handler after commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from ppos.controlplane.core.ids import new_id
from ppos.controlplane.security.principal import Principal, PrincipalKind
from ppos.controlplane.services.node_registry import store
from ppos.controlplane.services.node_registry.changelog import Change, record_changes
from ppos.controlplane.services.node_registry.convert import node_snapshot
from ppos.controlplane.services.node_registry.models import EnrollmentRow, NodeRow
from ppos.controlplane.storage import audit


@dataclass(frozen=True)
class EnrollmentSpec:
    region: str
    cluster: str
    labels: dict[str, str]
    ttl_seconds: float
    request_id: str  # '' when the caller gave none (no replay)


def create_enrollment(
    session: Session, spec: EnrollmentSpec, token_sha256: str, created_by: str, now: dt.datetime
) -> EnrollmentRow:
    """A new enrollment for the token; a replay of the same request re-issues the token."""
    expires = now + dt.timedelta(seconds=spec.ttl_seconds)
    existing = store.enrollment_by_request(session, spec.request_id) if spec.request_id else None
    if existing is not None:
        if existing.region != spec.region or existing.cluster != spec.cluster:
            raise InvalidArgument.single(
                "request_id", "was used for an enrollment with another body"
            )
        if existing.redeemed_at is not None:
            raise FailedPrecondition(
                f"enrollment {existing.enrollment_id} was already redeemed",
                reason="ENROLLMENT_REDEEMED",
            )
        if existing.revoked_at is not None:
            raise FailedPrecondition(
                f"enrollment {existing.enrollment_id} was revoked", reason="ENROLLMENT_REVOKED"
            )
        existing.token_sha256 = token_sha256  # a replay re-issues the token
        existing.expires_at = expires
        row = existing
    else:
        row = EnrollmentRow(
            enrollment_id=new_id("enr"),
            token_sha256=token_sha256,
            request_id=spec.request_id or None,
            region=spec.region,
            cluster=spec.cluster,
            labels=dict(spec.labels),
            created_by=created_by,
            created_at=now,
            expires_at=expires,
        )
        session.add(row)
    audit.record(
        session,
        service=store.SERVICE,
        resource_kind="enrollment",
        resource_id=row.enrollment_id,
        before=None,
        after=store.enrollment_snapshot(row, "ISSUED"),
    )
    return row


def redeem_enrollment(
    session: Session, token_sha256: str, hostname: str, now: dt.datetime
) -> NodeRow:
    """The node an unused, unexpired enrollment token becomes (at credential generation 1)."""
    enrollment = store.lock_enrollment_by_token(session, token_sha256)
    if enrollment is None or enrollment_state(enrollment, now) != "ISSUED":
        raise Unauthenticated(
            "enrollment token invalid, expired or already used",
            reason="ENROLLMENT_TOKEN_INVALID",
        )
    row = _new_node(enrollment, hostname, now)
    session.add(row)
    enrollment.redeemed_at = now
    enrollment.node_id = row.node_id
    record_changes(session, [Change(row, "Enrolled", "")], now)
    store.audit_node(session, row, None, actor=Principal(PrincipalKind.NODE, row.node_id))
    return row


def enrollment_state(row: EnrollmentRow, now: dt.datetime) -> str:
    """ISSUED, REDEEMED, EXPIRED or REVOKED (expiry is read against `now`, never stored)."""
    if row.redeemed_at is not None:
        return "REDEEMED"
    if row.revoked_at is not None:
        return "REVOKED"
    return "ISSUED" if row.expires_at > now else "EXPIRED"


def revoke_enrollment(
    session: Session, enrollment_id: str, reason: str, revoked_by: Principal, now: dt.datetime
) -> EnrollmentRow:
    """Withdraw an enrollment no node has redeemed; revoking it again changes nothing."""
    row = store.lock_enrollment(session, enrollment_id)
    if row is None:
        raise NotFound("enrollment", enrollment_id)
    state = enrollment_state(row, now)
    if state == "REVOKED":
        return row
    if state == "REDEEMED":
        raise FailedPrecondition(
            f"enrollment {enrollment_id} was redeemed by node {row.node_id}: "
            "cordon or drain the node instead",
            reason="ENROLLMENT_REDEEMED",
        )
    before = store.enrollment_snapshot(row, state)
    row.revoked_at = now
    row.revoked_by = revoked_by.display
    row.revoke_reason = reason
    audit.record(
        session,
        service=store.SERVICE,
        resource_kind="enrollment",
        resource_id=row.enrollment_id,
        before=before,
        after=store.enrollment_snapshot(row, "REVOKED"),
        reason=reason,
        actor=revoked_by,
    )
    return row


def _new_node(enrollment: EnrollmentRow, hostname: str, now: dt.datetime) -> NodeRow:
    return NodeRow(
        node_id=new_id("node"),
        region=enrollment.region,
        cluster=enrollment.cluster,
        hostname=hostname,
        labels=dict(enrollment.labels),
        capacity_slots=0,
        slots_in_use=0,
        schedulable=True,
        unschedulable_reason="",
        schedulable_transition_at=now,
        readiness="NOT_READY",
        readiness_reason="Enrolled",
        last_transition_at=now,
        container_image="",
        container_digest="",
        registered=False,
        credential_generation=1,
        resource_version=0,
        generation=1,
        created_at=now,
        updated_at=now,
    )


def renew_credential(session: Session, principal: Principal, now: dt.datetime) -> NodeRow:
    """The calling node at its next credential generation: every older credential stops."""
    row = store.own_node(session, principal)
    before = node_snapshot(row)
    row.credential_generation += 1
    record_changes(session, [Change(row, "CredentialRenewed", row.readiness)], now)
    store.audit_node(session, row, before)
    return row
