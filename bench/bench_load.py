"""Load: many clients at once, mixed reads and writes, streams open, the outbox running.

One `ppos-control-plane serve` (all services, started as operators start it) with
two simulated regions (`ppos-preflight-sim`, whose gateways check every
PREFLIGHT_JWT), so the outbox dispatcher delivers what the writes produce. Full:
200 clients for 60 s on SQLite, then on PostgreSQL; each client loops over a mix
of tenant calls (ProvisionTenant, GetTenant, ListTenants), queue calls (CreateQueue
and ResizeQueue on a few shared queues, so writers meet on the same rows, as does
the dispatcher recording acknowledgements) and heartbeats from registered nodes,
while 50 WatchNodes streams stay open and read every event.

What a client may get back: OK; a domain answer the mix provokes on purpose
(NOT_FOUND for unknown tenants, ALREADY_EXISTS for taken ids, FAILED_PRECONDITION
for a stale resource version); RESOURCE_EXHAUSTED or ABORTED only with a
RetryInfo telling it when to come back. Anything else (INTERNAL, UNKNOWN, ABORTED
without retry information, a deadline) fails the benchmark, which prints every
status count per method first and names the calls. Server RSS (/proc VmRSS) is
sampled throughout: at the start of the load, its peak, and after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bench.harness import RESULTS_DIR, Mode, Result
from bench.processes import (
    Served,
    pg_database,
    publish_keys,
    rss_bytes,
    serve_control_plane,
    serve_simulator,
)
from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as node_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as node_grpc

REGIONS = ("eu-west-1", "us-east-1")
DIGEST = "sha256:" + "e" * 64
IMAGE = "registry.example/ppos/preflight-worker:7.4.1"
WATCH_NODES = "/ppos.controlplane.noderegistry.v1.NodeRegistryService/WatchNodes"
CALL_TIMEOUT = 60.0
CLIENTS_PER_CHANNEL = 50
# The line of a traceback naming what was raised, e.g. "sqlalchemy.exc.OperationalError: ..."
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
ALLOWED = frozenset(
    {
        "OK",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "ABORTED with RetryInfo",
        "RESOURCE_EXHAUSTED with RetryInfo",
    }
)


@dataclass(frozen=True)
class Plan:
    clients: int
    seconds: float
    watchers: int
    tenants: int
    hot_queues: int  # queues every client resizes and creates next to
    nodes: int


PLANS = {
    "smoke": Plan(clients=20, seconds=5.0, watchers=10, tenants=6, hot_queues=3, nodes=8),
    "full": Plan(clients=200, seconds=60.0, watchers=50, tenants=40, hot_queues=8, nodes=60),
}


@dataclass
class Tally:
    """Status of every call, by method: a code name, with RetryInfo when it carried one."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)

    def ok(self, method: str) -> None:
        self.calls[(method, "OK")] += 1

    def failed(self, method: str, error: grpc.aio.AioRpcError) -> None:
        label = error.code().name
        if _retry_info(error):
            label += " with RetryInfo"
        key = (method, label)
        self.calls[key] += 1
        self.examples.setdefault(key, (error.details() or "")[:200])

    def disallowed(self) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self.calls.items() if key[1] not in ALLOWED}


def _retry_info(error: grpc.aio.AioRpcError) -> bool:
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        return False
    return status is not None and any(
        detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for detail in status.details
    )


async def _call(tally: Tally, method: str, call: Awaitable[Any]) -> Any | None:
    try:
        reply = await call
    except grpc.aio.AioRpcError as error:
        tally.failed(method, error)
        return None
    tally.ok(method)
    return reply


# -- the world the load runs in ----------------------------------------------------


