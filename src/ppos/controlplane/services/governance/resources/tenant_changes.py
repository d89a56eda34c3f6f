"""A tenant's changes after provisioning: its spec, and its phase with what follows.

Each function is the unit of work of one change, run in the caller's
transaction. A tenant's phase bounds its queues: a suspended tenant's queues
hold (PAUSED at the gateway), a retired tenant's drain and its routes go.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition
from ppos.controlplane.core.versions import check_version
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.common import bump, record_change
from ppos.controlplane.services.governance.models import TenantRow
from ppos.controlplane.services.governance.resources import lookups, routing, store
from ppos.controlplane.services.governance.snapshots import (
    queue_snapshot,
    route_snapshot,
    tenant_snapshot,
)


def update_tenant(
    session: Session, request: pb.UpdateTenantRequest, regions: list[str]
) -> TenantRow:
    tenant = lookups.tenant(session, request.tenant_id)
    check_version(
        "tenant",
        tenant.tenant_id,
        request.expected_resource_version,
        tenant.resource_version,
        required=True,
    )
    lookups.live_tenant(session, request.tenant_id)
    refs = lookups.References(session)
    refs.partner("spec.default_partner_id", request.spec.default_partner_id)
    refs.region("spec.default_region", request.spec.default_region, regions)
    refs.raise_if_any()
    before = tenant_snapshot(tenant)
    tenant.display_name = request.spec.display_name
    tenant.default_region = request.spec.default_region
    tenant.default_partner_id = request.spec.default_partner_id or None
    bump(tenant, spec=True)
    record_change(session, "tenant", tenant.tenant_id, before, tenant_snapshot(tenant))
    return tenant


@dataclass(frozen=True)
class PhaseChange:
    """A tenant to move to `phase` (from one of `allowed_from`)."""

    tenant_id: str
    phase: str
    reason: str
    expected_version: str
    allowed_from: tuple[str, ...]


def set_phase(session: Session, change: PhaseChange, actor: Principal) -> tuple[TenantRow, bool]:
    """The tenant, and whether it changed (already in the phase: nothing to send)."""
    tenant_id, phase, reason = change.tenant_id, change.phase, change.reason
    tenant = lookups.tenant(session, tenant_id)
    check_version(
        "tenant", tenant_id, change.expected_version, tenant.resource_version, required=False
    )
    if tenant.phase == phase:
        return tenant, False  # already there: nothing to change, nothing to send
    if tenant.phase not in change.allowed_from:
        lookups.live_tenant(session, tenant_id)  # names RETIRED precisely
        raise FailedPrecondition(
            f"tenant {tenant_id!r} is {tenant.phase}; cannot become {phase}",
            reason="INVALID_TENANT_TRANSITION",
        )
    before = tenant_snapshot(tenant)
    tenant.phase = phase
    tenant.reason = reason
    bump(tenant, spec=False)
    record_change(session, "tenant", tenant_id, before, tenant_snapshot(tenant), reason=reason)
    why = f"tenant {phase.lower()}" + (f": {reason}" if reason else "")
    _push_queues(session, tenant, why, reason, actor)
    if phase == "RETIRED":
        _remove_routes(session, tenant, why, reason, actor)
    return tenant, True


def _push_queues(
    session: Session, tenant: TenantRow, why: str, reason: str, actor: Principal
) -> None:
    for queue in store.tenant_queues(session, tenant.tenant_id):
        # The effective admission state changed: a new generation for the gateway.
        queue_before = queue_snapshot(queue)
        bump(queue, spec=True)
        store.record_queue(session, queue, queue_before, reason)
        store.push_queue(session, queue, tenant.phase, why, actor)


def _remove_routes(
    session: Session, tenant: TenantRow, why: str, reason: str, actor: Principal
) -> None:
    for route in store.tenant_routes(session, tenant.tenant_id):
        regions = routing.route_regions(session, route, tenant)
        route.generation += 1
        routing.push_route(session, route, regions, why, actor, delete=True)
        record_change(session, "route", route.route_id, route_snapshot(route), None, reason=reason)
        session.delete(route)
