"""Reachability: the queues of a gateway, or routed to a partner, that cannot be
reached show HELD.

The dispatcher reports its deliveries in the transaction that records them.
Gateways: a transient failure (unreachable, slow, overloaded) holds the region,
any answer (acknowledged or refused) releases it. Partners are reached through
the gateway: a gateway that cannot hand a command's work to the partner it names
answers UNAVAILABLE with ErrorInfo `PARTNER_UNREACHABLE` (metadata `partner_id`)
and does nothing; that holds the partner, and the queues routed to it, until a
command naming the partner is acknowledged. Nothing else changes meanwhile:
jobs are untouched and the commands wait in the outbox, retried with backoff,
so a gateway or partner that answers again releases its queues by itself. Each
transition writes one audit entry per queue it holds or releases.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import ColumnElement, Table, and_, bindparam, delete, exists, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.common import SERVICE
from ppos.controlplane.services.governance.models import (
    GatewayHoldRow,
    PartnerHoldRow,
    PartnerRouteRow,
    QueueRow,
)
from ppos.controlplane.services.governance.outbox.commands import gateway_method
from ppos.controlplane.storage import audit
from ppos.preflight.v1 import gateway_service_pb2 as gw_pb

_HOLDS = cast(Table, GatewayHoldRow.__table__)
_RELEASE = delete(_HOLDS).where(_HOLDS.c.region == bindparam("b_region")).returning(_HOLDS.c.region)
GATEWAY_PREFIX = "gateway:"
MAX_ERROR = 2000
PARTNER_UNREACHABLE = "PARTNER_UNREACHABLE"
_STATUS_DETAILS = "grpc-status-details-bin"
# The commands that hand work to a partner, and the request field naming it.
_PARTNER_FIELD: dict[str, tuple[Any, str]] = {
    gateway_method("RerouteJob"): (gw_pb.RerouteJobRequest, "target_partner_id"),
    gateway_method("RouteJobToReview"): (gw_pb.RouteJobToReviewRequest, "partner_id"),
    gateway_method("ApplyPartnerRoute"): (gw_pb.ApplyPartnerRouteRequest, "partner_id"),
}


@dataclass(frozen=True)
class QueueHold:
    """Why a queue shows HELD: its gateway (`cause` "gateway", `name` the region) or a
    partner it is routed to (`cause` "partner", `name` the partner id)."""

    cause: str
    name: str
    since: dt.datetime
    last_error: str


def gateway_region(target: str) -> str:
    """The region of a `gateway:<region>` target ('' for other receivers)."""
    return target[len(GATEWAY_PREFIX) :] if target.startswith(GATEWAY_PREFIX) else ""


def note_deliveries(
    session: Session, deliveries: Iterable[tuple[str, bool, str]], actor: Principal
) -> None:
    """(target, answered, error) of a group of deliveries: hold or release their regions.

    A region with any answer in the group is reachable. Regions are handled in
    order, so concurrent dispatchers take the hold rows' locks in one order.
    """
    answered: dict[str, bool] = {}
    errors: dict[str, str] = {}
    for target, reached, error in deliveries:
        region = gateway_region(target)
        if not region:
            continue
        answered[region] = answered.get(region, False) or reached
        if not reached:
            errors[region] = error
    for region in sorted(answered):
        if answered[region]:
            _release(session, region, actor)
        else:
            _hold(session, region, errors[region], actor)


def partner_of(method: str, payload: bytes) -> str:
    """The partner a command hands work to ('' for any other command, and for a
    route's removal, which needs no partner)."""
    found = _PARTNER_FIELD.get(method)
    if found is None:
        return ""
    message_type, field = found
    request = message_type.FromString(payload)
    if getattr(request, "delete", False):
        return ""
    return str(getattr(request, field))


def unreachable_partner(error: grpc.aio.AioRpcError, method: str, payload: bytes) -> str:
    """The partner the gateway says it cannot reach for this command ('' otherwise).

    Only the partner the command itself names counts: a gateway's answer cannot
    hold any other partner.
    """
    partner = partner_of(method, payload)
    if not partner:
        return ""
    for key, value in error.trailing_metadata() or ():
        if key != _STATUS_DETAILS or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return ""  # unreadable details: an error like any other
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if (
                detail.Unpack(info)
                and info.reason == PARTNER_UNREACHABLE
                and info.metadata.get("partner_id") == partner
            ):
                return partner
    return ""


def note_partners(
    session: Session,
    deliveries: Iterable[tuple[str, bytes, str, str, str]],
    actor: Principal,
) -> None:
    """(method, payload, outcome state, unreachable partner, error) of a group of
    deliveries: hold the partners a gateway could not reach, release those named by
    an acknowledged command (an acknowledgement wins within a group)."""
    reached: dict[str, bool] = {}
    errors: dict[str, str] = {}
    for method, payload, state, unreachable, error in deliveries:
        if unreachable:
            reached.setdefault(unreachable, False)
            errors[unreachable] = error
        elif state == "ACKNOWLEDGED" and method in _PARTNER_FIELD:
            partner = partner_of(method, payload)
            if partner:
                reached[partner] = True
    for partner in sorted(reached):
        if reached[partner]:
            _release_partner(session, partner, actor)
        else:
            _hold_partner(session, partner, errors[partner], actor)


def routed_to_held_partner() -> ColumnElement[bool]:
    """SQL: the queue (a `QueueRow` of the enclosing query) is routed to a held partner."""
    return exists().where(
        PartnerRouteRow.partner_id == PartnerHoldRow.partner_id, _routes_the_queue()
    )


def _routes_the_queue() -> ColumnElement[bool]:
    """SQL: the route applies to the queue (named, or every queue of its tenant)."""
    return and_(
        PartnerRouteRow.tenant_id == QueueRow.tenant_id,
        or_(PartnerRouteRow.queue_id == QueueRow.queue_id, PartnerRouteRow.queue_id == ""),
    )


def queue_holds(session: Session, queues: Sequence[QueueRow]) -> dict[tuple[str, str], QueueHold]:
    """The holds of `queues` by (tenant, queue): the gateway's first, then a partner's."""
    if not queues:
        return {}
    gateways = held_regions(session, [queue.region for queue in queues])
    partner_routes = session.execute(
        select(PartnerRouteRow.tenant_id, PartnerRouteRow.queue_id, PartnerHoldRow)
        .join(PartnerHoldRow, PartnerHoldRow.partner_id == PartnerRouteRow.partner_id)
        .where(PartnerRouteRow.tenant_id.in_(sorted({queue.tenant_id for queue in queues})))
        .order_by(PartnerHoldRow.partner_id)
    ).all()
    holds: dict[tuple[str, str], QueueHold] = {}
    for queue in queues:
        key = (queue.tenant_id, queue.queue_id)
        gateway = gateways.get(queue.region)
        if gateway is not None:
            holds[key] = QueueHold("gateway", queue.region, gateway.since, gateway.last_error)
            continue
        for tenant_id, queue_id, hold in partner_routes:
            if tenant_id == queue.tenant_id and queue_id in ("", queue.queue_id):
                holds[key] = QueueHold("partner", hold.partner_id, hold.since, hold.last_error)
                break
    return holds


def held_regions(
    session: Session, regions: Iterable[str] | None = None
) -> dict[str, GatewayHoldRow]:
    query = select(GatewayHoldRow)
    if regions is not None:
        query = query.where(GatewayHoldRow.region.in_(sorted(set(regions))))
    return {row.region: row for row in session.scalars(query)}


def _insert_once(session: Session, row_type: Any, **values: Any) -> bool:
    """Insert the hold row unless it exists; True when this call made it (a transition)."""
    dialect = session.get_bind().dialect.name
    factory = postgresql.insert if dialect == "postgresql" else sqlite.insert
    key = row_type.__mapper__.primary_key[0]
    inserted = session.execute(
        factory(row_type).values(**values).on_conflict_do_nothing().returning(key)
    ).first()
    return inserted is not None


def _hold_partner(session: Session, partner_id: str, error: str, actor: Principal) -> None:
    if _insert_once(
        session, PartnerHoldRow, partner_id=partner_id, since=utcnow(), last_error=error[:MAX_ERROR]
    ):
        _audit_partner(session, partner_id, "partner:unreachable", actor, held=True, error=error)


def _release_partner(session: Session, partner_id: str, actor: Principal) -> None:
    removed = session.execute(
        delete(PartnerHoldRow)
        .where(PartnerHoldRow.partner_id == partner_id)
        .returning(PartnerHoldRow.partner_id)
    ).first()
    if removed is not None:
        _audit_partner(session, partner_id, "partner:reachable", actor, held=False, error="")


def _audit_partner(
    session: Session, partner_id: str, method: str, actor: Principal, *, held: bool, error: str
) -> None:
    routed = exists().where(PartnerRouteRow.partner_id == partner_id, _routes_the_queue())
    _audit_queues(session, routed, ("partner", partner_id), method, actor, held=held, error=error)


def _hold(session: Session, region: str, error: str, actor: Principal) -> None:
    if _insert_once(
        session, GatewayHoldRow, region=region, since=utcnow(), last_error=error[:MAX_ERROR]
    ):  # a transition: it was reachable until now
        _audit(session, region, "gateway:unreachable", actor, held=True, error=error)


def _release(session: Session, region: str, actor: Principal) -> None:
    # On the table, not the entity, built once: this runs with every group of outcomes recorded.
    removed = session.connection().execute(_RELEASE, {"b_region": region}).first()
    if removed is not None:
        _audit(session, region, "gateway:reachable", actor, held=False, error="")


def _audit(
    session: Session, region: str, method: str, actor: Principal, *, held: bool, error: str
) -> None:
    where = QueueRow.region == region
    _audit_queues(session, where, ("gateway", region), method, actor, held=held, error=error)


def _audit_queues(
    session: Session,
    where: ColumnElement[bool],
    cause: tuple[str, str],
    method: str,
    actor: Principal,
    *,
    held: bool,
    error: str,
) -> None:
    """One audit entry per queue `where` selects: HELD by `cause` (("gateway",
    region) or ("partner", id)), or back to its own state."""
    key, value = cause
    queues = session.scalars(
        select(QueueRow).where(where).order_by(QueueRow.tenant_id, QueueRow.queue_id)
    )
    for queue in queues:
        spec_state = {"state": queue.state, key: value}
        shown = {"state": "HELD", key: value, "last_error": error[:MAX_ERROR]}
        audit.record(
            session,
            service=SERVICE,
            resource_kind="queue",
            resource_id=f"{queue.tenant_id}/{queue.queue_id}",
            before={"status": spec_state if held else shown},
            after={"status": shown if held else spec_state},
            method=method,
            actor=actor,
        )
