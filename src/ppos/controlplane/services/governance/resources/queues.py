"""Queue RPCs: validate, run the use case in one unit of work, build the reply.

The use cases are in queue_changes.py; their queries and row writes in store.py.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ppos.controlplane.core.pagination import Ident, Listing
from ppos.controlplane.core.validation import MAX_ENUM_FILTER, Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.security.principal import current_principal
from ppos.controlplane.services.governance.common import GOVERNANCE_SERVICE, Context
from ppos.controlplane.services.governance.convert import queue_to_proto
from ppos.controlplane.services.governance.enums import QUEUE_STATE
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.idempotency import IdempotentCall, validate_request_id
from ppos.controlplane.services.governance.models import MAX_CAPACITY, QueueRow
from ppos.controlplane.services.governance.outbox import reachability
from ppos.controlplane.services.governance.resources import lookups, store
from ppos.controlplane.services.governance.resources.queue_changes import (
    QueueChange,
    change_queue,
    create_queue,
)
from ppos.controlplane.services.governance.resources.specs import validate_queue_spec

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
        call = IdempotentCall.of("CreateQueue", request)
        actor = current_principal.get()
        regions = self._gateway_regions
        response, created = await self._write(
            lambda session: create_queue(session, request, call, regions, actor)
        )
        if created:
            self._on_commands()
        return response

    async def GetQueue(self, request: pb.GetQueueRequest, context: Context) -> pb.GetQueueResponse:
        violations = Violations()
        self._queue_names(violations, request.tenant_id, request.queue_id)
        violations.raise_if_any()

        def work(session: Session) -> res_pb.Queue:
            # The row and its holds in one read, so the two agree.
            row = lookups.queue(session, request.tenant_id, request.queue_id, lock=False)
            holds = reachability.queue_holds(session, [row])
            return queue_to_proto(row, holds.get((row.tenant_id, row.queue_id)))

        return pb.GetQueueResponse(queue=await self._db.read(work))

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

        def work(
            session: Session,
        ) -> tuple[list[QueueRow], dict[tuple[str, str], reachability.QueueHold]]:
            rows = store.queue_page(
                session, page, tenant_id=request.tenant_id, region=request.region, states=states
            )
            return rows, reachability.queue_holds(session, rows[: page.size])

        rows, holds = await self._db.read(work)
        return pb.ListQueuesResponse(
            queues=[
                queue_to_proto(r, holds.get((r.tenant_id, r.queue_id))) for r in rows[: page.size]
            ],
            next_page_token=page.next_token(rows),
        )

    async def _shown(self, row: QueueRow) -> res_pb.Queue:
        """The queue as shown: HELD while its gateway or a partner cannot be reached."""
        holds = await self._db.read(lambda s: reachability.queue_holds(s, [row]))
        return queue_to_proto(row, holds.get((row.tenant_id, row.queue_id)))

    async def _change_queue(self, change: QueueChange) -> QueueRow:
        actor = current_principal.get()
        queue, changed = await self._write(lambda session: change_queue(session, change, actor))
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
            QueueChange(
                request.tenant_id,
                request.queue_id,
                request.expected_resource_version,
                required_version=True,
                reason=request.reason,
                capacity=request.capacity,
            )
        )
        return pb.ResizeQueueResponse(queue=await self._shown(row))

    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: Context
    ) -> pb.PauseQueueResponse:
        row = await self._set_state(request, "PAUSED", request.reason)
        return pb.PauseQueueResponse(queue=await self._shown(row))

    async def DrainQueue(
        self, request: pb.DrainQueueRequest, context: Context
    ) -> pb.DrainQueueResponse:
        row = await self._set_state(request, "DRAINING", request.reason)
        return pb.DrainQueueResponse(queue=await self._shown(row))

    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: Context
    ) -> pb.ResumeQueueResponse:
        row = await self._set_state(request, "ACTIVE", None)
        return pb.ResumeQueueResponse(queue=await self._shown(row))

    async def _set_state(
        self,
        request: pb.PauseQueueRequest | pb.DrainQueueRequest | pb.ResumeQueueRequest,
        state: str,
        reason: str | None,
    ) -> QueueRow:
        """Pause, drain or resume (`reason` None: the RPC takes none)."""
        violations = Violations()
        self._queue_names(
            violations, request.tenant_id, request.queue_id, request.expected_resource_version
        )
        if reason is not None:
            violations.reason("reason", reason)
        violations.raise_if_any()
        return await self._change_queue(
            QueueChange(
                request.tenant_id,
                request.queue_id,
                request.expected_resource_version,
                required_version=False,
                reason=reason or "",
                state=state,
            )
        )
