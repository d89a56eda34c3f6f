"""A queue's use cases: its creation and changes of capacity or admission state.

Each function is the unit of work of one change, run in the caller's
transaction: the row, its audit entry and the outbox command that tells the
queue's gateway.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists, InvalidArgument
from ppos.controlplane.core.versions import check_version
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.common import bump
from ppos.controlplane.services.governance.convert import queue_to_proto
from ppos.controlplane.services.governance.idempotency import IdempotentCall
from ppos.controlplane.services.governance.models import QueueRow
from ppos.controlplane.services.governance.outbox import reachability
from ppos.controlplane.services.governance.resources import lookups, routing, store
from ppos.controlplane.services.governance.snapshots import queue_snapshot


def create_queue(
    session: Session,
    request: pb.CreateQueueRequest,
    call: IdempotentCall,
    regions: list[str],
    actor: Principal,
) -> tuple[pb.CreateQueueResponse, bool]:
    """The reply, and whether the queue was created (False: a replay)."""
    replay = call.replay(session, pb.CreateQueueResponse)
    if replay is not None:
        return replay, False
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
    known_regions = store.queue_regions(session, tenant.tenant_id) | {tenant.default_region}
    queue = store.new_queue_row(tenant, request.queue_id, request.spec)
    session.add(queue)
    session.flush()
    store.record_queue(session, queue, None, queue.reason)  # a queue created held says why
    store.push_queue(session, queue, tenant.phase, "queue created", actor)
    if queue.region not in known_regions:
        # The tenant's tenant-wide routes now apply in one more region.
        for route in routing.tenant_wide_routes(session, tenant.tenant_id):
            routing.push_route(session, route, [queue.region], "tenant entered region", actor)
    holds = reachability.queue_holds(session, [queue])
    response = pb.CreateQueueResponse(
        queue=queue_to_proto(queue, holds.get((queue.tenant_id, queue.queue_id)))
    )
    call.remember(session, f"queue/{tenant.tenant_id}/{queue.queue_id}", response)
    return response, True


@dataclass(frozen=True)
class QueueChange:
    """A new capacity and/or admission state (None: unchanged) for one queue."""

    tenant_id: str
    queue_id: str
    expected_version: str
    required_version: bool
    reason: str
    capacity: int | None = None
    state: str | None = None


def change_queue(session: Session, change: QueueChange, actor: Principal) -> tuple[QueueRow, bool]:
    """The queue, and whether it changed (already so: nothing to send)."""
    tenant = lookups.live_tenant(session, change.tenant_id)
    queue = lookups.queue(session, change.tenant_id, change.queue_id)
    check_version(
        "queue",
        f"{change.tenant_id}/{change.queue_id}",
        change.expected_version,
        queue.resource_version,
        required=change.required_version,
    )
    new_capacity = queue.capacity if change.capacity is None else change.capacity
    new_state = queue.state if change.state is None else change.state
    if new_capacity == queue.capacity and new_state == queue.state:
        return queue, False  # already so: nothing to change, nothing to send
    before = queue_snapshot(queue)
    queue.capacity = new_capacity
    queue.state = new_state
    queue.reason = change.reason
    bump(queue, spec=True)
    store.record_queue(session, queue, before, change.reason)
    why = change.reason or f"queue {new_state.lower()}"
    store.push_queue(session, queue, tenant.phase, why, actor)
    return queue, True
