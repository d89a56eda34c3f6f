"""Node-facing RPCs: a node registers, heartbeats, takes and reports its commands.

The node's id always comes from its credential; a node can never address
another node's record or commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import (
    FailedPrecondition,
    PreconditionViolation,
    Unavailable,
)
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.core.validation import (
    CLUSTER_NAME,
    DIGEST,
    IMAGE_REFERENCE,
    MAX_MESSAGE,
    Violations,
)
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.principal import Principal, current_principal
from ppos.controlplane.services.node_registry import commands
from ppos.controlplane.services.node_registry.changelog import Change, record_changes
from ppos.controlplane.services.node_registry.convert import (
    COMMAND_STATE_NAME,
    command_to_proto,
    node_snapshot,
    node_to_proto,
)
from ppos.controlplane.services.node_registry.lifecycle import set_readiness
from ppos.controlplane.services.node_registry.models import NodeCommandRow, NodeRow
from ppos.controlplane.services.node_registry.rpc_base import SERVICE, Context, ServicerBase
from ppos.controlplane.storage import audit

MAX_SLOTS = 1024
_REASON_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _container(
    violations: Violations, prefix: str, image: str, digest: str, *, required: bool = False
) -> None:
    violations.syntax(f"{prefix}.image", image, IMAGE_REFERENCE, required=required)
    if digest:
        if not image and not required:
            violations.add(f"{prefix}.image", "is required when a digest is given")
        violations.syntax(f"{prefix}.digest", digest, DIGEST)


def _audit_node(session: Session, row: NodeRow, before: dict[str, object] | None) -> None:
    audit.record(
        session,
        service=SERVICE,
        resource_kind="node",
        resource_id=row.node_id,
        before=before,
        after=node_snapshot(row),
    )


class NodeRpcs(ServicerBase):
    async def RegisterNode(
        self, request: pb.RegisterNodeRequest, context: Context
    ) -> pb.RegisterNodeResponse:
        principal = current_principal.get()
        violations = Violations()
        violations.object_id("node_id", request.node_id, required=False)
        violations.raise_if_any()
        self._only_self(principal, "node_id", request.node_id)
        violations.region("region", request.region)
        violations.syntax("cluster", request.cluster, CLUSTER_NAME, required=False)
        violations.int_range("capacity_slots", request.capacity_slots, 0, MAX_SLOTS)
        violations.labels("labels", request.labels)
        _container(
            violations,
            "container",
            request.container.image,
            request.container.digest,
            required=True,
        )
        violations.raise_if_any()

        def work(session: Session) -> NodeRow:
            row = self._own_node(session, principal)
            if row.region != request.region:
                raise FailedPrecondition(
                    f"node {row.node_id} was enrolled for region {row.region}, "
                    f"not {request.region}",
                    [PreconditionViolation("REGION", f"node/{row.node_id}", row.region)],
                    reason="REGION_MISMATCH",
                )
            now = utcnow()
            before = node_snapshot(row)
            spec = (request.cluster or row.cluster, dict(request.labels), request.capacity_slots)
            container = (request.container.image, request.container.digest)
            spec_changed = spec != (row.cluster, dict(row.labels), row.capacity_slots)
            container_changed = container != (row.container_image, row.container_digest)
            first = not row.registered
            row.last_heartbeat_at = now  # registering proves the node is alive
            if not (first or spec_changed or container_changed):
                return row  # a node agent restarting with the same declaration
            row.cluster, row.labels, row.capacity_slots = spec
            row.container_image, row.container_digest = container
            row.registered = True
            if spec_changed:
                row.generation += 1
            previous = row.readiness
            if first:
                set_readiness(row, "NOT_READY", "Registered", now)
            record_changes(
                session, [Change(row, "Registered" if first else "Reregistered", previous)], now
            )
            _audit_node(session, row, before)
            return row

        row = await self._write(work)
        return pb.RegisterNodeResponse(
            node=node_to_proto(row), heartbeat=self._heartbeat_settings()
        )

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        principal = current_principal.get()
        violations = Violations()
        violations.object_id("node_id", request.node_id, required=False)
        violations.raise_if_any()
        self._only_self(principal, "node_id", request.node_id)
        violations.int_range("slots_in_use", request.slots_in_use, 0, MAX_SLOTS)
        _container(violations, "container", request.container.image, request.container.digest)
        reason = request.not_ready_reason
        if reason:
            if request.ready:
                violations.add("not_ready_reason", "must be empty when ready is true")
            elif len(reason) > 64 or not set(reason) <= _REASON_CHARS:
                violations.add(
                    "not_ready_reason",
                    "must be a short machine-readable reason (at most 64 letters, digits, "
                    "'_', '.' or '-'), for example DiskPressure",
                )
        violations.raise_if_any()

        node, delivered = await self._heartbeats.submit(principal, request)
        return pb.HeartbeatResponse(
            node=node, commands=delivered, heartbeat=self._heartbeat_settings()
        )

    async def ReportNodeCommand(
        self, request: pb.ReportNodeCommandRequest, context: Context
    ) -> pb.ReportNodeCommandResponse:
        principal = current_principal.get()
        violations = Violations()
        violations.object_id("command_id", request.command_id)
        state = COMMAND_STATE_NAME.get(request.state, "")
        if state not in commands.NODE_REPORTS:
            violations.add("state", "must be ACKNOWLEDGED, SUCCEEDED or FAILED")
        violations.text(
            "message",
            request.message,
            max_length=MAX_MESSAGE,
            required=state == "FAILED",
            multiline=True,
            what="is required when reporting FAILED: say what went wrong",
        )
        violations.raise_if_any()

        def work(session: Session) -> NodeCommandRow:
            node = self._own_node(session, principal)  # node row first, then the command
            now = utcnow()
            row, changed = commands.report(
                session, node, request.command_id, state, request.message, now
            )
            if changed and row.kind == commands.REIMAGE:
                self._reimage_readiness(session, node, state, now)
            return row

        row = await self._write(work)
        return pb.ReportNodeCommandResponse(command=command_to_proto(row))

    @staticmethod
    def _reimage_readiness(session: Session, node: NodeRow, state: str, now: dt.datetime) -> None:
        before = node_snapshot(node)
        previous = node.readiness
        if state == "ACKNOWLEDGED":
            changed = set_readiness(node, "REIMAGING", "ReimageInProgress", now)
        elif node.readiness == "REIMAGING":
            why = "ReimageSucceeded" if state == "SUCCEEDED" else "ReimageFailed"
            changed = set_readiness(node, "NOT_READY", why, now)
        else:
            changed = False
        if changed:
            record_changes(session, [Change(node, node.readiness_reason, previous)], now)
            _audit_node(session, node, before)

    async def StreamNodeCommands(
        self, request: pb.StreamNodeCommandsRequest, context: Context
    ) -> AsyncIterator[pb.StreamNodeCommandsResponse]:
        principal = current_principal.get()
        shutdown = self._deps.shutdown
        idle = max(self._settings.heartbeat_interval, 1.0)
        with self._signals.waiter(principal.name) as issued:
            first = True
            while True:
                if shutdown.is_set():
                    raise Unavailable(
                        "server shutting down: reopen the command stream (or heartbeat) on "
                        "another replica; unacknowledged commands are delivered again",
                        retry_after_seconds=1.0,
                        reason="SERVER_SHUTTING_DOWN",
                    )
                issued.clear()
                delivered = await self._write(
                    functools.partial(self._deliver, principal=principal, include_delivered=first)
                )
                first = False
                for row in delivered:
                    yield pb.StreamNodeCommandsResponse(command=command_to_proto(row))
                await _first_of(issued.wait(), shutdown.wait(), limit=idle)

    def _deliver(
        self, session: Session, principal: Principal, *, include_delivered: bool
    ) -> list[NodeCommandRow]:
        node = self._own_node(session, principal)
        return commands.deliver(session, node, utcnow(), include_delivered=include_delivered)


async def _first_of(*waits: Coroutine[Any, Any, Any], limit: float) -> None:
    """Wait until any of the coroutines finishes or `limit` seconds pass."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
