"""The portal as an ASGI app, and the ways to run it (alone, or in another program).

app = create_app(PortalSettings(plane_address="127.0.0.1:50051"))
running = await start_portal("127.0.0.1:8080", "127.0.0.1:50051")  # the demo's way
...
await running.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ppos.portal import filters
from ppos.portal.assets import find_node_modules, missing_assets, vendor_path
from ppos.portal.live import LiveHub
from ppos.portal.plane import PlaneLink
from ppos.portal.sessions import SessionStore, SignInThrottle
from ppos.portal.settings import PortalSettings
from ppos.portal.views import (
    alerts,
    audit,
    auth,
    governance,
    nodes,
    operations,
    overview,
    policies,
    sync,
)
from ppos.portal.web import Portal

log = logging.getLogger("ppos.portal")
HERE = Path(__file__).parent
# No inline script or style anywhere: every script is a file of this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" would make Origin "null"
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the security headers to every response (pages, files, event streams)."""

    def __init__(self, app: ASGIApp, *, tls: bool) -> None:
        self.app = app
        self.headers = list(SECURITY_HEADERS)
        if tls:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name for name, _ in headers}
                headers += [(k, v) for k, v in self.headers if k not in present]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def template_environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["ts"] = filters.timestamp
    environment.filters["epoch"] = filters.epoch
    environment.filters["dur"] = filters.duration
    environment.filters["enum"] = filters.enum_name
    environment.filters["inert"] = filters.inert
    environment.filters["enumof"] = filters.enum_field
    return environment


async def vendor_file(request: Request) -> Response:
    path = vendor_path(request.app.state.node_modules, request.path_params["name"])
    if path is None:
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(path, headers={"cache-control": "public, max-age=3600"})


def create_app(settings: PortalSettings, *, link: PlaneLink | None = None) -> Starlette:
    """The portal for the plane at `settings.plane_address` (or over `link`)."""
    environment = template_environment()
    sessions = SessionStore(
        idle_seconds=settings.idle_seconds, absolute_seconds=settings.absolute_seconds
    )
    portal = Portal(
        settings=settings,
        link=link
        or PlaneLink(
            settings.plane_address,
            ca_file=settings.plane_ca_file,
            cert_file=settings.plane_cert_file,
            key_file=settings.plane_key_file,
        ),
        sessions=sessions,
        throttle=SignInThrottle(limit=settings.sign_in_attempts),
        templates=Jinja2Templates(env=environment),
        environment=environment,
        hub=LiveHub(sessions, settings.live_interval),
    )
    routes = [
        *auth.routes,
        *overview.routes,
        *nodes.routes,
        *sync.routes,
        *governance.routes,
        *audit.routes,
        *alerts.routes,
        *policies.routes,
        *operations.routes,
        Route("/static/vendor/{name}", vendor_file),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.portal = portal
    app.state.node_modules = settings.node_modules or find_node_modules()
    missing = missing_assets(app.state.node_modules)
    if missing:
        log.warning("portal: browser libraries missing (run make setup): %s", missing)
    app.add_middleware(SecurityHeaders, tls=settings.secure_cookies)
    return app


@dataclass
class RunningPortal:
    """A portal serving in this event loop; `url` is where to point a browser."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str
    app: Starlette

    async def stop(self) -> None:
        self.server.should_exit = True
        await portal_of_app(self.app).hub.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, timeout=10)
        portal_of_app(self.app).link.close()


def portal_of_app(app: Starlette) -> Portal:
    portal: Portal = app.state.portal
    return portal


def _bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), int(port)))
    return sock


async def start_portal(
    address: str,
    plane_address: str,
    *,
    settings: PortalSettings | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    **overrides: Any,
) -> RunningPortal:
    """Serve the portal on `address` (`host:port`, port 0 for any free one) for the plane
    at `plane_address`, in the running event loop; returns once it accepts connections.
    `overrides` are `PortalSettings` fields (idle_seconds=..., live_interval=...)."""
    base = settings or PortalSettings()
    tls = tls_cert is not None
    chosen = dataclasses.replace(
        base, plane_address=plane_address, secure_cookies=base.secure_cookies or tls, **overrides
    )
    app = create_app(chosen)
    sock = _bind(address)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        timeout_graceful_shutdown=2,
        # Longer than a browser's (and httpx's) idle reuse of a connection, so a request
        # is never sent on a connection the server is closing.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
        await asyncio.sleep(0.02)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{port}/"
    return RunningPortal(server=server, task=task, url=url, app=app)


@contextlib.asynccontextmanager
async def portal_serving(
    address: str, plane_address: str, **kwargs: Any
) -> AsyncIterator[RunningPortal]:
    """`start_portal` as an async context: stopped when the block ends."""
    running = await start_portal(address, plane_address, **kwargs)
    try:
        yield running
    finally:
        await running.stop()
