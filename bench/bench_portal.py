"""The portal: what a page and a live update cost, as ratios to a bare Starlette
response in the same run.

A control plane (`ppos-control-plane serve`, SQLite) with a fleet of nodes; the
portal (`ppos-portal`) in its own process, pointed at it; and a bare Starlette app
under uvicorn (bench/portal_bare.py) as the baseline, in a third. Measured from
this process:

- page render: GET /nodes (a page of 50 of the fleet) one after another, its median
  latency and the portal's CPU per page, against GET / of the bare app (latency,
  CPU per response) and against the bare ListNodes call of the same page that the
  page wraps;
- SSE fan-out: N tabs (EventSource streams, played by a Node.js process,
  bench/sse_tabs.mjs; PPOS_BENCH_SSE_CLIENT=python plays them as asyncio tasks of
  this process, whose one core saturates first) on the same nodes page while one of its
  nodes heartbeats `rate` times a second, each heartbeat changing its slots in use,
  and the rest of the fleet makes `background` changes a second (each a WatchNodes
  event the portal receives and that wakes the view):
  the change-to-tab latency (a tab's receive time minus when the heartbeat that the
  received table shows returned) p50/p99 over every event every tab received, and
  the portal's CPU per delivered event; against the bare app sending the same
  number of same-sized events to N streams at the same rate. Also how many
  WatchNodes streams the plane serves while the N tabs are open (the plane's
  `ppos_watch_subscribers`): the portal holds one, however many tabs. The clock
  starts once that stream is open and the views have settled (a snapshot of
  10,000 nodes takes the portal seconds on a loaded machine), and how many times
  a tab's stream was cut (the Node.js tabs reconnect, as a browser does) is given.

Smoke mode is short and small (it proves the benchmark runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench.harness import Mode, Result
from bench.processes import BIN, cpu_seconds, free_port, serve_control_plane
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc

DIGEST = "sha256:" + "c" * 64
CAPACITY = 8
# Who plays the 200 browser tabs: "node" (bench/sse_tabs.mjs, keeps up) or "python"
# (asyncio tasks of this process, which saturate before the portal does).
SSE_CLIENT = os.environ.get("PPOS_BENCH_SSE_CLIENT", "node")
PAGE = 50


@dataclass(frozen=True)
class Plan:
    nodes: int
    tabs: int
    page_seconds: float
    fanout_seconds: float
    rate: float  # heartbeat changes per second of the watched node
    background: float  # heartbeat changes per second of the rest of the fleet


PLANS = {
    "smoke": Plan(
        nodes=60, tabs=10, page_seconds=1.0, fanout_seconds=3.0, rate=4.0, background=20.0
    ),
    "full": Plan(
        nodes=int(os.environ.get("PPOS_BENCH_PORTAL_NODES", "10000")),
        tabs=200,
        page_seconds=10.0,
        fanout_seconds=20.0,
        rate=4.0,
        background=200.0,
    ),
}


async def _fleet(address: str, token: str, count: int) -> list[tuple[str, str]]:
    """`count` registered, ready nodes: (node id, node credential) each."""
    operator = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.NodeRegistryServiceStub(channel)

        async def one(index: int) -> tuple[str, str]:
            enrollment = await stub.CreateEnrollment(
                pb.CreateEnrollmentRequest(region="eu-west-1", cluster=f"c{index % 8}"),
                metadata=operator,
            )
            node = await stub.EnrollNode(
                pb.EnrollNodeRequest(hostname=f"worker-{index}"),
                metadata=(("authorization", f"Bearer {enrollment.enrollment_token}"),),
            )
            metadata = (("authorization", f"Bearer {node.node_credential}"),)
            container = node_pb2.ContainerVersion(image="registry.example/w:1", digest=DIGEST)
            await stub.RegisterNode(
                pb.RegisterNodeRequest(
                    region="eu-west-1",
                    cluster=f"c{index % 8}",
                    container=container,
                    capacity_slots=CAPACITY,
                ),
                metadata=metadata,
            )
            await stub.Heartbeat(pb.HeartbeatRequest(ready=True), metadata=metadata)
            return node.node_id, node.node_credential

        made: list[tuple[str, str]] = []
        for start in range(0, count, 25):
            made += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 25))))
    return made


@contextlib.asynccontextmanager
async def _process(argv: list[str], url: str, log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A child process serving HTTP at `url` (stopped after)."""
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink)  # noqa: ASYNC220 - started once, before any load
    try:
        async with httpx.AsyncClient(timeout=2) as probe:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    await probe.get(url)
                    break
                await asyncio.sleep(0.1)
        yield child
    finally:
        child.terminate()
        child.wait(10)


