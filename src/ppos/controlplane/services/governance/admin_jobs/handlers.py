"""Admin job RPCs: start, get, list, cancel, and a progress stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from ppos.controlplane.core.errors import (
    Unavailable,
)
from ppos.controlplane.core.pagination import Ident, Instant, Listing
from ppos.controlplane.core.validation import MAX_ENUM_FILTER, Violations
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.security.principal import current_principal, current_request_id
from ppos.controlplane.services.governance.admin_jobs import store
from ppos.controlplane.services.governance.admin_jobs.cancel import cancel_admin_job
from ppos.controlplane.services.governance.admin_jobs.kinds import (
    validate_parameters,
)
from ppos.controlplane.services.governance.admin_jobs.start import start_admin_job
from ppos.controlplane.services.governance.common import (
    GOVERNANCE_SERVICE,
    Context,
    stopped_within,
)
from ppos.controlplane.services.governance.convert import admin_job_to_proto
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.enums import (
    ADMIN_JOB_KIND,
    ADMIN_JOB_STATE,
    TERMINAL_ADMIN_JOB_STATES,
)
from ppos.controlplane.services.governance.handler_base import HandlerBase, nothing
from ppos.controlplane.services.governance.idempotency import (
    IdempotentCall,
    validate_request_id,
)
from ppos.controlplane.services.governance.models import AdminJobRow

ADMIN_JOBS_PAGE = Listing(
    GOVERNANCE_SERVICE + "ListAdminJobs", Instant("created_at"), Ident("admin_job_id")
)


class AdminJobHandlers(HandlerBase):
    rpcs = ("StartAdminJob", "GetAdminJob", "ListAdminJobs", "CancelAdminJob", "WatchAdminJob")

    def __init__(self, deps: GovernanceDeps, on_job: Callable[[], None] = nothing) -> None:
        super().__init__(deps)
        self._on_job = on_job  # wakes this replica's admin job runner

    async def StartAdminJob(
        self, request: pb.StartAdminJobRequest, context: Context
    ) -> pb.StartAdminJobResponse:
        violations = Violations()
        validate_request_id(violations, request.request_id, required=False)
        if not ADMIN_JOB_KIND.is_known(request.kind):
            violations.add(
                "kind", f"must be one of {', '.join(ADMIN_JOB_KIND.names())}, got {request.kind}"
            )
        else:
            validate_parameters(
                violations, ADMIN_JOB_KIND.to_name(request.kind), dict(request.parameters)
            )
        violations.raise_if_any()
        call = IdempotentCall.of("StartAdminJob", request)
        kind = ADMIN_JOB_KIND.to_name(request.kind)
        parameters = dict(request.parameters)
        actor = current_principal.get()
        request_id = current_request_id.get()
        row, created = await self._write(
            lambda session: start_admin_job(session, call, kind, parameters, actor, request_id)
        )
        if created:
            self._on_job()
        return pb.StartAdminJobResponse(job=admin_job_to_proto(row))

    async def _read_job(self, job_id: str) -> AdminJobRow:
        violations = Violations()
        violations.object_id("admin_job_id", job_id)
        violations.raise_if_any()

        return await self._db.read(lambda session: store.admin_job(session, job_id))

    async def GetAdminJob(
        self, request: pb.GetAdminJobRequest, context: Context
    ) -> pb.GetAdminJobResponse:
        return pb.GetAdminJobResponse(
            job=admin_job_to_proto(await self._read_job(request.admin_job_id))
        )

    async def ListAdminJobs(
        self, request: pb.ListAdminJobsRequest, context: Context
    ) -> pb.ListAdminJobsResponse:
        violations = Violations()
        kinds, states = [], []
        bounded_kinds = violations.at_most("kinds", request.kinds, MAX_ENUM_FILTER)
        bounded_states = violations.at_most("states", request.states, MAX_ENUM_FILTER)
        for index, kind in enumerate(request.kinds if bounded_kinds else ()):
            if ADMIN_JOB_KIND.is_known(kind):
                kinds.append(ADMIN_JOB_KIND.to_name(kind))
            else:
                violations.add(f"kinds[{index}]", f"{kind} is not an admin job kind")
        for index, state in enumerate(request.states if bounded_states else ()):
            if ADMIN_JOB_STATE.is_known(state):
                states.append(ADMIN_JOB_STATE.to_name(state))
            else:
                violations.add(f"states[{index}]", f"{state} is not an admin job state")
        violations.raise_if_any()
        page = self._page(
            ADMIN_JOBS_PAGE,
            request.page_size,
            request.page_token,
            {"kinds": sorted(kinds), "states": sorted(states)},
        )

        rows = await self._db.read(
            lambda session: store.admin_job_page(session, page, kinds=kinds, states=states)
        )
        return pb.ListAdminJobsResponse(
            jobs=[admin_job_to_proto(r) for r in rows[: page.size]],
            next_page_token=page.next_token(rows),
        )

    async def CancelAdminJob(
        self, request: pb.CancelAdminJobRequest, context: Context
    ) -> pb.CancelAdminJobResponse:
        violations = Violations()
        violations.object_id("admin_job_id", request.admin_job_id)
        violations.reason("reason", request.reason)
        violations.raise_if_any()

        row = await self._write(
            lambda session: cancel_admin_job(session, request.admin_job_id, request.reason)
        )
        return pb.CancelAdminJobResponse(job=admin_job_to_proto(row))

    async def WatchAdminJob(
        self, request: pb.WatchAdminJobRequest, context: Context
    ) -> AsyncIterator[pb.WatchAdminJobResponse]:
        row = await self._read_job(request.admin_job_id)
        stop = self._deps.shutdown
        seen = -1
        while True:
            if row.resource_version != seen:
                seen = row.resource_version
                yield pb.WatchAdminJobResponse(job=admin_job_to_proto(row))
            if row.state in TERMINAL_ADMIN_JOB_STATES:
                return
            if await stopped_within(stop, self._settings.governance_watch_poll):
                raise Unavailable(
                    "server shutting down: call WatchAdminJob again to follow the job "
                    f"{row.admin_job_id} (its progress is kept)",
                    reason="SHUTTING_DOWN",
                )
            row = await self._read_job(request.admin_job_id)
