"""Gateway reachability: the queues of a gateway that cannot be reached show HELD.

The dispatcher reports its deliveries to gateways in the transaction that
records them: a transient failure (unreachable, slow, overloaded) holds the
region, any answer (acknowledged or refused) releases it. Nothing else changes
meanwhile: jobs are untouched at the gateway and the commands wait in the
outbox, retried with backoff, so a gateway that answers again releases its
queues by itself. Each transition writes one audit entry per queue of the region.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.common import SERVICE
from ppos.controlplane.services.governance.models import GatewayHoldRow, QueueRow
from ppos.controlplane.storage import audit

GATEWAY_PREFIX = "gateway:"
MAX_ERROR = 2000


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


def held_regions(
    session: Session, regions: Iterable[str] | None = None
) -> dict[str, GatewayHoldRow]:
    query = select(GatewayHoldRow)
    if regions is not None:
        query = query.where(GatewayHoldRow.region.in_(sorted(set(regions))))
    return {row.region: row for row in session.scalars(query)}


def _hold(session: Session, region: str, error: str, actor: Principal) -> None:
    dialect = session.get_bind().dialect.name
    factory = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inserted = session.execute(
        factory(GatewayHoldRow)
        .values(region=region, since=utcnow(), last_error=error[:MAX_ERROR])
        .on_conflict_do_nothing()
        .returning(GatewayHoldRow.region)
    ).first()
    if inserted is not None:  # a transition: it was reachable until now
        _audit(session, region, "gateway:unreachable", actor, held=True, error=error)


def _release(session: Session, region: str, actor: Principal) -> None:
    removed = session.execute(
        delete(GatewayHoldRow)
        .where(GatewayHoldRow.region == region)
        .returning(GatewayHoldRow.region)
    ).first()
    if removed is not None:
        _audit(session, region, "gateway:reachable", actor, held=False, error="")


def _audit(
    session: Session, region: str, method: str, actor: Principal, *, held: bool, error: str
) -> None:
    queues = session.scalars(
        select(QueueRow)
        .where(QueueRow.region == region)
        .order_by(QueueRow.tenant_id, QueueRow.queue_id)
    )
    for queue in queues:
        spec_state = {"state": queue.state, "gateway": region}
        shown = {"state": "HELD", "gateway": region, "last_error": error[:MAX_ERROR]}
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
