"""Operator (and peer) RPCs on nodes: read, list, roll up, cordon, drain, sweep."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition, NotFound
from ppos.controlplane.core.errors import PreconditionViolation as Violation
from ppos.controlplane.core.pagination import Ident, Listing, page_size
from ppos.controlplane.core.timeutil import duration_seconds, to_duration, to_timestamp, utcnow
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.services.node_registry.changelog import (
    Change,
    consistent_snapshot,
    head_version,
    record_changes,
)
from ppos.controlplane.services.node_registry.convert import node_snapshot, node_to_proto
from ppos.controlplane.services.node_registry.filters import parse_filter
from ppos.controlplane.services.node_registry.lifecycle import set_readiness, set_schedulable
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.services.node_registry.rpc_base import (
    SERVICE,
    Context,
    ServicerBase,
    check_version,
    expected_version,
)
from ppos.controlplane.storage import audit
from ppos.controlplane.storage.reads import PreparedRead, quick_reads

DEFAULT_DRAIN_GRACE = 600.0
MAX_DRAIN_GRACE = 7 * 86400.0
NODES_PAGE = Listing(
    "/ppos.controlplane.noderegistry.v1.NodeRegistryService/ListNodes", Ident("node_id")
)
# GetNode is the hottest read: Core SQL compiled once, no ORM session (storage.reads).
_NODES = NodeRow.__table__
NODE_BY_ID = PreparedRead(
    select(_NODES).where(_NODES.c.node_id == bindparam("node_id")), bounded=True
)


def _audit_node(
    session: Session, row: NodeRow, before: dict[str, object], reason: str = ""
) -> None:
    audit.record(
        session,
        service=SERVICE,
        resource_kind="node",
        resource_id=row.node_id,
        before=before,
        after=node_snapshot(row),
        reason=reason,
    )


class OperatorRpcs(ServicerBase):
    async def GetNode(self, request: pb.GetNodeRequest, context: Context) -> pb.GetNodeResponse:
        violations = Violations()
        violations.object_id("node_id", request.node_id)
        violations.raise_if_any()

        row = await quick_reads(self._deps.db).first(NODE_BY_ID, node_id=request.node_id)
        if row is None:
            raise NotFound("node", request.node_id)
        return pb.GetNodeResponse(node=node_to_proto(row))

    async def ListNodes(
        self, request: pb.ListNodesRequest, context: Context
    ) -> pb.ListNodesResponse:
        violations = Violations()
        query = parse_filter(request.filter, violations, prefix="filter")
        violations.raise_if_any()
        size = page_size(request.page_size)
        filters = {"filter": query.fingerprint()}
        position = self._deps.page_tokens.read(NODES_PAGE, filters, request.page_token)
        after: str = position[0] if position else ""

        def work(session: Session) -> tuple[list[NodeRow], int]:
            consistent_snapshot(session)
            version = head_version(session)
            statement = query.where(select(NodeRow)).order_by(NodeRow.node_id).limit(size + 1)
            if after:
                statement = statement.where(NodeRow.node_id > after)
            return list(session.scalars(statement)), version

        rows, version = await self._deps.db.read(work)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self._deps.page_tokens.issue(NODES_PAGE, filters, (rows[-1].node_id,))
        return pb.ListNodesResponse(
            nodes=[node_to_proto(row) for row in rows],
            next_page_token=token,
            resource_version=version,
        )

    async def GetVersionRollup(
        self, request: pb.GetVersionRollupRequest, context: Context
    ) -> pb.GetVersionRollupResponse:
        violations = Violations()
        violations.region("region", request.region, required=False)
        violations.raise_if_any()

        def work(session: Session) -> list[tuple[str, str, str, int, int]]:
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
            if request.region:
                statement = statement.where(NodeRow.region == request.region)
            return [
                (str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4] or 0))
                for r in session.execute(statement)
            ]

        rows = await self._deps.db.read(work)
        return pb.GetVersionRollupResponse(
            versions=[
                node_pb2.VersionCount(
                    region=region,
                    container=node_pb2.ContainerVersion(image=image, digest=digest),
                    node_count=count,
                    ready_count=ready,
                )
                for region, image, digest, count, ready in rows
            ]
        )

    async def CordonNode(
        self, request: pb.CordonNodeRequest, context: Context
    ) -> pb.CordonNodeResponse:
        violations = Violations()
        violations.object_id("node_id", request.node_id)
        violations.reason("reason", request.reason)
        expected = expected_version(
            violations, "expected_resource_version", request.expected_resource_version
        )
        violations.raise_if_any()

        def work(session: Session) -> NodeRow:
            row = self._lock_node(session, request.node_id)
            check_version(row, expected)
            before = node_snapshot(row)
            now = utcnow()
            if not set_schedulable(row, False, request.reason, now):
                return row  # already cordoned for this reason
            row.generation += 1
            record_changes(session, [Change(row, "Cordoned", row.readiness)], now)
            _audit_node(session, row, before, request.reason)
            return row

        return pb.CordonNodeResponse(node=node_to_proto(await self._write(work)))

    async def UncordonNode(
        self, request: pb.UncordonNodeRequest, context: Context
    ) -> pb.UncordonNodeResponse:
        violations = Violations()
        violations.object_id("node_id", request.node_id)
        expected = expected_version(
            violations, "expected_resource_version", request.expected_resource_version
        )
        violations.raise_if_any()

        def work(session: Session) -> NodeRow:
            row = self._lock_node(session, request.node_id)
            check_version(row, expected)
            before = node_snapshot(row)
            previous = row.readiness
            now = utcnow()
            changed = set_schedulable(row, True, "", now)
            if row.drain_deadline is not None:
                row.drain_deadline = None
                changed = True
            if row.readiness == "DRAINING":
                changed = set_readiness(row, "NOT_READY", "DrainCancelled", now) or changed
            if not changed:
                return row  # already schedulable
            row.generation += 1
            record_changes(session, [Change(row, "Uncordoned", previous)], now)
            _audit_node(session, row, before)
            return row

        return pb.UncordonNodeResponse(node=node_to_proto(await self._write(work)))

    async def DrainNode(
        self, request: pb.DrainNodeRequest, context: Context
    ) -> pb.DrainNodeResponse:
        violations = Violations()
        violations.object_id("node_id", request.node_id)
        violations.reason("reason", request.reason)
        grace = (
            duration_seconds(request.grace) if request.HasField("grace") else DEFAULT_DRAIN_GRACE
        )
        if not 0 <= grace <= MAX_DRAIN_GRACE:
            violations.add("grace", f"must be between 0s and {MAX_DRAIN_GRACE:g}s")
        expected = expected_version(
            violations, "expected_resource_version", request.expected_resource_version
        )
        violations.raise_if_any()

        def work(session: Session) -> NodeRow:
            row = self._lock_node(session, request.node_id)
            check_version(row, expected)
            refusal = {
                "DRAINING": "it is already draining (uncordon it first to start over)",
                "REIMAGING": "it is being re-imaged",
                "LOST": "it is LOST and runs nothing we know of (cordon it instead)",
            }.get(row.readiness)
            if refusal is None and not row.registered:
                refusal = "it has not registered yet (cordon it instead)"
            if refusal is not None:
                raise FailedPrecondition(
                    f"node {row.node_id} cannot be drained: {refusal}",
                    [Violation("NODE_STATE", f"node/{row.node_id}", row.readiness)],
                    reason="NODE_NOT_DRAINABLE",
                    metadata={"readiness": row.readiness},
                )
            before = node_snapshot(row)
            previous = row.readiness
            now = utcnow()
            set_schedulable(row, False, request.reason, now)
            set_readiness(row, "DRAINING", "DrainRequested", now)
            row.drain_deadline = now + dt.timedelta(seconds=grace)
            row.generation += 1
            record_changes(session, [Change(row, "DrainRequested", previous)], now)
            _audit_node(session, row, before, request.reason)
            return row

        return pb.DrainNodeResponse(node=node_to_proto(await self._write(work)))

    async def RunHealthSweep(
        self, request: pb.RunHealthSweepRequest, context: Context
    ) -> pb.RunHealthSweepResponse:
        result = await self._sweeper.run(wait=True)
        return pb.RunHealthSweepResponse(
            marked_not_ready=result.marked_not_ready,
            marked_lost=result.marked_lost,
            commands_timed_out=result.commands_timed_out,
            duration=to_duration(result.duration),
            sweep_time=to_timestamp(result.sweep_time),
            drains_expired=result.drains_expired,
            resource_version=result.resource_version,
            events_pruned=result.events_pruned,
        )
