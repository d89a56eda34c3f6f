"""Operator (and peer) RPCs on nodes: read, list, roll up, cordon, drain, sweep."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from ppos.controlplane.core.errors import NotFound
from ppos.controlplane.core.handlers import Encoded
from ppos.controlplane.core.pagination import page_size
from ppos.controlplane.core.timeutil import duration_seconds, to_duration, to_timestamp, utcnow
from ppos.controlplane.core.validation import Violations
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.services.node_registry import operator_actions, store
from ppos.controlplane.services.node_registry.convert import fill_node, node_to_proto
from ppos.controlplane.services.node_registry.deps import NodeRegistryDeps
from ppos.controlplane.services.node_registry.filters import parse_filter
from ppos.controlplane.services.node_registry.health_sweep import HealthSweeper
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.services.node_registry.ordering import parse_order, token_filters
from ppos.controlplane.services.node_registry.rpc_base import (
    Context,
)
from ppos.controlplane.services.node_registry.unit_of_work import NodeWrites
from ppos.controlplane.storage.reads import PreparedRead, quick_reads

DEFAULT_DRAIN_GRACE = 600.0
MAX_DRAIN_GRACE = 7 * 86400.0
# GetNode is the hottest read: Core SQL compiled once, no ORM session, each row
# made into its Node message once while it stays the same (storage.reads).
_NODES = NodeRow.__table__


def _node_reply(row: NodeRow) -> Encoded:
    """GetNode's reply for `row`, encoded (kept by row: core/handlers.Encoded)."""
    reply = pb.GetNodeResponse()
    fill_node(reply.node, row)
    return Encoded(reply.SerializeToString())


NODE_BY_ID = PreparedRead(
    select(_NODES).where(_NODES.c.node_id == bindparam("node_id")),
    bounded=True,
    convert=_node_reply,
)


class OperatorRpcs:
    def __init__(self, deps: NodeRegistryDeps, write: NodeWrites, sweeper: HealthSweeper) -> None:
        self._deps = deps
        self._write = write
        self._sweeper = sweeper

    async def GetNode(self, request: pb.GetNodeRequest, context: Context) -> Encoded:
        violations = Violations()
        violations.object_id("node_id", request.node_id)
        violations.raise_if_any()

        found = await quick_reads(self._deps.db).converted(NODE_BY_ID, node_id=request.node_id)
        if not found:
            raise NotFound("node", request.node_id)
        return found[0]  # type: ignore[no-any-return]

    async def ListNodes(
        self, request: pb.ListNodesRequest, context: Context
    ) -> pb.ListNodesResponse:
        violations = Violations()
        query = parse_filter(request.filter, violations, prefix="filter")
        order = parse_order(request.order_by, violations)
        violations.raise_if_any()
        size = page_size(request.page_size)
        descending = request.descending
        filters = token_filters(order, descending, query.fingerprint())
        tokens = self._deps.page_tokens
        position = tokens.read(order.listing, filters, request.page_token)

        rows, version = await self._deps.db.read(
            lambda s: store.list_nodes(s, query, order, position, size, descending=descending)
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = tokens.issue(order.listing, filters, order.position(rows[-1]))
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

        rows = await self._deps.db.read(lambda s: store.version_rollup(s, request.region))
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
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        expected = request.expected_resource_version
        violations.raise_if_any()

        node_id, reason = request.node_id, request.reason
        row = await self._write(
            lambda s: operator_actions.cordon(s, node_id, expected, reason, utcnow())
        )
        return pb.CordonNodeResponse(node=node_to_proto(row))

    async def UncordonNode(
        self, request: pb.UncordonNodeRequest, context: Context
    ) -> pb.UncordonNodeResponse:
        violations = Violations()
        violations.object_id("node_id", request.node_id)
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        expected = request.expected_resource_version
        violations.raise_if_any()

        node_id = request.node_id
        row = await self._write(lambda s: operator_actions.uncordon(s, node_id, expected, utcnow()))
        return pb.UncordonNodeResponse(node=node_to_proto(row))

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
        violations.resource_version("expected_resource_version", request.expected_resource_version)
        expected = request.expected_resource_version
        violations.raise_if_any()

        node_id, reason = request.node_id, request.reason
        row = await self._write(
            lambda s: operator_actions.drain(s, node_id, expected, reason, grace, utcnow())
        )
        return pb.DrainNodeResponse(node=node_to_proto(row))

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
