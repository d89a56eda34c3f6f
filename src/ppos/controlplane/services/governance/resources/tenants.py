"""Tenants and their queues: provisioning, lifecycle, capacity and admission state.

Every change the preflight side must act on (a queue's capacity or admission
state, a route) is written to the outbox in the same transaction as the change
and its audit entry. A tenant's phase bounds its queues: a suspended tenant's
queues hold (PAUSED at the gateway), a retired tenant's drain.
"""

from __future__ import annotations

from sqlalchemy import String, bindparam, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists, FailedPrecondition
from ppos.controlplane.core.ids import ulid
from ppos.controlplane.core.pagination import Ident, Listing
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.core.validation import (
    MAX_ENUM_FILTER,
    Violations,
)
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.security.principal import Principal, current_principal
from ppos.controlplane.services.governance.common import (
    GOVERNANCE_SERVICE,
    Context,
    bump,
    check_version,
    record_change,
)
from ppos.controlplane.services.governance.convert import (
    fill_tenant,
    queue_snapshot,
    queue_to_proto,
    route_snapshot,
    route_to_proto,
    tenant_snapshot,
    tenant_to_proto,
)
from ppos.controlplane.services.governance.enums import GOVERNANCE_STATE, QUEUE_STATE, TENANT_PHASE
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.idempotency import (
    body_digest,
    find_request,
    remember_request,
    validate_request_id,
)
from ppos.controlplane.services.governance.models import (
    PartnerRouteRow,
    QueueRow,
    TenantRow,
)
from ppos.controlplane.services.governance.outbox import commands
from ppos.controlplane.services.governance.resources import lookups, routing
from ppos.controlplane.services.governance.resources.specs import (
    validate_queue_spec,
    validate_route_spec,
    validate_tenant_spec,
)
from ppos.controlplane.services.governance.selectors import matches, parse_selector
from ppos.controlplane.storage.reads import PreparedRead, quick_reads

METHOD_PREFIX = "/ppos.controlplane.governance.v1.GovernanceService/"
TENANTS_PAGE = Listing(GOVERNANCE_SERVICE + "ListTenants", Ident("tenant_id"))
QUEUES_PAGE = Listing(GOVERNANCE_SERVICE + "ListQueues", Ident("tenant_id"), Ident("queue_id"))
# Queues and routes one ProvisionTenant may create (more: CreateQueue afterwards).
MAX_PROVISIONED = 100
_TENANTS = TenantRow.__table__
_TENANTS_AFTER: dict[int, PreparedRead] = {}


def tenants_after(phase_count: int) -> PreparedRead:
    """ListTenants' page query (Core SQL compiled once, no ORM session: storage.reads),
    one per number of phases asked for (at most one per phase)."""
    found = _TENANTS_AFTER.get(phase_count)
    if found is None:
        query = select(_TENANTS).where(_TENANTS.c.tenant_id > bindparam("after"))
        if phase_count:
            named = [bindparam(f"phase_{index}", type_=String) for index in range(phase_count)]
            query = query.where(_TENANTS.c.phase.in_(named))
        found = PreparedRead(
            query.order_by(_TENANTS.c.tenant_id).limit(bindparam("limit")),
            bounded=not phase_count,  # by key order under a LIMIT (a phase filter may scan)
        )
        _TENANTS_AFTER[phase_count] = found
    return found


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


def push_queue(
    session: Session,
    queue: QueueRow,
    tenant_phase: str,
    reason: str,
    actor: Principal,
    decision_id: str | None = None,
) -> str:
    command = commands.apply_queue_policy(queue, tenant_phase, reason)
    return commands.enqueue(session, command, actor=actor, decision_id=decision_id).command_id


