"""Queues of a tenant: creation, capacity and admission state.

A queue's capacity and admission state reach the gateway of its region as an
outbox command written in the same transaction as the change and its audit
entry.
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists, InvalidArgument
from ppos.controlplane.core.pagination import Ident, Listing
from ppos.controlplane.core.validation import MAX_ENUM_FILTER, Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.security.principal import current_principal
from ppos.controlplane.services.governance.common import (
    GOVERNANCE_SERVICE,
    Context,
    bump,
    check_version,
    record_change,
)
from ppos.controlplane.services.governance.convert import queue_snapshot, queue_to_proto
from ppos.controlplane.services.governance.enums import QUEUE_STATE
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.idempotency import (
    body_digest,
    find_request,
    remember_request,
    validate_request_id,
)
from ppos.controlplane.services.governance.models import MAX_CAPACITY, QueueRow
from ppos.controlplane.services.governance.resources import lookups, routing
from ppos.controlplane.services.governance.resources.specs import validate_queue_spec
from ppos.controlplane.services.governance.resources.tenants import (
    METHOD_PREFIX,
    new_queue_row,
    push_queue,
)

QUEUES_PAGE = Listing(GOVERNANCE_SERVICE + "ListQueues", Ident("tenant_id"), Ident("queue_id"))


class QueueHandlers(HandlerBase):
    rpcs = (
        "CreateQueue",
        "GetQueue",
        "ListQueues",
        "ResizeQueue",
        "PauseQueue",
        "DrainQueue",
        "ResumeQueue",
    )

    async def CreateQueue(
        self, request: pb.CreateQueueRequest, context: Context
    ) -> pb.CreateQueueResponse:
        violations = Violations()
        violations.resource_id("tenant_id", request.tenant_id)
        violations.resource_id("queue_id", request.queue_id)
        validate_request_id(violations, request.request_id, required=False)
        # Whether the tenant has a default region is checked once the tenant is read.
        validate_queue_spec(violations, "spec", request.spec, default_region=None)
        violations.raise_if_any()
        method = METHOD_PREFIX + "CreateQueue"
        digest = body_digest(request)
        actor = current_principal.get()
        regions = self._gateway_regions

        def work(session: Session) -> tuple[pb.CreateQueueResponse, bool]:
            prior = find_request(session, method, request.request_id, digest)
            if prior is not None and prior.response is not None:
                return pb.CreateQueueResponse.FromString(prior.response), False
            tenant = lookups.live_tenant(session, request.tenant_id)
            if not request.spec.region and not tenant.default_region:
                raise InvalidArgument.single(
                    "spec.region", "is required (the tenant names no default region)"
                )
            if session.get(QueueRow, (request.tenant_id, request.queue_id)) is not None:
                raise AlreadyExists("queue", f"{request.tenant_id}/{request.queue_id}")
            refs = lookups.References(session)
            refs.region("spec.region", request.spec.region or tenant.default_region, regions)
            refs.raise_if_any()
            known_regions = set(
                session.scalars(
                    select(QueueRow.region).where(QueueRow.tenant_id == tenant.tenant_id)
                )
            ) | {tenant.default_region}
            queue = new_queue_row(tenant, request.queue_id, request.spec)
            session.add(queue)
            session.flush()
            record_change(
                session,
                "queue",
                f"{tenant.tenant_id}/{queue.queue_id}",
                None,
                queue_snapshot(queue),
                reason=queue.reason,  # a queue created held says why
            )
            push_queue(session, queue, tenant.phase, "queue created", actor)
            if queue.region not in known_regions:
                # The tenant's tenant-wide routes now apply in one more region.
                for route in routing.tenant_wide_routes(session, tenant.tenant_id):
                    routing.push_route(
                        session, route, [queue.region], "tenant entered region", actor
                    )
            response = pb.CreateQueueResponse(queue=queue_to_proto(queue))
            remember_request(
                session,
                method,
                request.request_id,
                digest,
                f"queue/{tenant.tenant_id}/{queue.queue_id}",
                response,
            )
            return response, True

        response, created = await self._write(work)
        if created:
            self._on_commands()
        return response

    async def GetQueue(self, request: pb.GetQueueRequest, context: Context) -> pb.GetQueueResponse:
        violations = Violations()
        self._queue_names(violations, request.tenant_id, request.queue_id)
        violations.raise_if_any()
        row = await self._db.read(
            lambda s: lookups.queue(s, request.tenant_id, request.queue_id, lock=False)
        )
        return pb.GetQueueResponse(queue=queue_to_proto(row))

    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: Context
    ) -> pb.ListQueuesResponse:
        violations = Violations()
        if request.tenant_id:
            violations.resource_id("tenant_id", request.tenant_id)
        violations.region("region", request.region, required=False)
        states = []
        bounded = violations.at_most("states", request.states, MAX_ENUM_FILTER)
        for index, state in enumerate(request.states if bounded else ()):
            if not QUEUE_STATE.is_known(state):
                violations.add(f"states[{index}]", f"{state} is not a queue state")
            else:
                states.append(QUEUE_STATE.to_name(state))
        violations.raise_if_any()
        page = self._page(
            QUEUES_PAGE,
            request.page_size,
            request.page_token,
            {"tenant": request.tenant_id, "region": request.region, "states": sorted(states)},
        )

        def work(session: Session) -> list[QueueRow]:
            query = select(QueueRow)
            if request.tenant_id:
                query = query.where(QueueRow.tenant_id == request.tenant_id)
            if request.region:
                query = query.where(QueueRow.region == request.region)
            if states:
                query = query.where(QueueRow.state.in_(states))
            if page.after:
                tenant_id, queue_id = page.after
                query = query.where(
                    or_(
                        QueueRow.tenant_id > tenant_id,
                        and_(QueueRow.tenant_id == tenant_id, QueueRow.queue_id > queue_id),
                    )
                )
            query = query.order_by(QueueRow.tenant_id, QueueRow.queue_id).limit(page.size + 1)
            return list(session.scalars(query))

        rows = await self._db.read(work)
        return pb.ListQueuesResponse(
            queues=[queue_to_proto(r) for r in rows[: page.size]],
            next_page_token=page.next_token(rows, lambda r: (r.tenant_id, r.queue_id)),
        )

    async def _change_queue(
        self,
        tenant_id: str,
        queue_id: str,
        expected: str,
        *,
        required_version: bool,
        capacity: int | None = None,
        state: str | None = None,
        reason: str,
    ) -> QueueRow:
        actor = current_principal.get()

        def work(session: Session) -> tuple[QueueRow, bool]:
            tenant = lookups.live_tenant(session, tenant_id)
            queue = lookups.queue(session, tenant_id, queue_id)
            check_version(
                "queue",
                f"{tenant_id}/{queue_id}",
                expected,
                queue.resource_version,
                required=required_version,
            )
            new_capacity = queue.capacity if capacity is None else capacity
            new_state = queue.state if state is None else state
            if new_capacity == queue.capacity and new_state == queue.state:
                return queue, False  # already so: nothing to change, nothing to send
            before = queue_snapshot(queue)
            queue.capacity = new_capacity
            queue.state = new_state
            queue.reason = reason
            bump(queue, spec=True)
            record_change(
                session,
                "queue",
                f"{tenant_id}/{queue_id}",
                before,
                queue_snapshot(queue),
                reason=reason,
            )
            push_queue(session, queue, tenant.phase, reason or f"queue {new_state.lower()}", actor)
            return queue, True

        queue, changed = await self._write(work)
        if changed:
            self._on_commands()
        return queue

    @staticmethod
    def _queue_names(
        violations: Violations, tenant_id: str, queue_id: str, expected_version: str = ""
    ) -> None:
        violations.resource_id("tenant_id", tenant_id)
        violations.resource_id("queue_id", queue_id)
        violations.resource_version("expected_resource_version", expected_version)

    async def ResizeQueue(
        self, request: pb.ResizeQueueRequest, context: Context
    ) -> pb.ResizeQueueResponse:
        violations = Violations()
        self._queue_names(
            violations, request.tenant_id, request.queue_id, request.expected_resource_version
        )
        violations.int_range("capacity", request.capacity, 1, MAX_CAPACITY)
        violations.reason("reason", request.reason)
        violations.raise_if_any()
        row = await self._change_queue(
            request.tenant_id,
            request.queue_id,
            request.expected_resource_version,
            required_version=True,
            capacity=request.capacity,
            reason=request.reason,
        )
        return pb.ResizeQueueResponse(queue=queue_to_proto(row))

    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: Context
    ) -> pb.PauseQueueResponse:
        violations = Violations()
        self._queue_names(
            violations, request.tenant_id, request.queue_id, request.expected_resource_version
        )
        violations.reason("reason", request.reason)
        violations.raise_if_any()
        row = await self._change_queue(
            request.tenant_id,
            request.queue_id,
            request.expected_resource_version,
            required_version=False,
            state="PAUSED",
            reason=request.reason,
        )
        return pb.PauseQueueResponse(queue=queue_to_proto(row))

    async def DrainQueue(
        self, request: pb.DrainQueueRequest, context: Context
    ) -> pb.DrainQueueResponse:
        violations = Violations()
        self._queue_names(
            violations, request.tenant_id, request.queue_id, request.expected_resource_version
        )
        violations.reason("reason", request.reason)
        violations.raise_if_any()
        row = await self._change_queue(
            request.tenant_id,
            request.queue_id,
            request.expected_resource_version,
            required_version=False,
            state="DRAINING",
            reason=request.reason,
        )
        return pb.DrainQueueResponse(queue=queue_to_proto(row))

    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: Context
    ) -> pb.ResumeQueueResponse:
        violations = Violations()
        self._queue_names(
            violations, request.tenant_id, request.queue_id, request.expected_resource_version
        )
        violations.raise_if_any()
        row = await self._change_queue(
            request.tenant_id,
            request.queue_id,
            request.expected_resource_version,
            required_version=False,
            state="ACTIVE",
            reason="",
        )
        return pb.ResumeQueueResponse(queue=queue_to_proto(row))
