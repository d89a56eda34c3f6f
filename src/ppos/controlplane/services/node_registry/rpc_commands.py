"""Operator (and peer) RPCs on node commands: re-image, read, list, cancel.

Governance calls ReimageNode and CordonNode as a peer service with a
PREFLIGHT_JWT; the command records the service as its issuer and the
principal it acted for.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
from ppos.controlplane.services.node_registry import commands, store
from ppos.controlplane.services.node_registry.command_actions import cancel_command
from ppos.controlplane.services.node_registry.convert import (
    COMMAND_STATE_NAME,
    command_to_proto,
)
from ppos.controlplane.services.node_registry.deps import NodeRegistryDeps
from ppos.controlplane.services.node_registry.rpc_base import Context
from ppos.controlplane.services.node_registry.signals import CommandSignals
from ppos.controlplane.services.node_registry.unit_of_work import NodeWrites

DEFAULT_REIMAGE_TIMEOUT = 1800.0
MIN_REIMAGE_TIMEOUT = 60.0
MAX_REIMAGE_TIMEOUT = 86400.0
COMMANDS_PAGE = Listing(
    "/ppos.controlplane.noderegistry.v1.NodeRegistryService/ListNodeCommands", Ident("command_id")
)


class CommandRpcs:
    def __init__(self, deps: NodeRegistryDeps, write: NodeWrites, signals: CommandSignals) -> None:
        self._deps = deps
        self._write = write
        self._signals = signals

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

        row = await self._deps.db.read(lambda s: store.get_command(s, request.command_id))
        return pb.GetNodeCommandResponse(command=command_to_proto(row))

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

        node_id, wanted = request.node_id, sorted(states)
        rows = await self._deps.db.read(
            lambda s: store.list_commands(s, node_id, wanted, before, size)
        )
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

        command_id, reason = request.command_id, request.reason
        row = await self._write(lambda s: cancel_command(s, command_id, reason, utcnow()))
        return pb.CancelNodeCommandResponse(command=command_to_proto(row))
