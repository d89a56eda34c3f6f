"""Sign-in and sign-out: the operator's credential exchanged for a server-side session.

The credential is posted once (a password field, never a URL), checked with one call
to the plane, and kept only in the session's clients in memory. The browser gets an
opaque session id. The sign-in form carries its own anti-forgery token (a cookie and
a field that must match), failed attempts are throttled per client address.
"""

from __future__ import annotations

import logging
import re
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ppos.controlplane.client import (
    ControlPlaneError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from ppos.portal.plane import call, role_of
from ppos.portal.sessions import Session, same_token
from ppos.portal.web import (
    Portal,
    change_allowed,
    form_text,
    origin_allowed,
    portal_of,
    refused,
    render,
    session_of,
)

log = logging.getLogger("ppos.portal.auth")
SIGN_IN_COOKIE = "ppos_signin"
# What a bearer credential may hold (RFC 6750 b64token), as the client library checks.
_CREDENTIAL = re.compile(r"^[A-Za-z0-9._~+/=-]{1,4096}$")
_OPERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def local_target(value: str) -> str:
    """Where to go after signing in: a path of this portal, never another site."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def sign_in_page(
    request: Request, *, error: str = "", status_code: int = 200, operator: str = ""
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        {
            "signin_token": token,
            "error": error,
            "operator": operator,
            "next": local_target(request.query_params.get("next", "/")),
        },
        status_code=status_code,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=portal_of(request).settings.secure_cookies,
        path="/signin",
        max_age=3600,
    )
    return response


async def sign_in_form(request: Request) -> Response:
    if session_of(request) is not None:
        return RedirectResponse("/", status_code=303)
    return sign_in_page(request)


async def sign_in(request: Request) -> Response:
    portal = portal_of(request)
    client = request.client.host if request.client else "unknown"
    form = await request.form()
    wait = portal.throttle.blocked_for(client)
    if wait > 0:
        return sign_in_page(
            request,
            error=f"Too many failed sign-ins; try again in {int(wait) + 1} s.",
            status_code=429,
        )
    given = form_text(form, "signin_token", limit=100)
    if not origin_allowed(request) or not same_token(
        request.cookies.get(SIGN_IN_COOKIE, ""), given
    ):
        return refused(request, None, "The sign-in form was not this portal's own; reload it.")
    credential = form_text(form, "credential", limit=5000)
    operator = form_text(form, "operator", limit=100)
    if operator and not _OPERATOR.fullmatch(operator):
        return sign_in_page(
            request,
            error="Your name: 1 to 64 letters, digits, '.', '_', '@' or '-'.",
            status_code=400,
        )
    if not _CREDENTIAL.fullmatch(credential):
        portal.throttle.failed(client)
        return sign_in_page(
            request, error="That is not a valid credential.", status_code=400, operator=operator
        )
    clients = portal.link.clients_for(credential, operator)
    try:
        role = await call(role_of, clients)
    except (UnauthenticatedError, PermissionDeniedError):
        portal.throttle.failed(client)
        log.info("portal sign-in refused (client %s)", client)
        return sign_in_page(
            request,
            error="The control plane did not accept that credential.",
            status_code=401,
            operator=operator,
        )
    except ControlPlaneError as error:
        return sign_in_page(
            request,
            error=f"The control plane could not be asked: {error.one_line()}",
            status_code=503,
            operator=operator,
        )
    portal.throttle.succeeded(client)
    session = portal.sessions.create(operator or "operator", clients, role)
    log.info("portal sign-in: operator %s (%s)", session.operator, role)
    return signed_in(portal, session, local_target(form_text(form, "next")))


def signed_in(portal: Portal, session: Session, target: str) -> Response:
    """The redirect that hands the browser its session id (and nothing else)."""
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        portal.cookie_name,
        session.session_id,
        httponly=True,
        samesite="strict",
        secure=portal.settings.secure_cookies,
        path="/",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/signin")
    return response


async def sign_out(request: Request) -> Response:
    portal = portal_of(request)
    session = session_of(request)
    if session is not None:
        form = await request.form()
        if not change_allowed(request, form, session):
            return refused(request, session, "This sign-out did not come from this portal.")
        portal.sessions.end(session.session_id)
        log.info("portal sign-out: operator %s", session.operator)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(portal.cookie_name, path="/", secure=portal.settings.secure_cookies)
    return response


routes = [
    Route("/signin", sign_in_form, methods=["GET"]),
    Route("/signin", sign_in, methods=["POST"]),
    Route("/signout", sign_out, methods=["POST"]),
]
