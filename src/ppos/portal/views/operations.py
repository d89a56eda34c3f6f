"""The outbox (each command's lifecycle) and admin jobs (with their progress, live:
each running job's bar follows its WatchAdminJob stream, shared by every tab)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.portal.admin_jobs_live import follow_admin_jobs
from ppos.portal.live import live_response
from ppos.portal.plane import call
from ppos.portal.sessions import Session
from ppos.portal.web import page, portal_of, render

LIMIT = 200
COMMAND_STATES = [name.removeprefix("COMMAND_STATE_") for name in res.CommandState.keys()][1:]  # noqa: SIM118 - an enum wrapper


@page
async def outbox_page(request: Request, session: Session) -> Response:
    state = request.query_params.get("state", "").upper()
    states = [res.CommandState.Value("COMMAND_STATE_" + state)] if state in COMMAND_STATES else []
    reply = await call(session.clients.governance.list_commands, states=states, limit=LIMIT)
    return render(
        request,
        "outbox.html",
        {
            "commands": list(reply.commands),
            "state": state if states else "",
            "states": COMMAND_STATES,
            "limit": LIMIT,
        },
        session=session,
    )


@page
async def admin_jobs_page(request: Request, session: Session) -> Response:
    reply = await call(session.clients.governance.list_admin_jobs, limit=LIMIT)
    return render(
        request, "admin_jobs.html", {"jobs": list(reply.jobs), "limit": LIMIT}, session=session
    )


async def admin_jobs_events(request: Request) -> Response:
    hub = portal_of(request).hub
    key = "admin-jobs"

    async def read(session: Session) -> dict[str, Any]:
        reply = await call(session.clients.governance.list_admin_jobs, limit=LIMIT)
        return {"jobs": follow_admin_jobs(hub, key, reply.jobs), "limit": LIMIT}

    # The audit stream wakes the table when a job is started or cancelled.
    return live_response(request, key, "_admin_jobs_table.html", "admin-jobs", read, (hub.audit,))


routes = [
    Route("/outbox", outbox_page),
    Route("/admin-jobs", admin_jobs_page),
    Route("/events/admin-jobs", admin_jobs_events),
]
