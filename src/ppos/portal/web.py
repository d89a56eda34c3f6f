"""What every page handler shares: the session of a request, CSRF and Origin checks,
rendering, and the plane's errors shown with their status, code and violations."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import grpc
from jinja2 import Environment
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ppos.controlplane.client import ControlPlaneError, UnauthenticatedError
from ppos.portal.alerts import AlertBook
from ppos.portal.plane import PlaneLink

if TYPE_CHECKING:
    from ppos.portal.live import LiveHub
from ppos.portal.sessions import (
    SECURE_SESSION_COOKIE,
    SESSION_COOKIE,
    Session,
    SessionStore,
    SignInThrottle,
    same_token,
)
from ppos.portal.settings import PortalSettings

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


@dataclass
class Portal:
    """The app's state: settings, the link to the plane, sessions, templates."""

    settings: PortalSettings
    link: PlaneLink
    sessions: SessionStore
    throttle: SignInThrottle
    templates: Jinja2Templates
    environment: Environment
    hub: LiveHub
    alerts: AlertBook = field(default_factory=AlertBook)

    @property
    def cookie_name(self) -> str:
        return SECURE_SESSION_COOKIE if self.settings.secure_cookies else SESSION_COOKIE


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def session_of(request: Request, *, touch: bool = True) -> Session | None:
    portal = portal_of(request)
    return portal.sessions.get(request.cookies.get(portal.cookie_name), touch=touch)


def to_sign_in(request: Request) -> RedirectResponse:
    """Back to the sign-in page, remembering the local path that was asked for."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)


def origin_allowed(request: Request) -> bool:
    """A change must come from a page of this portal: the Origin (or, lacking it, the
    Referer) names this host; a request naming neither relies on the CSRF token."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return True
        origin = "/".join(referer.split("/", 3)[:3])
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def change_allowed(request: Request, form: FormData, session: Session) -> bool:
    token = form.get("csrf_token")
    return origin_allowed(request) and same_token(
        session.csrf_token, token if isinstance(token, str) else None
    )


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    session: Session | None = None,
) -> HTMLResponse:
    alerts = portal_of(request).alerts
    values: dict[str, Any] = {
        "session": session,
        "path": request.url.path,
        "alerts": alerts.active,
        "alerts_since": alerts.since_of,
    }
    values.update(context or {})
    return portal_of(request).templates.TemplateResponse(
        request, template, values, status_code=status_code
    )


def refused(request: Request, session: Session | None, message: str) -> HTMLResponse:
    return render(request, "refused.html", {"message": message}, status_code=403, session=session)


def plane_error(request: Request, session: Session, error: ControlPlaneError) -> Response:
    """The plane's refusal as a page; a credential the plane no longer takes ends the
    session."""
    if isinstance(error, UnauthenticatedError):
        portal_of(request).sessions.end(session.session_id)
        return to_sign_in(request)
    return render(
        request,
        "error.html",
        {"error": error, "back": back_path(request)},
        status_code=HTTP_STATUS.get(error.code, 502),
        session=session,
    )


def back_path(request: Request) -> str:
    """Where "try again" leads: this page for a read, the page the form was on for a
    change (when it was this portal's)."""
    if request.method == "GET":
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.path.startswith("/") and origin_allowed(request):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/"


def form_text(form: FormData, name: str, *, limit: int = 1024) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


PageHandler = Callable[[Request, Session], Awaitable[Response]]
ChangeHandler = Callable[[Request, Session, FormData], Awaitable[Response]]


def page(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """A page for signed-in operators; the plane's refusals become error pages."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return to_sign_in(request)
        try:
            return await handler(request, session)
        except ControlPlaneError as error:
            return plane_error(request, session, error)

    return wrapper


def change(handler: ChangeHandler) -> Callable[[Request], Awaitable[Response]]:
    """A change (POST): signed in, from this portal's own page, with the CSRF token."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return to_sign_in(request)
        form = await request.form()
        if not change_allowed(request, form, session):
            return refused(request, session, "This change did not come from this portal's page.")
        try:
            return await handler(request, session, form)
        except ControlPlaneError as error:
            return plane_error(request, session, error)

    return wrapper
