"""What governance decided and sent: decisions and outbox commands, newest first."""

from __future__ import annotations

from ppos.controlplane.core.pagination import Ident, Instant, Listing
from ppos.controlplane.core.validation import MAX_ENUM_FILTER, Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.services.governance.common import GOVERNANCE_SERVICE, Context
from ppos.controlplane.services.governance.convert import (
    command_to_proto,
    decision_to_proto,
)
from ppos.controlplane.services.governance.enums import COMMAND_STATE
from ppos.controlplane.services.governance.handler_base import HandlerBase
from ppos.controlplane.services.governance.outbox import store as outbox_store
from ppos.controlplane.services.governance.outbox.manual_retry import retry_failed_command
from ppos.controlplane.services.governance.policy import store as policy_store

DECISIONS_PAGE = Listing(
    GOVERNANCE_SERVICE + "ListDecisions", Instant("created_at"), Ident("decision_id")
)
COMMANDS_PAGE = Listing(
    GOVERNANCE_SERVICE + "ListCommands", Instant("created_at"), Ident("command_id")
)


class ActivityHandlers(HandlerBase):
    rpcs = ("ListDecisions", "ListCommands", "GetCommand", "RetryCommand")

    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: Context
    ) -> pb.ListDecisionsResponse:
        violations = Violations()
        violations.object_id("job_id", request.job_id, required=False)
        if request.policy_id:
            violations.resource_id("policy_id", request.policy_id)
        violations.region("region", request.region, required=False)
        violations.raise_if_any()
        page = self._page(
            DECISIONS_PAGE,
            request.page_size,
            request.page_token,
            {"job": request.job_id, "policy": request.policy_id, "region": request.region},
        )

        rows = await self._db.read(
            lambda session: policy_store.decision_page(
                session,
                page,
                job_id=request.job_id,
                policy_id=request.policy_id,
                region=request.region,
            )
        )
        return pb.ListDecisionsResponse(
            decisions=[decision_to_proto(r) for r in rows[: page.size]],
            next_page_token=page.next_token(rows),
        )

    async def ListCommands(
        self, request: pb.ListCommandsRequest, context: Context
    ) -> pb.ListCommandsResponse:
        violations = Violations()
        violations.object_id("target", request.target, required=False)
        violations.object_id("decision_id", request.decision_id, required=False)
        states = []
        bounded = violations.at_most("states", request.states, MAX_ENUM_FILTER)
        for index, state in enumerate(request.states if bounded else ()):
            if not COMMAND_STATE.is_known(state):
                violations.add(f"states[{index}]", f"{state} is not a command state")
            else:
                states.append(COMMAND_STATE.to_name(state))
        violations.raise_if_any()
        page = self._page(
            COMMANDS_PAGE,
            request.page_size,
            request.page_token,
            {"states": sorted(states), "target": request.target, "decision": request.decision_id},
        )

        rows = await self._db.read(
            lambda session: outbox_store.command_page(
                session,
                page,
                states=states,
                target=request.target,
                decision_id=request.decision_id,
            )
        )
        return pb.ListCommandsResponse(
            commands=[command_to_proto(r) for r in rows[: page.size]],
            next_page_token=page.next_token(rows),
        )

    async def GetCommand(
        self, request: pb.GetCommandRequest, context: Context
    ) -> pb.GetCommandResponse:
        violations = Violations()
        violations.object_id("command_id", request.command_id)
        violations.raise_if_any()

        row = await self._db.read(lambda session: outbox_store.command(session, request.command_id))
        return pb.GetCommandResponse(command=command_to_proto(row))

    async def RetryCommand(
        self, request: pb.RetryCommandRequest, context: Context
    ) -> pb.RetryCommandResponse:
        violations = Violations()
        violations.object_id("command_id", request.command_id)
        violations.reason("reason", request.reason)
        violations.raise_if_any()

        row = await self._write(
            lambda session: retry_failed_command(session, request.command_id, request.reason)
        )
        self._on_commands()
        return pb.RetryCommandResponse(command=command_to_proto(row))