class TenantHandlers(HandlerBase):
    rpcs = (
        "ProvisionTenant",
        "GetTenant",
        "ListTenants",
        "UpdateTenant",
        "SuspendTenant",
        "ResumeTenant",
        "RetireTenant",
    )

    async def ProvisionTenant(
        self, request: pb.ProvisionTenantRequest, context: Context
    ) -> pb.ProvisionTenantResponse:
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
                violations,
                f"{path}.spec",
                template.spec,
                default_region=request.spec.default_region,
            )
        for index, spec in enumerate(request.routes if routes_bounded else ()):
            path = f"routes[{index}]"
            validate_route_spec(violations, path, spec, tenant_given=False)
            if spec.tenant_id and spec.tenant_id != request.tenant_id:
                violations.add(f"{path}.tenant_id", "must be empty or the provisioned tenant's id")
            if queues_bounded and spec.queue_id and spec.queue_id not in queue_ids:
                violations.add(f"{path}.queue_id", f"{spec.queue_id!r} is not a provisioned queue")
        violations.raise_if_any()
        method = METHOD_PREFIX + "ProvisionTenant"
        digest = body_digest(request)
        actor = current_principal.get()
        regions = self._gateway_regions

        def work(session: Session) -> pb.ProvisionTenantResponse:
            prior = find_request(session, method, request.request_id, digest)
            if prior is not None and prior.response is not None:
                replay = pb.ProvisionTenantResponse.FromString(prior.response)
                replay.replayed = True
                return replay
            if session.get(TenantRow, request.tenant_id) is not None:
                raise AlreadyExists("tenant", request.tenant_id)
            refs = lookups.References(session)
            refs.partner("spec.default_partner_id", request.spec.default_partner_id)
            refs.region("spec.default_region", request.spec.default_region, regions)
            for index, template in enumerate(request.queues):
                refs.region(f"queues[{index}].spec.region", template.spec.region, regions)
            for index, spec in enumerate(request.routes):
                refs.partner(f"routes[{index}].partner_id", spec.partner_id)
                refs.partner(f"routes[{index}].fallback_partner_id", spec.fallback_partner_id)
                refs.region(
                    f"routes[{index}].condition.source_region",
                    spec.condition.source_region,
                    regions,
                )
            refs.raise_if_any()
            routing.refuse_cycles(
                session,
                request.tenant_id,
                [(s.partner_id, s.fallback_partner_id) for s in request.routes],
                field="routes[].fallback_partner_id",
            )
            now = utcnow()
            tenant = TenantRow(
                tenant_id=request.tenant_id,
                display_name=request.spec.display_name,
                default_region=request.spec.default_region,
                default_partner_id=request.spec.default_partner_id or None,
                labels=dict(request.labels),
                phase="ACTIVE",
                reason="",
                resource_version=1,
                generation=1,
                created_at=now,
                updated_at=now,
            )
            session.add(tenant)
            session.flush()
            record_change(session, "tenant", tenant.tenant_id, None, tenant_snapshot(tenant))
            queues = []
            for template in request.queues:
                queue = new_queue_row(tenant, template.queue_id, template.spec)
                session.add(queue)
                queues.append(queue)
                record_change(
                    session,
                    "queue",
                    f"{tenant.tenant_id}/{queue.queue_id}",
                    None,
                    queue_snapshot(queue),
                    reason=queue.reason,  # a queue created held says why
                )
                push_queue(session, queue, tenant.phase, "tenant provisioned", actor)
            session.flush()
            routes = []
            for spec in request.routes:
                route = new_route_row(f"rt-{ulid()}", spec, tenant.tenant_id)
                session.add(route)
                session.flush()
                routes.append(route)
                route_regions = routing.route_regions(session, route, tenant)
                routing.require_regions(route, route_regions)
                record_change(session, "route", route.route_id, None, route_snapshot(route))
                routing.push_route(session, route, route_regions, "tenant provisioned", actor)
            response = pb.ProvisionTenantResponse(
                tenant=tenant_to_proto(tenant),
                queues=[queue_to_proto(q) for q in queues],
                routes=[route_to_proto(r) for r in routes],
            )
            remember_request(
                session, method, request.request_id, digest, f"tenant/{tenant.tenant_id}", response
            )
            return response

        response = await self._write(work)
        if not response.replayed:
            self._on_commands()
        return response

    async def GetTenant(
        self, request: pb.GetTenantRequest, context: Context
    ) -> pb.GetTenantResponse:
        violations = Violations()
        violations.resource_id("tenant_id", request.tenant_id)
        violations.raise_if_any()
        row = await self._db.read(lambda s: lookups.tenant(s, request.tenant_id, lock=False))
        return pb.GetTenantResponse(tenant=tenant_to_proto(row))

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: Context
    ) -> pb.ListTenantsResponse:
        violations = Violations()
        phases = []
        bounded = violations.at_most("phases", request.phases, MAX_ENUM_FILTER)
        for index, phase in enumerate(request.phases if bounded else ()):
            if not TENANT_PHASE.is_known(phase):
                violations.add(f"phases[{index}]", f"{phase} is not a tenant phase")
            else:
                phases.append(TENANT_PHASE.to_name(phase))
        violations.label_selector("label_selector", request.label_selector)
        violations.raise_if_any()
        selector = parse_selector(request.label_selector)
        page = self._page(
            TENANTS_PAGE,
            request.page_size,
            request.page_token,
            {"phases": sorted(phases), "selector": request.label_selector},
        )

        reads = quick_reads(self._db)
        wanted = sorted(set(phases))
        statement = tenants_after(len(wanted))
        bound: dict[str, object] = {f"phase_{i}": phase for i, phase in enumerate(wanted)}
        bound["limit"] = page.size + 1
        bound["after"] = page.after[0] if page.after else ""

        def work() -> list[TenantRow]:
            """Pages filtered by labels: batches until the page is full."""
            found: list[TenantRow] = []
            while len(found) <= page.size:
                batch = reads.rows_sync(statement, bound)
                if not batch:
                    break
                found.extend(row for row in batch if matches(selector, row.labels))
                bound["after"] = batch[-1].tenant_id
                if len(batch) <= page.size:
                    break
            return found[: page.size + 1]

        if selector:
            rows = await self._db.run_in_executor(work)
        else:  # one statement: the page itself
            rows = await reads.rows(statement, **bound)
        response = pb.ListTenantsResponse(
            next_page_token=page.next_token(rows, lambda r: (r.tenant_id,))
        )
        add = response.tenants.add
        for row in rows[: page.size]:
            fill_tenant(add(), row)
        return response

    async def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: Context
    ) -> pb.UpdateTenantResponse:
        violations = Violations()
        violations.resource_id("tenant_id", request.tenant_id)
        validate_tenant_spec(violations, "spec", request.spec)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()
        regions = self._gateway_regions

        def work(session: Session) -> TenantRow:
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

        row = await self._write(work)
        return pb.UpdateTenantResponse(tenant=tenant_to_proto(row))

    async def _set_phase(
        self,
        tenant_id: str,
        phase: str,
        reason: str,
        expected: str,
        *,
        allowed_from: tuple[str, ...],
    ) -> TenantRow:
        actor = current_principal.get()

        def work(session: Session) -> tuple[TenantRow, bool]:
            tenant = lookups.tenant(session, tenant_id)
            check_version("tenant", tenant_id, expected, tenant.resource_version, required=False)
            if tenant.phase == phase:
                return tenant, False  # already there: nothing to change, nothing to send
            if tenant.phase not in allowed_from:
                lookups.live_tenant(session, tenant_id)  # names RETIRED precisely
                raise FailedPrecondition(
                    f"tenant {tenant_id!r} is {tenant.phase}; cannot become {phase}",
                    reason="INVALID_TENANT_TRANSITION",
                )
            before = tenant_snapshot(tenant)
            tenant.phase = phase
            tenant.reason = reason
            bump(tenant, spec=False)
            record_change(
                session, "tenant", tenant_id, before, tenant_snapshot(tenant), reason=reason
            )
            queues = session.scalars(
                select(QueueRow)
                .where(QueueRow.tenant_id == tenant_id)
                .order_by(QueueRow.queue_id)
                .with_for_update()
            ).all()
            why = f"tenant {phase.lower()}" + (f": {reason}" if reason else "")
            for queue in queues:
                # The effective admission state changed: a new generation for the gateway.
                queue_before = queue_snapshot(queue)
                bump(queue, spec=True)
                record_change(
                    session,
                    "queue",
                    f"{tenant_id}/{queue.queue_id}",
                    queue_before,
                    queue_snapshot(queue),
                    reason=reason,
                )
                push_queue(session, queue, phase, why, actor)
            if phase == "RETIRED":
                routes = session.scalars(
                    select(PartnerRouteRow)
                    .where(PartnerRouteRow.tenant_id == tenant_id)
                    .order_by(PartnerRouteRow.route_id)
                    .with_for_update()
                ).all()
                for route in routes:
                    regions = routing.route_regions(session, route, tenant)
                    route.generation += 1
                    routing.push_route(session, route, regions, why, actor, delete=True)
                    record_change(
                        session,
                        "route",
                        route.route_id,
                        route_snapshot(route),
                        None,
                        reason=reason,
                    )
                    session.delete(route)
            return tenant, True

        tenant, changed = await self._write(work)
        if changed:
            self._on_commands()
        return tenant

    async def SuspendTenant(
        self, request: pb.SuspendTenantRequest, context: Context
    ) -> pb.SuspendTenantResponse:
        violations = Violations()
        violations.resource_id("tenant_id", request.tenant_id)
        violations.reason("reason", request.reason)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()
        row = await self._set_phase(
            request.tenant_id,
            "SUSPENDED",
            request.reason,
            request.expected_resource_version,
            allowed_from=("ACTIVE",),
        )
        return pb.SuspendTenantResponse(tenant=tenant_to_proto(row))

    async def ResumeTenant(
        self, request: pb.ResumeTenantRequest, context: Context
    ) -> pb.ResumeTenantResponse:
        violations = Violations()
        violations.resource_id("tenant_id", request.tenant_id)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()
        row = await self._set_phase(
            request.tenant_id,
            "ACTIVE",
            "",
            request.expected_resource_version,
            allowed_from=("SUSPENDED",),
        )
        return pb.ResumeTenantResponse(tenant=tenant_to_proto(row))

    async def RetireTenant(
        self, request: pb.RetireTenantRequest, context: Context
    ) -> pb.RetireTenantResponse:
        violations = Violations()
        violations.resource_id("tenant_id", request.tenant_id)
        violations.reason("reason", request.reason)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        violations.raise_if_any()
        row = await self._set_phase(
            request.tenant_id,
            "RETIRED",
            request.reason,
            request.expected_resource_version,
            allowed_from=("ACTIVE", "SUSPENDED"),
        )
        return pb.RetireTenantResponse(tenant=tenant_to_proto(row))
