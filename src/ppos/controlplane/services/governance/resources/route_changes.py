"""Partner routes' use cases: create, change, delete, each one unit of work.

A route's gateways (the regions of its queue, or of all the tenant's queues)
hear of every change through the outbox, in the change's own transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists, InvalidArgument
from ppos.controlplane.core.versions import check_version
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.common import bump, record_change
from ppos.controlplane.services.governance.convert import route_to_proto
from ppos.controlplane.services.governance.enums import GOVERNANCE_STATE
from ppos.controlplane.services.governance.models import PartnerRouteRow, TenantRow
from ppos.controlplane.services.governance.resources import lookups, routing
from ppos.controlplane.services.governance.resources.store import new_route_row
from ppos.controlplane.services.governance.snapshots import route_snapshot


def _check_references(
    session: Session, spec: res_pb.PartnerRouteSpec, regions: list[str]
) -> TenantRow:
    tenant = lookups.live_tenant(session, spec.tenant_id)
    refs = lookups.References(session)
    refs.partner("spec.partner_id", spec.partner_id)
    refs.partner("spec.fallback_partner_id", spec.fallback_partner_id)
    refs.queue("spec.queue_id", spec.tenant_id, spec.queue_id)
    refs.region("spec.condition.source_region", spec.condition.source_region, regions)
    refs.raise_if_any()
    return tenant


def create_route(
    session: Session, request: pb.CreatePartnerRouteRequest, regions: list[str], actor: Principal
) -> PartnerRouteRow:
    if session.get(PartnerRouteRow, request.route_id) is not None:
        raise AlreadyExists("partner route", request.route_id)
    tenant = _check_references(session, request.spec, regions)
    routing.refuse_cycles(
        session,
        tenant.tenant_id,
        [(request.spec.partner_id, request.spec.fallback_partner_id)],
    )
    route = new_route_row(request.route_id, request.spec, tenant.tenant_id)
    session.add(route)
    session.flush()
    targets = routing.route_regions(session, route, tenant)
    routing.require_regions(route, targets)
    record_change(session, "route", route.route_id, None, route_snapshot(route))
    routing.push_route(session, route, targets, "route created", actor)
    return route


def update_route(
    session: Session, request: pb.UpdatePartnerRouteRequest, regions: list[str], actor: Principal
) -> PartnerRouteRow:
    route = lookups.route(session, request.route_id)
    check_version(
        "partner route",
        route.route_id,
        request.expected_resource_version,
        route.resource_version,
        required=True,
    )
    if request.spec.tenant_id != route.tenant_id:
        raise InvalidArgument.single(
            "spec.tenant_id",
            f"a route cannot move to another tenant (it belongs to {route.tenant_id!r}); "
            "delete it and create one for the other tenant",
        )
    tenant = _check_references(session, request.spec, regions)
    routing.refuse_cycles(
        session,
        tenant.tenant_id,
        [(request.spec.partner_id, request.spec.fallback_partner_id)],
        replacing=route.route_id,
    )
    before = route_snapshot(route)
    old_regions = routing.route_regions(session, route, tenant)
    route.queue_id = request.spec.queue_id
    route.partner_id = request.spec.partner_id
    route.fallback_partner_id = request.spec.fallback_partner_id or None
    route.priority = request.spec.priority
    route.condition_states = [
        GOVERNANCE_STATE.to_name(s) for s in request.spec.condition.governance_states
    ]
    route.condition_source_region = request.spec.condition.source_region
    bump(route, spec=True)
    new_regions = routing.route_regions(session, route, tenant)
    routing.require_regions(route, new_regions)
    record_change(session, "route", route.route_id, before, route_snapshot(route))
    routing.push_route(session, route, new_regions, "route changed", actor)
    routing.push_route(
        session,
        route,
        old_regions - new_regions,
        "route no longer applies in this region",
        actor,
        delete=True,
    )
    return route


def delete_route(
    session: Session, request: pb.DeletePartnerRouteRequest, actor: Principal
) -> res_pb.PartnerRoute:
    route = lookups.route(session, request.route_id)
    check_version(
        "partner route",
        route.route_id,
        request.expected_resource_version,
        route.resource_version,
        required=True,
    )
    tenant = lookups.tenant(session, route.tenant_id)
    shown = route_to_proto(route)
    before = route_snapshot(route)
    regions = routing.route_regions(session, route, tenant)
    route.generation += 1  # the removal is newer than anything the gateway holds
    routing.push_route(session, route, regions, request.reason, actor, delete=True)
    record_change(session, "route", route.route_id, before, None, reason=request.reason)
    session.delete(route)
    return shown