@dataclass
class World:
    address: str
    token: str
    tenants: list[str]
    hot: list[tuple[str, str]]  # (tenant, queue) pairs everyone resizes
    credentials: list[str]

    @property
    def operator(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


async def _seed(address: str, token: str, plan: Plan) -> World:
    operator = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        governance = gov_grpc.GovernanceServiceStub(channel)
        tenants = [f"tenant-{index:03d}" for index in range(plan.tenants)]
        for index, tenant in enumerate(tenants):
            await governance.ProvisionTenant(
                gov_pb.ProvisionTenantRequest(
                    request_id=f"seed-{tenant}",
                    tenant_id=tenant,
                    spec=res_pb.TenantSpec(
                        display_name=tenant, default_region=REGIONS[index % len(REGIONS)]
                    ),
                    queues=[
                        gov_pb.QueueTemplate(queue_id="main", spec=res_pb.QueueSpec(capacity=8)),
                        gov_pb.QueueTemplate(queue_id="batch", spec=res_pb.QueueSpec(capacity=4)),
                    ],
                    labels={"tier": "gold" if index % 3 == 0 else "silver"},
                ),
                metadata=operator,
            )
        nodes = node_grpc.NodeRegistryServiceStub(channel)

        async def node(index: int) -> str:
            region, cluster = REGIONS[index % len(REGIONS)], f"c{index % 4}"
            enrollment = await nodes.CreateEnrollment(
                node_pb.CreateEnrollmentRequest(region=region, cluster=cluster), metadata=operator
            )
            enrolled = await nodes.EnrollNode(
                node_pb.EnrollNodeRequest(hostname=f"worker-{index}"),
                metadata=(("authorization", f"Bearer {enrollment.enrollment_token}"),),
            )
            await nodes.RegisterNode(
                node_pb.RegisterNodeRequest(
                    region=region,
                    cluster=cluster,
                    container=node_pb2.ContainerVersion(image=IMAGE, digest=DIGEST),
                    capacity_slots=8,
                    labels={"tier": "edge"},
                ),
                metadata=(("authorization", f"Bearer {enrolled.node_credential}"),),
            )
            return str(enrolled.node_credential)

        credentials = list(await asyncio.gather(*(node(i) for i in range(plan.nodes))))
    hot = [(tenants[i % len(tenants)], "main") for i in range(plan.hot_queues)]
    return World(address, token, tenants, hot, credentials)


# -- one client -----------------------------------------------------------------------


class Client:
    """One caller looping over the mix until the deadline."""

    def __init__(self, number: int, world: World, channel: grpc.aio.Channel, tally: Tally) -> None:
        self.number = number
        self.world = world
        self.tally = tally
        self.governance = gov_grpc.GovernanceServiceStub(channel)
        self.nodes = node_grpc.NodeRegistryServiceStub(channel)
        self.random = random.Random(number)
        self.made = 0
        self.mix: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self.provision, 1),
            (self.get_tenant, 3),
            (self.list_tenants, 2),
            (self.create_queue, 1),
            (self.resize_queue, 3),
            (self.heartbeat, 4),
        ]

    async def run(self, deadline: float) -> None:
        actions = [action for action, _ in self.mix]
        weights = [weight for _, weight in self.mix]
        while time.monotonic() < deadline:
            await self.random.choices(actions, weights)[0]()

    def _gov(self, method: str, call: Awaitable[Any]) -> Awaitable[Any | None]:
        return _call(self.tally, method, call)

    async def provision(self) -> None:
        self.made += 1
        taken = self.random.random() < 0.1  # a taken id: ALREADY_EXISTS
        tenant = (
            self.random.choice(self.world.tenants) if taken else f"load-{self.number}-{self.made}"
        )
        request = gov_pb.ProvisionTenantRequest(
            request_id=f"p-{self.number}-{self.made}-{secrets.token_hex(4)}",
            tenant_id=tenant,
            spec=res_pb.TenantSpec(display_name=tenant, default_region=REGIONS[self.made % 2]),
            queues=[gov_pb.QueueTemplate(queue_id="main", spec=res_pb.QueueSpec(capacity=2))],
        )
        await self._gov(
            "ProvisionTenant",
            self.governance.ProvisionTenant(
                request, metadata=self.world.operator, timeout=CALL_TIMEOUT
            ),
        )

    async def get_tenant(self) -> None:
        known = self.random.random() < 0.8
        tenant = self.random.choice(self.world.tenants) if known else f"missing-{self.number}"
        await self._gov(
            "GetTenant",
            self.governance.GetTenant(
                gov_pb.GetTenantRequest(tenant_id=tenant),
                metadata=self.world.operator,
                timeout=CALL_TIMEOUT,
            ),
        )

    async def list_tenants(self) -> None:
        await self._gov(
            "ListTenants",
            self.governance.ListTenants(
                gov_pb.ListTenantsRequest(page_size=20),
                metadata=self.world.operator,
                timeout=CALL_TIMEOUT,
            ),
        )

    async def create_queue(self) -> None:
        # A few ids on the hot tenants: most attempts find the queue taken.
        tenant, _ = self.random.choice(self.world.hot)
        queue = f"q-{self.random.randrange(6)}"
        self.made += 1
        await self._gov(
            "CreateQueue",
            self.governance.CreateQueue(
                gov_pb.CreateQueueRequest(
                    tenant_id=tenant,
                    queue_id=queue,
                    spec=res_pb.QueueSpec(capacity=self.random.randint(1, 32)),
                    request_id=f"q-{self.number}-{self.made}-{secrets.token_hex(4)}",
                ),
                metadata=self.world.operator,
                timeout=CALL_TIMEOUT,
            ),
        )

    async def resize_queue(self) -> None:
        tenant, queue = self.random.choice(self.world.hot)
        found = await self._gov(
            "GetQueue",
            self.governance.GetQueue(
                gov_pb.GetQueueRequest(tenant_id=tenant, queue_id=queue),
                metadata=self.world.operator,
                timeout=CALL_TIMEOUT,
            ),
        )
        if found is None:
            return
        await self._gov(
            "ResizeQueue",
            self.governance.ResizeQueue(
                gov_pb.ResizeQueueRequest(
                    tenant_id=tenant,
                    queue_id=queue,
                    capacity=self.random.randint(1, 64),
                    reason="load",
                    expected_resource_version=found.queue.meta.resource_version,
                ),
                metadata=self.world.operator,
                timeout=CALL_TIMEOUT,
            ),
        )

    async def heartbeat(self) -> None:
        credential = self.random.choice(self.world.credentials)
        await self._gov(
            "Heartbeat",
            self.nodes.Heartbeat(
                node_pb.HeartbeatRequest(ready=True, slots_in_use=self.random.randint(0, 8)),
                metadata=(("authorization", f"Bearer {credential}"),),
                timeout=CALL_TIMEOUT,
            ),
        )


