"""Operator (and peer) RPCs on node commands: re-image, read, list, cancel.

Governance calls ReimageNode and CordonNode as a peer service with a
PREFLIGHT_JWT; the command records the service as its issuer and the
principal it acted for.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import NotFound
from ppos.controlplane.core.pagination import Ident, Listing, page_size
from ppos.controlplane.core.timeutil import duration_seconds, utcnow
from ppos.controlplane.core.validation import (
    DIGEST,
    IMAGE_REFERENCE,
    MAX_ENUM_FILTER,
    Violations,
)
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.principal import current_principal
from ppos.controlplane.services.node_registry import commands
from ppos.controlplane.services.node_registry.changelog import Change, record_changes
from ppos.controlplane.services.node_registry.convert import (
    COMMAND_STATE_NAME,
    command_to_proto,
    node_snapshot,
)
from ppos.controlplane.services.node_registry.lifecycle import set_readiness
from ppos.controlplane.services.node_registry.models import NodeCommandRow
from ppos.controlplane.services.node_registry.rpc_base import SERVICE, Context, ServicerBase
from ppos.controlplane.storage import audit

DEFAULT_REIMAGE_TIMEOUT = 1800.0
MIN_REIMAGE_TIMEOUT = 60.0
MAX_REIMAGE_TIMEOUT = 86400.0
COMMANDS_PAGE = Listing(
    "/ppos.controlplane.noderegistry.v1.NodeRegistryService/ListNodeCommands", Ident("command_id")
)


class CommandRpcs(ServicerBase):
    async def ReimageNode(
        self, request: pb.ReimageNodeRequest, context: Context
    ) -> pb.ReimageNodeResponse:
        violations = Violations()
        violations.object_id("node_id", request.node_id)
        violations.syntax("target.image", request.target.image, IMAGE_REFERENCE)
        if violations.require(
            "target.digest", request.target.digest, "is required: re-image to a pinned digest"
        ):
            violations.syntax("target.digest", request.target.digest, DIGEST)
        violations.reason("reason", request.reason)
        violations.object_id("idempotency_key", request.idempotency_key, required=False)
        timeout = (
            duration_seconds(request.timeout)
            if request.HasField("timeout")
            else DEFAULT_REIMAGE_TIMEOUT
        )
        if not MIN_REIMAGE_TIMEOUT <= timeout <= MAX_REIMAGE_TIMEOUT:
            violations.add(
                "timeout", f"must be between {MIN_REIMAGE_TIMEOUT:g}s and {MAX_REIMAGE_TIMEOUT:g}s"
            )
        violations.raise_if_any()
        spec = commands.ReimageRequest(
            node_id=request.node_id,
            image=request.target.image,
            digest=request.target.digest,
            reason=request.reason,
            idempotency_key=request.idempotency_key,
            timeout_seconds=round(timeout),
        )
        issuer = current_principal.get()

        def work(session: Session) -> commands.Issued:
            return commands.issue_reimage(session, spec, issuer, utcnow())

        try:
            issued = await self._write(work)
        except IntegrityError:
            # The same key raced in from another call and won: answer as its replay.
            known = await self._deps.db.read(lambda s: commands.find_by_key(s, spec))
            if known is None:
                raise
            issued = known
        if not issued.duplicate:
            self._signals.poke(spec.node_id)
        return pb.ReimageNodeResponse(
            command=command_to_proto(issued.command), duplicate=issued.duplicate
        )

    async def GetNodeCommand(
        self, request: pb.GetNodeCommandRequest, context: Context
    ) -> pb.GetNodeCommandResponse:
        violations = Violations()
        violations.object_id("command_id", request.command_id)
        violations.raise_if_any()

        def work(session: Session) -> NodeCommandRow:
            row = session.get(NodeCommandRow, request.command_id)
            if row is None:
                raise NotFound("node command", request.command_id)
            return row

        return pb.GetNodeCommandResponse(command=command_to_proto(await self._deps.db.read(work)))

    async def ListNodeCommands(
        self, request: pb.ListNodeCommandsRequest, context: Context
    ) -> pb.ListNodeCommandsResponse:
        violations = Violations()
        states = set()
        bounded = violations.at_most("states", request.states, MAX_ENUM_FILTER)
        for index, value in enumerate(request.states if bounded else ()):
            name = COMMAND_STATE_NAME.get(value)
            if name is None:
                violations.add(f"states[{index}]", f"is not a command state ({value})")
            else:
                states.add(name)
        violations.object_id("node_id", request.node_id, required=False)
        violations.raise_if_any()
        size = page_size(request.page_size)
        filters = {"node": request.node_id, "states": sorted(states)}
        position = self._deps.page_tokens.read(COMMANDS_PAGE, filters, request.page_token)
        before: str = position[0] if position else ""

        def work(session: Session) -> list[NodeCommandRow]:
            statement = select(NodeCommandRow).order_by(NodeCommandRow.command_id.desc())
            if request.node_id:
                statement = statement.where(NodeCommandRow.node_id == request.node_id)
            if states:
                statement = statement.where(NodeCommandRow.state.in_(sorted(states)))
            if before:
                statement = statement.where(NodeCommandRow.command_id < before)
            return list(session.scalars(statement.limit(size + 1)))

        rows = await self._deps.db.read(work)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self._deps.page_tokens.issue(COMMANDS_PAGE, filters, (rows[-1].command_id,))
        return pb.ListNodeCommandsResponse(
            commands=[command_to_proto(row) for row in rows], next_page_token=token
        )

    async def CancelNodeCommand(
        self, request: pb.CancelNodeCommandRequest, context: Context
    ) -> pb.CancelNodeCommandResponse:
        violations = Violations()
        violations.object_id("command_id", request.command_id)
        violations.reason("reason", request.reason)
        violations.raise_if_any()

        def work(session: Session) -> NodeCommandRow:
            found = session.get(NodeCommandRow, request.command_id)
            if found is None:
                raise NotFound("node command", request.command_id)
            node = self._lock_node(session, found.node_id)  # node first, then the command
            row = commands.lock_command(session, request.command_id)
            was_running = row.state == "ACKNOWLEDGED"
            now = utcnow()
            commands.cancel(session, row, request.reason, now)
            if was_running and node.readiness == "REIMAGING":
                before = node_snapshot(node)
                previous = node.readiness
                set_readiness(node, "NOT_READY", "ReimageCancelled", now)
                record_changes(session, [Change(node, "ReimageCancelled", previous)], now)
                audit.record(
                    session,
                    service=SERVICE,
                    resource_kind="node",
                    resource_id=node.node_id,
                    before=before,
                    after=node_snapshot(node),
                    reason=request.reason,
                )
            return row

        return pb.CancelNodeCommandResponse(command=command_to_proto(await self._write(work)))
