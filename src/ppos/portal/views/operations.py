"""The outbox (each command's lifecycle) and admin jobs (with their progress, live:
each running job's bar follows its WatchAdminJob stream, shared by every tab)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.portal.admin_jobs_live import follow_admin_jobs
from ppos.portal.live import live_response
from ppos.portal.plane import OperatorClients, call
from ppos.portal.sessions import Session
from ppos.portal.web import change, form_text, page, portal_of, render

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


def command_detail(clients: OperatorClients, command_id: str) -> dict[str, Any]:
    """A command and its lifecycle: every transition the plane audited for it."""
    command = clients.governance.get_command(command_id)
    audit = clients.governance.list_audit(
        resource_kind="command", resource_id=command_id, limit=LIMIT
    )
    return {"c": command, "entries": list(audit.entries)}


@page
async def command_page(request: Request, session: Session) -> Response:
    context = await call(command_detail, session.clients, request.path_params["command_id"])
    context["message"] = request.query_params.get("done", "")[:100]
    return render(request, "command.html", context, session=session)


@change
async def retry_command(request: Request, session: Session, form: FormData) -> Response:
    """RetryCommand puts a FAILED command back in line; the plane requires a reason."""
    command_id = request.path_params["command_id"]
    reason = form_text(form, "reason", limit=500)
    await call(session.clients.governance.retry_command, command_id, reason=reason)
    return RedirectResponse(f"/outbox/{quote(command_id)}?done=Retried", status_code=303)


routes = [
    Route("/outbox", outbox_page),
    Route("/outbox/{command_id}", command_page),
    Route("/outbox/{command_id}/retry", retry_command, methods=["POST"]),
    Route("/admin-jobs", admin_jobs_page),
    Route("/events/admin-jobs", admin_jobs_events),
]