# -- watchers, memory ---------------------------------------------------------------------


@dataclass
class Watching:
    messages: int = 0
    bytes: int = 0
    reopened: int = 0
    open_at_end: int = 0


async def _watch(
    channel: grpc.aio.Channel, world: World, tally: Tally, stop: asyncio.Event, seen: Watching
) -> None:
    """One WatchNodes stream, read (as bytes: counted, not decoded) until `stop`;
    reopened from the start if the server ends it with a retryable status."""
    open_call = channel.unary_stream(
        WATCH_NODES,
        request_serializer=node_pb.WatchNodesRequest.SerializeToString,
        response_deserializer=None,
    )
    while not stop.is_set():
        call = open_call(node_pb.WatchNodesRequest(), metadata=world.operator)
        waiter = asyncio.ensure_future(stop.wait())
        try:
            async for message in _until(call, waiter):
                seen.messages += 1
                seen.bytes += len(message)
        except grpc.aio.AioRpcError as error:
            tally.failed("WatchNodes", error)
            seen.reopened += 1
            await asyncio.sleep(0.5)
            continue
        finally:
            waiter.cancel()
        if stop.is_set():
            seen.open_at_end += 1
            call.cancel()
            tally.ok("WatchNodes")
            return
        tally.calls[("WatchNodes", "ended by the server with OK")] += 1