async def _repeat(call: Callable[[], Awaitable[object]], seconds: float) -> list[float]:
    latencies: list[float] = []
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    return latencies


async def _sign_in(http: httpx.AsyncClient, token: str) -> None:
    form = await http.get("/signin")
    found = re.search(r'name="signin_token" value="([^"]+)"', form.text)
    assert found, form.text
    data = {"signin_token": found.group(1), "credential": token, "operator": "bench"}
    signed = await http.post("/signin", data=data)
    assert signed.status_code == 303, signed.text


async def _tab(
    http: httpx.AsyncClient, path: str, event: str, arrivals: list[tuple[float, str]]
) -> None:
    """One EventSource: each `event`'s arrival time and data, until cancelled."""
    async with http.stream("GET", path) as stream:
        buffer = ""
        async for chunk in stream.aiter_text():
            buffer += chunk.replace("\r\n", "\n")
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                if f"event: {event}" in block.split("\n"):
                    data = "\n".join(x[6:] for x in block.split("\n") if x.startswith("data: "))
                    arrivals.append((time.perf_counter(), data))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))] if ordered else float("nan")


async def _watch_subscribers(metrics_url: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(metrics_url)).text
    found = re.search(r"^ppos_watch_subscribers (\S+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


async def _fanout(
    plan: Plan,
    http: httpx.AsyncClient,
    path: str,
    event: str,
    change: Callable[[int], Awaitable[None]],
    pattern: str,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[float], int, int]:
    """N tabs on `path`; `change(k)` at `rate`; the latency of each tab's first event
    showing a change's value (k mod CAPACITY+1, `pattern`'s first group in the event)
    from that change; the number of events delivered; and how many times the server
    ended a tab's stream (cut for falling behind; the Node.js tabs reconnect and count
    them). The tabs are SSE_CLIENT's. `settle`, awaited once the tabs are connected,
    holds the clock until the server is in its steady state."""
    tabs = _node_tabs if SSE_CLIENT == "node" else _python_tabs
    async with tabs(plan, http, path, event, pattern, settle) as recording:
        changes: list[tuple[float, float, int]] = []  # (sent, returned, value)
        started = time.perf_counter()
        k = 0
        while time.perf_counter() - started < plan.fanout_seconds:
            k += 1
            sent = time.perf_counter()
            await change(k)
            changes.append((sent, time.perf_counter(), k % (CAPACITY + 1)))
            await asyncio.sleep(max(0.0, started + k / plan.rate - time.perf_counter()))
        await asyncio.sleep(2.0)  # the last change delivered
    latencies = []
    shown: dict[int, int | None] = {}  # the value each tab shows
    for arrived, value, tab in sorted(recording.arrivals):
        # Only the event that first shows a change's value delivers that change:
        # the same view is sent again when other nodes of the page change (the
        # fleet's background changes), and a re-send is no later delivery of it.
        if value is None or shown.get(tab) == value:
            continue
        shown[tab] = value
        # An event may arrive before its change's call has returned here (the bare
        # app sends before it answers): it counts from the call's start, as 0, not
        # from the same value's change a cycle before.
        before = [returned for sent, returned, v in changes if v == value and sent <= arrived]
        if before:
            latencies.append(max(0.0, arrived - before[-1]))
    return latencies, len(recording.arrivals), recording.cuts


@dataclass
class Recording:
    """Every tab's events once the tabs are told to start: (arrival, value shown, tab)."""

    arrivals: list[tuple[float, int | None, int]] = field(default_factory=list)
    cuts: int = 0  # streams the server ended (counted by the Node.js tabs only)


@contextlib.asynccontextmanager
async def _python_tabs(
    plan: Plan,
    http: httpx.AsyncClient,
    path: str,
    event: str,
    pattern: str,
    settle: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[Recording]:
    """The tabs as asyncio tasks of this process (its one core saturates first)."""
    shows = re.compile(pattern, re.S)
    per_tab: list[list[tuple[float, str]]] = [[] for _ in range(plan.tabs)]
    tasks = [asyncio.create_task(_tab(http, path, event, a)) for a in per_tab]
    await asyncio.sleep(2.0)  # every tab connected and shown the current view
    if settle is not None:
        await settle()
    for a in per_tab:
        a.clear()
    recording = Recording()
    try:
        yield recording
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for number, tab in enumerate(per_tab):
        for arrived, data in tab:
            found = shows.search(data)
            recording.arrivals.append((arrived, int(found.group(1)) if found else None, number))


@contextlib.asynccontextmanager
async def _node_tabs(
    plan: Plan,
    http: httpx.AsyncClient,
    path: str,
    event: str,
    pattern: str,
    settle: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[Recording]:
    """The tabs in a Node.js process (bench/sse_tabs.mjs), its times on this clock."""
    cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
    tabs = await asyncio.create_subprocess_exec(
        "node",
        str(Path(__file__).with_name("sse_tabs.mjs")),
        str(http.base_url).rstrip("/") + path,
        event,
        pattern,
        str(plan.tabs),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PPOS_BENCH_COOKIE": cookie},
        limit=64 * 1024 * 1024,  # the report is one line of every arrival
    )
    assert tabs.stdin is not None
    assert tabs.stdout is not None
    recording = Recording()
    try:
        ready = await asyncio.wait_for(tabs.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"sse_tabs.mjs did not connect its tabs: {ready!r}")
        await asyncio.sleep(2.0)  # every tab shown the current view, as the Python tabs
        if settle is not None:
            await settle()
        tabs.stdin.write(b"start\n")
        await tabs.stdin.drain()
        yield recording
        tabs.stdin.write(b"stop\n")
        await tabs.stdin.drain()
        report = json.loads(await asyncio.wait_for(tabs.stdout.readline(), 60))
        recording.arrivals.extend((float(t), v, int(tab)) for t, v, tab in report["arrivals"])
        recording.cuts = int(report["cuts"])
    finally:
        if tabs.returncode is None:
            tabs.kill()
        await tabs.wait()


async def run(mode: Mode) -> Result:
    plan = PLANS[mode]
    result = Result("portal", mode)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token = secrets.token_urlsafe(32)
        metrics_port = free_port()
        env = {
            "PPOS_DATA_DIR": str(work / "data"),
            "PPOS_CONTROL_TOKEN": token,
            "PPOS_NODE_SWEEP_INTERVAL": "0s",
            "PPOS_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "PPOS_LOG_LEVEL": "warning",
        }
        plane = await serve_control_plane(env, work / "plane.log")
        try:
            fleet = await _fleet(plane.address, token, plan.nodes)
            portal_port, bare_port = free_port(), free_port()
            portal_url, bare_url = (
                f"http://127.0.0.1:{portal_port}",
                f"http://127.0.0.1:{bare_port}",
            )
            portal_argv = [str(BIN / "ppos-portal"), "--listen", f"127.0.0.1:{portal_port}"]
            portal_argv += ["--plane", plane.address]
            bare_argv = [sys.executable, "-m", "bench.portal_bare", str(bare_port)]
            async with (
                _process(portal_argv, portal_url + "/signin", work / "portal.log") as portal,
                _process(bare_argv, bare_url + "/", work / "bare.log") as bare,
                httpx.AsyncClient(
                    base_url=portal_url,
                    timeout=30,
                    limits=httpx.Limits(max_connections=plan.tabs + 20),
                ) as http,
                httpx.AsyncClient(
                    base_url=bare_url,
                    timeout=30,
                    limits=httpx.Limits(max_connections=plan.tabs + 20),
                ) as bare_http,
                grpc.aio.insecure_channel(plane.address) as channel,
            ):
                await _sign_in(http, token)
                nodes = pb_grpc.NodeRegistryServiceStub(channel)
                operator = (("authorization", f"Bearer {token}"),)

                # -- page render ---------------------------------------------------
                async def bare_get() -> None:
                    (await bare_http.get("/")).raise_for_status()

                async def nodes_page() -> None:
                    (await http.get(f"/nodes?page_size={PAGE}")).raise_for_status()

                async def list_nodes() -> None:
                    await nodes.ListNodes(pb.ListNodesRequest(page_size=PAGE), metadata=operator)

                by_readiness = pb.ListNodesRequest(
                    page_size=PAGE, order_by=pb.NODE_ORDER_READINESS, descending=True
                )

                async def list_sorted() -> None:  # readiness has no index: a sort of all
                    await nodes.ListNodes(by_readiness, metadata=operator)

                await _repeat(nodes_page, 0.5)  # warm
                cpu = cpu_seconds(bare.pid)
                bare_lat = await _repeat(bare_get, plan.page_seconds)
                bare_cpu = (cpu_seconds(bare.pid) - cpu) / len(bare_lat)
                cpu = cpu_seconds(portal.pid)
                page_lat = await _repeat(nodes_page, plan.page_seconds)
                page_cpu = (cpu_seconds(portal.pid) - cpu) / len(page_lat)
                list_lat = await _repeat(list_nodes, plan.page_seconds)
                sorted_lat = await _repeat(list_sorted, plan.page_seconds)
                ms = 1000.0
                bare_ms = result.figure(
                    "bare Starlette GET / (median)", statistics.median(bare_lat) * ms, "ms"
                )
                page_ms = result.figure(
                    f"portal GET /nodes, {PAGE} of {plan.nodes} nodes (median)",
                    statistics.median(page_lat) * ms,
                    "ms",
                )
                list_ms = result.figure(
                    "bare ListNodes, the same page (median)",
                    statistics.median(list_lat) * ms,
                    "ms",
                )
                sorted_ms = result.figure(
                    "ListNodes sorted by readiness, descending, the same size (median)",
                    statistics.median(sorted_lat) * ms,
                    "ms",
                )
                result.ratio("sorted ListNodes / ListNodes in id order", sorted_ms, list_ms)
                result.ratio("nodes page / bare Starlette response (latency)", page_ms, bare_ms)
                result.ratio("nodes page / bare ListNodes (latency)", page_ms, list_ms)
                bare_cpu_ms = result.figure("bare Starlette CPU per response", bare_cpu * ms, "ms")
                page_cpu_ms = result.figure("portal CPU per nodes page", page_cpu * ms, "ms")
                result.ratio("nodes page / bare Starlette response (CPU)", page_cpu_ms, bare_cpu_ms)
                result.target(
                    f"portal GET /nodes, {PAGE} of {plan.nodes} nodes (median)", "<=", 150
                )

                # -- SSE fan-out -----------------------------------------------------
                first = (
                    await nodes.ListNodes(pb.ListNodesRequest(page_size=1), metadata=operator)
                ).nodes[0]
                credential = dict(fleet)[first.node_id]
                agent = (("authorization", f"Bearer {credential}"),)

                async def heartbeat(k: int) -> None:
                    await nodes.Heartbeat(
                        pb.HeartbeatRequest(ready=True, slots_in_use=k % (CAPACITY + 1)),
                        metadata=agent,
                    )

                row = rf'data-node="{first.node_id}".*?<td class="slots">(\d+)/'

                others = [c for n, c in fleet if n != first.node_id]

                async def churn() -> None:
                    """The rest of the fleet changing at `background` a second."""
                    started, k = time.perf_counter(), 0
                    while True:
                        k += 1
                        metadata = (("authorization", f"Bearer {others[k % len(others)]}"),)
                        beat = pb.HeartbeatRequest(ready=True, slots_in_use=k % (CAPACITY + 1))
                        task = asyncio.ensure_future(nodes.Heartbeat(beat, metadata=metadata))
                        in_flight.add(task)
                        task.add_done_callback(_settled(in_flight))
                        await asyncio.sleep(
                            max(0.0, started + k / plan.background - time.perf_counter())
                        )

                in_flight: set[asyncio.Future[Any]] = set()
                churning = asyncio.create_task(churn())
                path = f"/events/nodes?page_size={PAGE}"
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                streams_seen: list[float] = []
                cpu_from: list[float] = []  # the portal's CPU time when the clock starts

                async def watching() -> None:
                    """Until the portal's WatchNodes is open (its snapshot of a large
                    fleet takes seconds on a loaded machine) and the views it wakes
                    have settled: the figures are of the steady state."""
                    async with asyncio.timeout(120):
                        while await _watch_subscribers(metrics_url) < 1:  # noqa: ASYNC110 - another process's state
                            await asyncio.sleep(0.2)
                    await asyncio.sleep(3.0)
                    streams_seen.append(await _watch_subscribers(metrics_url))
                    cpu_from.append(cpu_seconds(portal.pid))

                portal_lat, portal_events, portal_cuts = await _fanout(
                    plan, http, path, "nodes", heartbeat, row, watching
                )
                portal_event_cpu = (cpu_seconds(portal.pid) - cpu_from[0]) / max(1, portal_events)
                churning.cancel()
                await asyncio.gather(churning, *in_flight, return_exceptions=True)
                streams = streams_seen[0]
                size = len((await http.get(f"/nodes?page_size={PAGE}")).text) // 2

                async def tick(k: int) -> None:
                    mark = f"{k % (CAPACITY + 1)}|"
                    await bare_http.post(f"/tick?size={size}&mark={mark}")

                async def bare_settled() -> None:
                    cpu_from.append(cpu_seconds(bare.pid))

                bare_fan, bare_events, bare_cuts = await _fanout(
                    plan, bare_http, "/events", "tick", tick, r"^(\d+)\|", bare_settled
                )
                bare_event_cpu = (cpu_seconds(bare.pid) - cpu_from[1]) / max(1, bare_events)

                result.figure("tabs (EventSource streams) on one nodes page", plan.tabs, "")
                result.figure("WatchNodes streams the plane serves meanwhile", streams, "")
                p50 = result.figure(
                    "portal change-to-tab latency p50", _quantile(portal_lat, 0.5) * ms, "ms"
                )
                p99 = result.figure(
                    "portal change-to-tab latency p99", _quantile(portal_lat, 0.99) * ms, "ms"
                )
                result.figure("bare SSE latency p50", _quantile(bare_fan, 0.5) * ms, "ms")
                bare_p99 = result.figure(
                    "bare SSE latency p99", _quantile(bare_fan, 0.99) * ms, "ms"
                )
                result.ratio("portal / bare SSE latency p99", p99, bare_p99)
                result.figure("events delivered, portal", portal_events, "")
                result.figure("events delivered, bare", bare_events, "")
                if SSE_CLIENT == "node":
                    result.figure("tab streams cut (and reconnected), portal", portal_cuts, "")
                    result.figure("tab streams cut (and reconnected), bare", bare_cuts, "")
                pc = result.figure("portal CPU per delivered event", portal_event_cpu * 1e6, "µs")
                bc = result.figure(
                    "bare Starlette CPU per delivered event", bare_event_cpu * 1e6, "µs"
                )
                result.ratio("portal / bare CPU per delivered event", pc, bc)
                result.target("WatchNodes streams the plane serves meanwhile", "<=", 1)
                del p50
                result.notes.append(
                    f"{plan.nodes} nodes; {plan.tabs} tabs; the watched node changes "
                    f"{plan.rate:g}/s and the rest of the fleet {plan.background:g}/s for "
                    f"{plan.fanout_seconds:g} s; the portal reads a view at most once per "
                    "live_interval (0.25 s by default), so a table shows the latest of "
                    "the changes since; portal, plane, bare app and this client are "
                    "separate processes on the same machine; the tabs are "
                    + (
                        "a Node.js process (bench/sse_tabs.mjs)"
                        if SSE_CLIENT == "node"
                        else "asyncio tasks of this process"
                    )
                )
        finally:
            plane.stop()
    return result


def _settled(in_flight: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    """A done callback that forgets a background heartbeat and takes its outcome (one
    failing or cancelled at the end is of no interest to the measurement)."""

    def done(task: asyncio.Future[Any]) -> None:
        in_flight.discard(task)
        if not task.cancelled():
            task.exception()

    return done
