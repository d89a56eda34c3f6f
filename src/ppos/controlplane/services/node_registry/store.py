"""The node registry's queries and its audit of node changes.

Every function takes a Session and runs in the caller's transaction (a read,
or the unit of work of a use case). Row locks are taken node first, then
commands (see `commands`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import NotFound, Unauthenticated
from ppos.controlplane.core.pagination import Position
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.node_registry.changelog import consistent_snapshot, head_version
from ppos.controlplane.services.node_registry.convert import node_snapshot
from ppos.controlplane.services.node_registry.filters import NodeQuery
from ppos.controlplane.services.node_registry.models import (
    EnrollmentRow,
    NodeCommandRow,
    NodeRow,
)
from ppos.controlplane.services.node_registry.ordering import NodeOrder, after
from ppos.controlplane.storage import audit

SERVICE = "noderegistry"
# (region, image, digest, nodes, ready nodes)
VersionCount = tuple[str, str, str, int, int]


def audit_node(
    session: Session,
    row: NodeRow,
    before: dict[str, object] | None,
    *,
    reason: str = "",
    actor: Principal | None = None,
) -> None:
    """Record a change of `row` (as it is now) in the audit log."""
    audit.record(
        session,
        service=SERVICE,
        resource_kind="node",
        resource_id=row.node_id,
        before=before,
        after=node_snapshot(row),
        reason=reason,
        actor=actor,
    )


def own_node(session: Session, principal: Principal, *, for_update: bool = True) -> NodeRow:
    """The calling node's row; refuses revoked or unknown credentials."""
    query = select(NodeRow).where(NodeRow.node_id == principal.name)
    if for_update:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None or row.credential_generation != principal.credential_generation:
        raise Unauthenticated(
            "node credential revoked or node unknown", reason="NODE_CREDENTIAL_REVOKED"
        )
    return row


def lock_node(session: Session, node_id: str) -> NodeRow:
    row = session.scalars(
        select(NodeRow).where(NodeRow.node_id == node_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound("node", node_id)
    return row


def lock_nodes(session: Session, node_ids: list[str]) -> dict[str, NodeRow]:
    """The nodes that exist among `node_ids`, locked in id order (no deadlock between callers)."""
    return {
        row.node_id: row
        for row in session.scalars(
            select(NodeRow)
            .where(NodeRow.node_id.in_(sorted(node_ids)))
            .order_by(NodeRow.node_id)
            .with_for_update()
        )
    }


def list_nodes(
    session: Session,
    query: NodeQuery,
    order: NodeOrder,
    position: Position | None,
    size: int,
    *,
    descending: bool = False,
) -> tuple[list[NodeRow], int]:
    """Up to `size + 1` matching nodes past `position` in `order`, and the version they
    reflect."""
    consistent_snapshot(session)
    version = head_version(session)
    keys = [key.desc() if descending else key.asc() for key in order.keys]
    statement = query.where(select(NodeRow)).order_by(*keys).limit(size + 1)
    if position is not None:
        statement = statement.where(after(order, position, descending))
    return list(session.scalars(statement)), version


def version_rollup(session: Session, region: str) -> list[VersionCount]:
    """Registered nodes counted by region and container version ('' region: all)."""
    ready = func.sum(case((NodeRow.readiness == "READY", 1), else_=0))
    statement = (
        select(
            NodeRow.region,
            NodeRow.container_image,
            NodeRow.container_digest,
            func.count(),
            ready,
        )
        .where(NodeRow.registered.is_(True))
        .group_by(NodeRow.region, NodeRow.container_image, NodeRow.container_digest)
        .order_by(NodeRow.region, NodeRow.container_image, NodeRow.container_digest)
    )
    if region:
        statement = statement.where(NodeRow.region == region)
    return [
        (str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4] or 0))
        for r in session.execute(statement)
    ]


def enrollment_by_request(session: Session, request_id: str) -> EnrollmentRow | None:
    return session.scalars(
        select(EnrollmentRow).where(EnrollmentRow.request_id == request_id)
    ).one_or_none()


def lock_enrollment(session: Session, enrollment_id: str) -> EnrollmentRow | None:
    return session.scalars(
        select(EnrollmentRow).where(EnrollmentRow.enrollment_id == enrollment_id).with_for_update()
    ).one_or_none()


def enrollment_snapshot(row: EnrollmentRow, state: str) -> dict[str, object]:
    """An enrollment as the audit log keeps it: never its token or the token's hash."""
    return {
        "region": row.region,
        "cluster": row.cluster,
        "state": state,
        "expires_at": row.expires_at,
        "revoked_by": row.revoked_by,
    }


def _enrollment_states(states: list[str], now: dt.datetime) -> ColumnElement[bool]:
    """Rows in any of `states`: the SQL of `enrollment.enrollment_state`."""
    redeemed = EnrollmentRow.redeemed_at.is_not(None)
    open_ = and_(EnrollmentRow.redeemed_at.is_(None), EnrollmentRow.revoked_at.is_(None))
    clauses = {
        "REDEEMED": redeemed,
        "REVOKED": and_(EnrollmentRow.redeemed_at.is_(None), EnrollmentRow.revoked_at.is_not(None)),
        "ISSUED": and_(open_, EnrollmentRow.expires_at > now),
        "EXPIRED": and_(open_, EnrollmentRow.expires_at <= now),
    }
    return or_(*(clauses[state] for state in states))


def list_enrollments(
    session: Session, region: str, states: list[str], now: dt.datetime, before: str, size: int
) -> list[EnrollmentRow]:
    """Up to `size + 1` enrollments, newest first, before the id `before`."""
    statement = select(EnrollmentRow).order_by(EnrollmentRow.enrollment_id.desc())
    if region:
        statement = statement.where(EnrollmentRow.region == region)
    if states:
        statement = statement.where(_enrollment_states(states, now))
    if before:
        statement = statement.where(EnrollmentRow.enrollment_id < before)
    return list(session.scalars(statement.limit(size + 1)))


def lock_enrollment_by_token(session: Session, token_sha256: str) -> EnrollmentRow | None:
    return session.scalars(
        select(EnrollmentRow).where(EnrollmentRow.token_sha256 == token_sha256).with_for_update()
    ).one_or_none()


def get_command(session: Session, command_id: str) -> NodeCommandRow:
    row = session.get(NodeCommandRow, command_id)
    if row is None:
        raise NotFound("node command", command_id)
    return row


def list_commands(
    session: Session, node_id: str, states: list[str], before: str, size: int
) -> list[NodeCommandRow]:
    """Up to `size + 1` commands, newest first, before the id `before`."""
    statement = select(NodeCommandRow).order_by(NodeCommandRow.command_id.desc())
    if node_id:
        statement = statement.where(NodeCommandRow.node_id == node_id)
    if states:
        statement = statement.where(NodeCommandRow.state.in_(states))
    if before:
        statement = statement.where(NodeCommandRow.command_id < before)
    return list(session.scalars(statement.limit(size + 1)))
