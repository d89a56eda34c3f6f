"""ProvisionTenant: a tenant with its queues and routes, in one unit of work.

Validation of the request needs no database (`validate_provision`); the use
case (`provision_tenant`) checks references, writes the rows, their audit
entries and the outbox commands for the gateways, and remembers the reply
under the request id, all in the caller's transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists
from ppos.controlplane.core.ids import ulid
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.common import record_change
from ppos.controlplane.services.governance.convert import (
    queue_to_proto,
    route_to_proto,
    tenant_to_proto,
)
from ppos.controlplane.services.governance.idempotency import IdempotentCall, validate_request_id
from ppos.controlplane.services.governance.models import PartnerRouteRow, QueueRow, TenantRow
from ppos.controlplane.services.governance.outbox import reachability
from ppos.controlplane.services.governance.resources import lookups, routing, store
from ppos.controlplane.services.governance.resources.specs import (
    validate_queue_spec,
    validate_route_spec,
    validate_tenant_spec,
)
from ppos.controlplane.services.governance.snapshots import route_snapshot, tenant_snapshot

# Queues and routes one ProvisionTenant may create (more: CreateQueue afterwards).
MAX_PROVISIONED = 100


def validate_provision(request: pb.ProvisionTenantRequest) -> None:
    """INVALID_ARGUMENT listing every problem of the request's shape."""
    violations = Violations()
    validate_request_id(violations, request.request_id, required=True)
    violations.resource_id("tenant_id", request.tenant_id)
    validate_tenant_spec(violations, "spec", request.spec)
    violations.labels("labels", request.labels)
    queue_ids: set[str] = set()
    queues_bounded = violations.at_most("queues", request.queues, MAX_PROVISIONED, "queues")
    routes_bounded = violations.at_most("routes", request.routes, MAX_PROVISIONED, "routes")
    for index, template in enumerate(request.queues if queues_bounded else ()):
        path = f"queues[{index}]"
        if violations.resource_id(f"{path}.queue_id", template.queue_id):
            if template.queue_id in queue_ids:
                violations.add(f"{path}.queue_id", f"{template.queue_id!r} is listed twice")
            queue_ids.add(template.queue_id)
        validate_queue_spec(
            violations, f"{path}.spec", template.spec, default_region=request.spec.default_region
        )
    for index, spec in enumerate(request.routes if routes_bounded else ()):
        path = f"routes[{index}]"
        validate_route_spec(violations, path, spec, tenant_given=False)
        if spec.tenant_id and spec.tenant_id != request.tenant_id:
            violations.add(f"{path}.tenant_id", "must be empty or the provisioned tenant's id")
        if queues_bounded and spec.queue_id and spec.queue_id not in queue_ids:
            violations.add(f"{path}.queue_id", f"{spec.queue_id!r} is not a provisioned queue")
    violations.raise_if_any()


def provision_tenant(
    session: Session,
    request: pb.ProvisionTenantRequest,
    call: IdempotentCall,
    regions: list[str],
    actor: Principal,
) -> pb.ProvisionTenantResponse:
    """The unit of work of ProvisionTenant (a replay of an earlier call says so)."""
    replay = call.replay(session, pb.ProvisionTenantResponse)
    if replay is not None:
        replay.replayed = True
        return replay
    if session.get(TenantRow, request.tenant_id) is not None:
        raise AlreadyExists("tenant", request.tenant_id)
    _check_references(session, request, regions)
    tenant = store.new_tenant_row(request.tenant_id, request.spec, dict(request.labels))
    session.add(tenant)
    session.flush()
    record_change(session, "tenant", tenant.tenant_id, None, tenant_snapshot(tenant))
    queues = _add_queues(session, tenant, request, actor)
    routes = _add_routes(session, tenant, request, actor)
    holds = reachability.queue_holds(session, queues)
    response = pb.ProvisionTenantResponse(
        tenant=tenant_to_proto(tenant),
        queues=[queue_to_proto(q, holds.get((q.tenant_id, q.queue_id))) for q in queues],
        routes=[route_to_proto(r) for r in routes],
    )
    call.remember(session, f"tenant/{tenant.tenant_id}", response)
    return response


def _check_references(
    session: Session, request: pb.ProvisionTenantRequest, regions: list[str]
) -> None:
    refs = lookups.References(session)
    refs.partner("spec.default_partner_id", request.spec.default_partner_id)
    refs.region("spec.default_region", request.spec.default_region, regions)
    for index, template in enumerate(request.queues):
        refs.region(f"queues[{index}].spec.region", template.spec.region, regions)
    for index, spec in enumerate(request.routes):
        refs.partner(f"routes[{index}].partner_id", spec.partner_id)
        refs.partner(f"routes[{index}].fallback_partner_id", spec.fallback_partner_id)
        refs.region(
            f"routes[{index}].condition.source_region", spec.condition.source_region, regions
        )
    refs.raise_if_any()
    routing.refuse_cycles(
        session,
        request.tenant_id,
        [(s.partner_id, s.fallback_partner_id) for s in request.routes],
        field="routes[].fallback_partner_id",
    )


def _add_queues(
    session: Session, tenant: TenantRow, request: pb.ProvisionTenantRequest, actor: Principal
) -> list[QueueRow]:
    queues = []
    for template in request.queues:
        queue = store.new_queue_row(tenant, template.queue_id, template.spec)
        session.add(queue)
        queues.append(queue)
        store.record_queue(session, queue, None, queue.reason)  # a queue created held says why
        store.push_queue(session, queue, tenant.phase, "tenant provisioned", actor)
    session.flush()
    return queues


def _add_routes(
    session: Session, tenant: TenantRow, request: pb.ProvisionTenantRequest, actor: Principal
) -> list[PartnerRouteRow]:
    routes = []
    for spec in request.routes:
        route = store.new_route_row(f"rt-{ulid()}", spec, tenant.tenant_id)
        session.add(route)
        session.flush()
        routes.append(route)
        route_regions = routing.route_regions(session, route, tenant)
        routing.require_regions(route, route_regions)
        record_change(session, "route", route.route_id, None, route_snapshot(route))
        routing.push_route(session, route, route_regions, "tenant provisioned", actor)
    return routes