async def _until(call: Any, stop: asyncio.Future[Any]) -> Any:
    """The stream's messages until it ends or `stop` is done."""
    reader = call.__aiter__()
    while True:
        nxt = asyncio.ensure_future(reader.__anext__())
        done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
        if nxt not in done:
            nxt.cancel()
            return
        try:
            yield nxt.result()
        except StopAsyncIteration:
            return


@dataclass
class Memory:
    pid: int
    start: int = 0
    peak: int = 0

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


# -- a run on one database ------------------------------------------------------------------


async def _commands(world: World) -> Counter[str]:
    """Outbox commands by state, after the load."""
    states: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(world.address) as channel:
        governance = gov_grpc.GovernanceServiceStub(channel)
        token = ""
        while True:
            page = await governance.ListCommands(
                gov_pb.ListCommandsRequest(page_size=1000, page_token=token),
                metadata=world.operator,
                timeout=CALL_TIMEOUT,
            )
            for command in page.commands:
                states[res_pb.CommandState.Name(command.state)] += 1
            token = page.next_page_token
            if not token:
                return states


def _log_events(log: Path) -> tuple[Counter[str], Counter[str]]:
    """The server's warning and error lines by level and event, and the errors'
    exceptions by their last line (what went wrong, e.g. a deadlock)."""
    events: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            events["(not JSON)"] += 1
            continue
        level = str(record.get("level", ""))
        if level in ("warning", "error", "critical"):
            events[f"{level} {record.get('event', '?')}"] += 1
        exception = str(record.get("exception", ""))
        raised = [text for text in exception.splitlines() if _RAISED.match(text)]
        if raised:
            causes[raised[-1][:160]] += 1
    return events, causes


