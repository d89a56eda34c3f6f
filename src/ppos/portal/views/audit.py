"""The audit log: pages through ListAuditEntries, and new entries live.

The last page of a filter is live: the portal's one WatchAuditEntries stream keeps
the latest entries, and each tab is sent the rows after the last one it has (its
page says which), appended to its table. Earlier pages are history and stay still.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ppos.portal.live import CUT, EXPIRED
from ppos.portal.plane import call
from ppos.portal.sessions import Session
from ppos.portal.web import page, portal_of, render, session_of

AUDIT_PAGE = 100


def _filters(request: Request) -> tuple[int, str, str]:
    after = request.query_params.get("after", "0")
    kind = request.query_params.get("kind", "")[:64]
    resource = request.query_params.get("resource", "")[:256]
    return (int(after) if after.isdigit() and len(after) < 19 else 0), kind, resource


@page
async def audit_page(request: Request, session: Session) -> Response:
    after, kind, resource = _filters(request)
    reply = await call(
        session.clients.governance.list_audit,
        after_audit_id=after,
        resource_kind=kind,
        resource_id=resource,
        page_size=AUDIT_PAGE,
        limit=AUDIT_PAGE,
    )
    entries = list(reply.entries)
    more = live = ""
    last = entries[-1].audit_id if entries else after
    if reply.has_more and entries:
        more = urlencode({"after": last, "kind": kind, "resource": resource})
    else:
        live = urlencode({"after": last, "kind": kind, "resource": resource})
    context = {"entries": entries, "kind": kind, "resource": resource, "more": more, "live": live}
    return render(request, "audit.html", context, session=session)


async def _rows(
    request: Request, session: Session, after: int, kind: str, resource: str
) -> AsyncIterator[dict[str, str]]:
    portal = portal_of(request)
    hub = portal.hub
    template = portal.environment.get_template("_audit_rows.html")
    hub.audit.start_after(after)

    async def read(_: Session) -> dict[str, Any]:
        return {"generation": hub.audit.generation}

    topic, subscriber = hub.subscribe(("audit", kind, resource), read, session, (hub.audit,))
    try:
        while True:
            update = await subscriber.queue.get()
            if update is EXPIRED:
                yield {"event": "expired", "data": "signed out"}
                return
            if update is CUT:
                return
            entries = hub.audit.after(after, kind=kind, resource=resource)
            if entries:
                after = entries[-1].audit_id
                yield {"event": "audit", "data": template.render(entries=entries)}
    finally:
        hub.unsubscribe(topic, subscriber)


async def audit_events(request: Request) -> Response:
    session = session_of(request, touch=False)
    if session is None:
        return Response("signed out", status_code=401)
    after, kind, resource = _filters(request)
    return EventSourceResponse(
        _rows(request, session, after, kind, resource), ping=15, send_timeout=10
    )


routes = [
    Route("/audit", audit_page),
    Route("/events/audit", audit_events),
]
