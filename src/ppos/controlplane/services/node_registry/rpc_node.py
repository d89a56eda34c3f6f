"""Node-facing RPCs: a node registers, heartbeats, takes and reports its commands.

The node's id always comes from its credential; a node can never address
another node's record or commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import Unavailable
from ppos.controlplane.core.timeutil import to_duration, utcnow
from ppos.controlplane.core.validation import (
    CLUSTER_NAME,
    DIGEST,
    IMAGE_REFERENCE,
    MAX_MESSAGE,
    Violations,
)
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.principal import Principal, current_principal
from ppos.controlplane.services.node_registry import commands, store
from ppos.controlplane.services.node_registry.command_actions import report_command
from ppos.controlplane.services.node_registry.convert import (
    COMMAND_STATE_NAME,
    command_to_proto,
    node_to_proto,
)
from ppos.controlplane.services.node_registry.deps import NodeRegistryDeps
from ppos.controlplane.services.node_registry.heartbeats import HeartbeatBatcher
from ppos.controlplane.services.node_registry.models import NodeCommandRow
from ppos.controlplane.services.node_registry.registration import Declaration, register_node
from ppos.controlplane.services.node_registry.rpc_base import Context, only_self
from ppos.controlplane.services.node_registry.signals import CommandSignals
from ppos.controlplane.services.node_registry.unit_of_work import NodeWrites

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


class NodeRpcs:
    def __init__(
        self,
        deps: NodeRegistryDeps,
        write: NodeWrites,
        heartbeats: HeartbeatBatcher,
        signals: CommandSignals,
    ) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._write = write
        self._heartbeats = heartbeats
        self._signals = signals

    def _heartbeat_settings(self) -> node_pb2.HeartbeatSettings:
        return node_pb2.HeartbeatSettings(
            interval=to_duration(self._settings.heartbeat_interval),
            ttl=to_duration(self._settings.heartbeat_ttl),
        )

    async def RegisterNode(
        self, request: pb.RegisterNodeRequest, context: Context
    ) -> pb.RegisterNodeResponse:
        principal = current_principal.get()
        violations = Violations()
        violations.object_id("node_id", request.node_id, required=False)
        violations.raise_if_any()
        only_self(principal, "node_id", request.node_id)
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

        declared = Declaration(
            region=request.region,
            cluster=request.cluster,
            labels=dict(request.labels),
            capacity_slots=request.capacity_slots,
            image=request.container.image,
            digest=request.container.digest,
        )
        row = await self._write(lambda s: register_node(s, principal, declared, utcnow()))
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
        only_self(principal, "node_id", request.node_id)
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

        command_id, message = request.command_id, request.message
        row = await self._write(
            lambda s: report_command(s, principal, command_id, state, message, utcnow())
        )
        return pb.ReportNodeCommandResponse(command=command_to_proto(row))

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
        node = store.own_node(session, principal)
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
