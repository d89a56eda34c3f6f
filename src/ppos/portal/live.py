"""Live parts of pages: a server-sent event stream that re-renders one fragment.

Each tick reads what the fragment shows (as the tab's operator) and sends it
rendered; htmx's SSE extension swaps it in. The stream ends when the session does
(an `expired` event first), and a tab that stops reading is dropped by the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from ppos.controlplane.client import ControlPlaneError
from ppos.portal.sessions import Session
from ppos.portal.web import portal_of, session_of

Read = Callable[[Session], Awaitable[dict[str, Any]]]


async def _ticks(
    request: Request, session: Session, template_name: str, event: str, read: Read
) -> AsyncIterator[dict[str, str]]:
    portal = portal_of(request)
    template = portal.environment.get_template(template_name)
    error_template = portal.environment.get_template("_live_error.html")
    while True:
        if portal.sessions.get(session.session_id, touch=False) is None:
            yield {"event": "expired", "data": "signed out"}
            return
        try:
            context = await read(session)
        except ControlPlaneError as error:
            yield {"event": event, "data": error_template.render(error=error)}
        else:
            yield {"event": event, "data": template.render(session=session, **context)}
        await asyncio.sleep(portal.settings.live_interval)


def live_response(request: Request, template_name: str, event: str, read: Read) -> Response:
    """The event stream of `template_name` for the request's session (401 without one)."""
    session = session_of(request, touch=False)
    if session is None:
        return Response("signed out", status_code=401)
    return EventSourceResponse(
        _ticks(request, session, template_name, event, read), ping=15, send_timeout=10
    )