async def _load(world: World, server: Served, plan: Plan) -> tuple[Tally, Watching, Memory, float]:
    tally, seen = Tally(), Watching()
    memory = Memory(server.process.pid)
    channels = [
        grpc.aio.insecure_channel(world.address)
        for _ in range(max(1, plan.clients // CLIENTS_PER_CHANNEL))
    ]
    stop_watching, stop_sampling = asyncio.Event(), asyncio.Event()
    try:
        watchers = [
            asyncio.create_task(
                _watch(channels[i % len(channels)], world, tally, stop_watching, seen)
            )
            for i in range(plan.watchers)
        ]
        await asyncio.sleep(1)  # every stream open and past its snapshot
        memory.start = memory.peak = rss_bytes(server.process.pid)
        sampler = asyncio.create_task(memory.sample(stop_sampling))
        clients = [
            Client(number, world, channels[number % len(channels)], tally)
            for number in range(plan.clients)
        ]
        started = time.monotonic()
        deadline = started + plan.seconds
        await asyncio.gather(*(client.run(deadline) for client in clients))
        elapsed = time.monotonic() - started
        stop_watching.set()
        await asyncio.gather(*watchers)
        stop_sampling.set()
        await sampler
    finally:
        for channel in channels:
            await channel.close()
    return tally, seen, memory, elapsed


async def _one_database(
    label: str, database_url: str, work_dir: Path, plan: Plan, result: Result
) -> dict[tuple[str, str], tuple[int, str]]:
    data_dir = work_dir / "data"
    jwks = publish_keys(data_dir)
    simulators: list[Served] = []
    server: Served | None = None
    try:
        for region in REGIONS:  # one at a time: each is in the list to stop once started
            simulators.append(await serve_simulator(region, jwks, work_dir))  # noqa: PERF401
        token = "ppos_bench_" + secrets.token_urlsafe(32)
        env = {
            "PPOS_CONTROL_TOKEN": token,
            "PPOS_DATABASE_URL": database_url,
            "PPOS_DATA_DIR": str(data_dir),
            "PPOS_GATEWAYS": ",".join(
                f"{region}={sim.address}" for region, sim in zip(REGIONS, simulators, strict=True)
            ),
            "PPOS_LOG_FORMAT": "json",
        }
        server = await serve_control_plane(env, work_dir / "server.log")
        world = await _seed(server.address, token, plan)
        tally, seen, memory, elapsed = await _load(world, server, plan)
        await asyncio.sleep(2)  # the outbox catches up, buffers settle
        end_rss = rss_bytes(server.process.pid)
        commands = await _commands(world)
        events, causes = _log_events(server.log)
        alive = server.process.poll() is None
    finally:
        if server is not None:
            server.stop()
        for sim in simulators:
            sim.stop()
    total = sum(tally.calls.values())
    result.figure(f"{label}: calls (all methods)", total, "")
    result.figure(f"{label}: calls/s", total / elapsed, "/s")
    for (method, code), count in sorted(tally.calls.items()):
        result.figure(f"{label}: {method} {code}", count, "calls")
    result.figure(f"{label}: WatchNodes streams open at the end", seen.open_at_end, "")
    result.figure(f"{label}: WatchNodes messages received", seen.messages, "")
    result.figure(f"{label}: server RSS at the start of the load", memory.start / 2**20, "MB")
    result.figure(f"{label}: server RSS peak", memory.peak / 2**20, "MB")
    result.figure(f"{label}: server RSS after the load", end_rss / 2**20, "MB")
    for state, count in sorted(commands.items()):
        result.figure(f"{label}: outbox commands {state}", count, "")
    for event, count in sorted(events.items()):
        result.figure(f"{label}: server log {event}", count, "lines")
    for cause, count in causes.items():
        result.notes.append(f"{label}: server log exception x{count}: {cause}")
    bad = {key: (n, tally.examples.get(key, "")) for key, n in tally.disallowed().items()}
    if not alive:
        result.notes.append(f"{label}: the server process was not running after the load")
        bad[("server", "exited")] = (1, server.log_tail(500) if server else "")
    if bad or causes:  # keep the server's log to read (it holds no credential)
        RESULTS_DIR.mkdir(exist_ok=True)
        kept = RESULTS_DIR / f"load-{result.mode}-{label}-server.log"
        shutil.copyfile(work_dir / "server.log", kept)
        result.notes.append(f"{label}: server log kept in {kept}")
    return {(f"{label}: {method}", code): value for (method, code), value in bad.items()}


async def run(mode: Mode) -> Result:
    plan = PLANS[mode]
    result = Result("load", mode)
    failures: dict[tuple[str, str], tuple[int, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("sqlite", "postgresql"):
            (root / name).mkdir()
        failures |= await _one_database(
            "SQLite", f"sqlite:///{root}/sqlite/plane.db", root / "sqlite", plan, result
        )
        with pg_database("ppos_bench_load") as url:
            failures |= await _one_database("PostgreSQL", url, root / "postgresql", plan, result)
    result.notes.append(
        f"{plan.clients} clients for {plan.seconds:g}s per database ({CLIENTS_PER_CHANNEL} a "
        f"connection), {plan.watchers} WatchNodes streams open throughout; mix by weight: "
        "Heartbeat 4, ResizeQueue 3 (GetQueue then resize at the version read), GetTenant 3 "
        "(1 in 5 unknown), ListTenants 2, ProvisionTenant 1 (1 in 10 a taken id), CreateQueue "
        f"1 (6 ids on each of {plan.hot_queues} hot queues' tenants); {plan.tenants} tenants "
        f"and {plan.nodes} nodes seeded; regions {', '.join(REGIONS)} simulated, the outbox "
        "delivering to them; load generator and server share the machine"
    )
    if failures:
        print(result.report(), flush=True)
        print(f"  saved {result.save()}", flush=True)
        named = "; ".join(
            f"{method} {code} x{count} (e.g. {example!r})"
            for (method, code), (count, example) in sorted(failures.items())
        )
        raise RuntimeError(f"calls answered outside what the load allows: {named}")
    return result
