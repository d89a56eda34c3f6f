"""Overview: per region sync and node health, versions, outbox and admin jobs, live.

The page renders the panel once (so it reads without JavaScript); an event stream
then sends the panel re-rendered every `live_interval` seconds, swapped in by htmx.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ppos.controlplane.client import ControlPlaneError
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.portal.live import live_response
from ppos.portal.plane import OperatorClients, call
from ppos.portal.sessions import Session
from ppos.portal.web import page, render

# A bounded read per section: the overview counts up to this many and says "or more".
SECTION_LIMIT = 1000
NOT_READY = (
    node_pb2.READINESS_NOT_READY,
    node_pb2.READINESS_DRAINING,
    node_pb2.READINESS_REIMAGING,
    node_pb2.READINESS_LOST,
    node_pb2.READINESS_UNSPECIFIED,
)


@dataclass
class Overview:
    """What the panel shows; each section has its value or the plane's error."""

    statuses: list[Any] = field(default_factory=list)
    regions: dict[str, Counter[str]] = field(default_factory=dict)
    versions: list[node_pb2.VersionCount] = field(default_factory=list)
    outbox_open: int = 0
    outbox_failed: int = 0
    admin_jobs: list[res.AdminJob] = field(default_factory=list)
    errors: dict[str, ControlPlaneError] = field(default_factory=dict)
    limit: int = SECTION_LIMIT


def node_counts(
    clients: OperatorClients, versions: list[node_pb2.VersionCount]
) -> dict[str, Counter[str]]:
    """Nodes by readiness per region: READY from the version rollup, the others listed
    (a healthy fleet has few of them, so this stays cheap at 10,000 nodes)."""
    regions: dict[str, Counter[str]] = defaultdict(Counter)
    for count in versions:
        regions[count.region]["READY"] += count.ready_count
    reply = clients.nodes.list_nodes_page(
        node_pb2.NodeFilter(readiness=list(NOT_READY)), page_size=SECTION_LIMIT
    )
    for node in reply.nodes:
        name = node_pb2.Readiness.Name(node.status.readiness).removeprefix("READINESS_")
        regions[node.spec.region][name] += 1
    return dict(sorted(regions.items()))


def gather(clients: OperatorClients) -> Overview:
    """Every section, each on its own: one failing does not blank the others."""
    data = Overview()

    def sync() -> None:
        data.statuses = clients.sync.list_statuses()

    def versions() -> None:
        data.versions = clients.nodes.version_rollup()

    def nodes() -> None:
        data.regions = node_counts(clients, data.versions)

    def outbox() -> None:
        data.outbox_open = _count_commands(
            clients, res.COMMAND_STATE_PENDING, res.COMMAND_STATE_SENT
        )
        data.outbox_failed = _count_commands(clients, res.COMMAND_STATE_FAILED)

    def admin_jobs() -> None:
        running = (
            res.ADMIN_JOB_STATE_PENDING,
            res.ADMIN_JOB_STATE_RUNNING,
            res.ADMIN_JOB_STATE_CANCELLING,
        )
        data.admin_jobs = list(clients.governance.list_admin_jobs(states=running, limit=50).jobs)

    for name, read in (
        ("sync", sync),
        ("versions", versions),
        ("nodes", nodes),
        ("outbox", outbox),
        ("admin_jobs", admin_jobs),
    ):
        try:
            read()
        except ControlPlaneError as error:
            data.errors[name] = error
    return data


def _count_commands(clients: OperatorClients, *states: res.CommandState.ValueType) -> int:
    return len(clients.governance.list_commands(states=states, limit=SECTION_LIMIT).commands)


@page
async def overview_page(request: Request, session: Session) -> Response:
    data = await call(gather, session.clients)
    return render(request, "overview.html", {"o": data}, session=session)


async def _overview_context(session: Session) -> dict[str, Any]:
    return {"o": await call(gather, session.clients)}


async def overview_events(request: Request) -> Response:
    return live_response(request, "overview", "_overview_panel.html", "overview", _overview_context)


routes = [
    Route("/", overview_page),
    Route("/events/overview", overview_events),
]
