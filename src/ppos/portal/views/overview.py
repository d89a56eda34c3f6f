"""Overview: per region sync and node health, versions, outbox and admin jobs, live.

The page renders the panel once (so it reads without JavaScript); an event stream
then sends the panel re-rendered, swapped in by htmx. The node sections come from
the portal's one WatchNodes stream (every node in memory) once its snapshot is in,
so a change of a node costs no call; the panel is re-rendered when a node or the
audit log changes (at most once per `live_interval`) and every `fallback` seconds
for what no stream reports (sync counters, outbox depth).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ppos.controlplane.client import ControlPlaneError
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.portal.admin_jobs_live import follow_admin_jobs
from ppos.portal.alerts import QUARANTINE_WINDOW_SECONDS, Alert, Observed, evaluate
from ppos.portal.charts import region_charts
from ppos.portal.live import live_response
from ppos.portal.plane import OperatorClients, call
from ppos.portal.sessions import Session
from ppos.portal.upstreams import READINESS_SHOWN, NodeWatch
from ppos.portal.web import Portal, page, portal_of, render

# A bounded read per section: the overview counts up to this many and says "or more".
SECTION_LIMIT = 1000
FAILED_SHOWN = 10  # failing deliveries detailed on the overview (all on the outbox page)
NOT_READY = (
    node_pb2.READINESS_NOT_READY,
    node_pb2.READINESS_DRAINING,
    node_pb2.READINESS_REIMAGING,
    node_pb2.READINESS_LOST,
)  # UNSPECIFIED is not a filter value: the plane refuses it


@dataclass
class Overview:
    """What the panel shows; each section has its value or the plane's error."""

    statuses: list[Any] = field(default_factory=list)
    leader: Any = None  # the sync scheduler's LeaderLease (None: never led)
    leader_read: bool = False
    regions: dict[str, Counter[str]] = field(default_factory=dict)
    versions: list[node_pb2.VersionCount] = field(default_factory=list)
    outbox_open: int = 0
    outbox_failed: int = 0
    failed_commands: list[res.OutboxCommand] = field(default_factory=list)
    oldest_open_command: float | None = None
    failed_admin_jobs: list[res.AdminJob] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
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


def watched_versions(watch: NodeWatch) -> list[node_pb2.VersionCount]:
    """The container-version rollup of the watched nodes (as GetVersionRollup counts)."""
    counts: dict[tuple[str, str, str], node_pb2.VersionCount] = {}
    for node in watch.nodes.values():
        container = node.status.container
        key = (node.spec.region, container.image, container.digest)
        count = counts.get(key)
        if count is None:
            count = counts[key] = node_pb2.VersionCount(region=key[0], container=container)
        count.node_count += 1
        count.ready_count += node.status.readiness == node_pb2.READINESS_READY
    return [counts[key] for key in sorted(counts)]


def gather(clients: OperatorClients, watch: NodeWatch | None = None) -> Overview:
    """Every section, each on its own: one failing does not blank the others. The node
    sections come from `watch` once it holds a snapshot, from two calls otherwise."""
    data = Overview()
    watched = watch is not None and watch.synced and watch.running  # else stale

    def sync() -> None:
        reply = clients.sync.list_statuses_reply()
        data.statuses = list(reply.statuses)
        data.leader = reply.leader if reply.HasField("leader") else None
        data.leader_read = True

    def versions() -> None:
        if watch is not None and watched:
            data.versions = watched_versions(watch)
        else:
            data.versions = clients.nodes.version_rollup()

    def nodes() -> None:
        if watch is not None and watched:
            data.regions = watch.readiness_by_region()
        else:
            data.regions = node_counts(clients, data.versions)

    def outbox() -> None:
        waiting = clients.governance.list_commands(
            states=[res.COMMAND_STATE_PENDING, res.COMMAND_STATE_SENT], limit=SECTION_LIMIT
        ).commands
        data.outbox_open = len(waiting)
        made = [c.create_time.ToMilliseconds() / 1000 for c in waiting if c.HasField("create_time")]
        data.oldest_open_command = min(made, default=None)
        failed = clients.governance.list_commands(
            states=[res.COMMAND_STATE_FAILED], limit=SECTION_LIMIT
        ).commands
        data.outbox_failed = len(failed)
        data.failed_commands = list(failed[:FAILED_SHOWN])

    def admin_jobs() -> None:
        running = (
            res.ADMIN_JOB_STATE_PENDING,
            res.ADMIN_JOB_STATE_RUNNING,
            res.ADMIN_JOB_STATE_CANCELLING,
        )
        data.admin_jobs = list(clients.governance.list_admin_jobs(states=running, limit=50).jobs)
        failed = clients.governance.list_admin_jobs(states=[res.ADMIN_JOB_STATE_FAILED], limit=50)
        data.failed_admin_jobs = list(failed.jobs)

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


async def current_overview(portal: Portal, session: Session) -> Overview:
    """The overview's sections, the series fed, the alerts evaluated."""
    hub = portal.hub
    data = await call(gather, session.clients, hub.nodes)
    for status in data.statuses:
        hub.sync.record(status)
    for region, counts in data.regions.items():
        hub.nodes.readiness.record(region, tuple(float(counts[r]) for r in READINESS_SHOWN))
    data.charts = region_charts(hub.sync.series, hub.nodes.readiness)
    seen = Observed(
        statuses=data.statuses,
        regions=data.regions,
        failed_commands=data.failed_commands,
        quarantine_growth=hub.sync.growth(QUARANTINE_WINDOW_SECONDS),
        oldest_open_command=data.oldest_open_command,
        failed_admin_jobs=data.failed_admin_jobs,
        leader=data.leader,
        leader_read=data.leader_read,
    )
    data.alerts = portal.alerts.update(evaluate(seen, time.time()))
    return data


@page
async def overview_page(request: Request, session: Session) -> Response:
    data = await current_overview(portal_of(request), session)
    return render(request, "overview.html", {"o": data}, session=session)


async def overview_events(request: Request) -> Response:
    portal = portal_of(request)
    hub = portal.hub

    async def read(session: Session) -> dict[str, Any]:
        data = await current_overview(portal, session)
        data.admin_jobs = follow_admin_jobs(hub, "overview", data.admin_jobs)
        return {"o": data, "alerts_since": portal.alerts.since_of}

    upstreams = (hub.nodes, hub.audit, hub.sync)
    return live_response(request, "overview", "_overview_panel.html", "overview", read, upstreams)


routes = [
    Route("/", overview_page),
    Route("/events/overview", overview_events),
]
