"""capacity: the heartbeats/s one node-registry replica sustains on PostgreSQL at
p99 <= 250 ms with nothing failing, the same for two replicas on the same
database, and the database's share of a heartbeat's CPU.

The load is open-loop: heartbeats are sent on a schedule at an offered rate
whatever the answers, and a heartbeat's latency runs from its scheduled send
time, so queueing anywhere (the plane, PostgreSQL, the load generator falling
behind) shows in the p99 instead of slowing the senders down (no coordinated
omission). The rate steps up by `growth` until a step fails (p99 above 250 ms,
a call failing, or the backlog passing `backlog_seconds` of load), then
bisects between the last step that held and the first that did not. Every
step is printed as it ends.

Each heartbeat changes its node (slots_in_use alternates), so every call
writes a change event, NOTIFYs and is fanned out to the watchers subscribed on
each replica: the registry's write path in full. Calls are spread over the
replicas by the client's round_robin balancing over an `ipv4:` target, as a
client of a headless Service would.

CPU per heartbeat is read from /proc for the replicas, for the PostgreSQL
backends connected to the bench's database (found in pg_stat_activity; the
server's shared WAL writer and checkpointer serve every database on the
machine and are not counted) and for the load generator (this process, which
also runs the watchers).

`python -m bench --full capacity` (smoke mode: a few seconds, proves it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from bench.bench_watch_fanout import _fleet
from bench.harness import Mode, Result
from bench.processes import Served, cpu_seconds, pg_database, serve_control_plane
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.outbound import CHANNEL_OPTIONS

P99_LIMIT_MS = 250.0
IDLE_SECONDS = 3.0
CALL_TIMEOUT = 5.0  # seconds; a heartbeat not answered by then counts as failed


@dataclass(frozen=True)
class Plan:
    nodes: int
    start_rate: float  # heartbeats/s offered at the first step
    growth: float  # each step offers this many times the last until one fails
    bisections: int  # then halve the interval between held and failed this often
    max_steps: int  # steps up at most (a bound on the run's length)
    step_seconds: float
    warmup: float  # unmeasured load first: a replica's first calls pay its start-up
    backlog_seconds: float  # a step stops early once this much offered load is unanswered
    watchers: int  # per replica


PLANS = {
    "smoke": Plan(
        nodes=40,
        start_rate=40,
        growth=2,
        bisections=0,
        max_steps=2,
        step_seconds=1.0,
        warmup=1.0,
        backlog_seconds=2.0,
        watchers=2,
    ),
    "full": Plan(
        nodes=2000,
        start_rate=300,
        growth=1.3,
        bisections=3,
        max_steps=12,
        step_seconds=12.0,
        warmup=8.0,
        backlog_seconds=2.0,
        watchers=10,
    ),
}


@dataclass
class Step:
    offered: float  # heartbeats/s scheduled
    answered: int = 0
    failed: int = 0
    codes: set[str] = field(default_factory=set)  # the failed calls' status codes
    seconds: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    send_lag_p99_ms: float = float("nan")  # the generator's own lateness
    overloaded: bool = False  # stopped early: the backlog passed backlog_seconds
    cpu_us: dict[str, float] = field(default_factory=dict)  # per answered heartbeat

    @property
    def held(self) -> bool:
        return not self.overloaded and self.failed == 0 and self.p99_ms <= P99_LIMIT_MS

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def line(self, replicas: int) -> str:
        cpu = ", ".join(f"{k} {v:,.0f} µs" for k, v in self.cpu_us.items())
        return (
            f"{replicas} replica(s), offered {self.offered:,.0f}/s: answered {self.rate:,.0f}/s, "
            f"p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, failed {self.failed}"
            f"{' ' + '/'.join(sorted(self.codes)) if self.codes else ''}, "
            f"send lag p99 {self.send_lag_p99_ms:.0f} ms{', OVERLOADED' if self.overloaded else ''}"
            f"; CPU per heartbeat: {cpu} -> {'held' if self.held else 'FAILED'}"
        )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values.sort()
    return values[int(q * (len(values) - 1))] * 1000


class Sender:
    """Open-loop heartbeats over one channel; each node's slots alternate per call."""

    def __init__(self, stub: pb_grpc.NodeRegistryServiceStub, credentials: list[str]) -> None:
        self._stub = stub
        self._metadata = [(("authorization", f"Bearer {c}"),) for c in credentials]
        self._slots = [1] * len(credentials)
        self._next = 0

    async def offer(self, rate: float, seconds: float, backlog_seconds: float) -> Step:
        loop = asyncio.get_running_loop()
        step = Step(rate)
        latencies: list[float] = []
        lags: list[float] = []
        pending: set[asyncio.Task[None]] = set()

        async def one(index: int, scheduled: float) -> None:
            self._slots[index] = 3 - self._slots[index]
            try:
                await self._stub.Heartbeat(
                    pb.HeartbeatRequest(ready=True, slots_in_use=self._slots[index]),
                    metadata=self._metadata[index],
                    timeout=CALL_TIMEOUT,
                )
                latencies.append(loop.time() - scheduled)
            except grpc.aio.AioRpcError as exc:
                step.failed += 1
                step.codes.add(exc.code().name)

        total, began = int(rate * seconds), loop.time()
        sent = 0
        while sent < total:
            now = loop.time()
            due = min(total, int((now - began) * rate) + 1)
            for number in range(sent, due):
                scheduled = began + number / rate
                lags.append(now - scheduled)
                index = self._next % len(self._metadata)
                self._next += 1
                task = asyncio.create_task(one(index, scheduled))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent = due
            if len(pending) > rate * backlog_seconds:
                step.overloaded = True
                break
            await asyncio.sleep(max(0.0, began + sent / rate - loop.time()))
        if pending:
            await asyncio.wait(pending)
        step.seconds = loop.time() - began
        step.answered = len(latencies)
        step.p50_ms = _percentile(latencies, 0.50)
        step.p99_ms = _percentile(latencies, 0.99)
        step.send_lag_p99_ms = _percentile(lags, 0.99)
        return step


class CpuMeter:
    """CPU seconds of the replicas, the database's backends and this process."""

    def __init__(self, replicas: list[Served], pg_url: str) -> None:
        self._replicas = replicas
        self._pg = psycopg.connect(pg_url, autocommit=True)

    def close(self) -> None:
        self._pg.close()

    def bytes_per_row(self, table: str) -> float:
        """On-disk bytes per row of `table`, indexes and TOAST included."""
        query = sql.SQL("SELECT pg_total_relation_size({}), (SELECT count(*) FROM {})").format(
            sql.Literal(table), sql.Identifier(table)
        )
        size, rows = self._pg.execute(query).fetchone() or (0, 0)
        return size / rows if rows else float("nan")

    def _backends(self) -> dict[int, float]:
        rows = self._pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        seconds = {}
        for (pid,) in rows:
            # A backend may end between the query and the read: it is then not counted.
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                seconds[pid] = cpu_seconds(pid)
        return seconds

    def snapshot(self) -> tuple[float, dict[int, float], float]:
        plane = sum(cpu_seconds(r.process.pid) for r in self._replicas)
        own = os.times()
        return plane, self._backends(), own.user + own.system

    def per_heartbeat(
        self, before: tuple[float, dict[int, float], float], answered: int
    ) -> dict[str, float]:
        plane, backends, generator = self.snapshot()
        database = sum(cpu - before[1].get(pid, 0.0) for pid, cpu in backends.items())
        scale = 1e6 / answered if answered else float("nan")
        return {
            "plane": (plane - before[0]) * scale,
            "postgres": database * scale,
            "generator": (generator - before[2]) * scale,
        }


async def _step(sender: Sender, meter: CpuMeter, plan: Plan, rate: float, count: int) -> Step:
    before = meter.snapshot()
    step = await sender.offer(rate, plan.step_seconds, plan.backlog_seconds)
    step.cpu_us = meter.per_heartbeat(before, step.answered)
    print(f"  [{time.strftime('%H:%M:%S')}] {step.line(count)}", flush=True)
    await asyncio.sleep(1.0)  # let a failed step's queue drain before the next
    return step


async def _search(
    sender: Sender, meter: CpuMeter, plan: Plan, start: float, count: int
) -> tuple[Step | None, list[Step]]:
    """Steps up from `start` until one fails, then bisects; the highest step that held."""
    steps: list[Step] = []
    held: Step | None = None
    failed_rate: float | None = None
    rate = start
    for _ in range(plan.max_steps):
        step = await _step(sender, meter, plan, rate, count)
        steps.append(step)
        if not step.held:
            failed_rate = rate
            break
        held = step
        rate *= plan.growth
    low = held.offered if held else 0.0
    for _ in range(plan.bisections if failed_rate is not None else 0):
        assert failed_rate is not None
        rate = (low + failed_rate) / 2
        step = await _step(sender, meter, plan, rate, count)
        steps.append(step)
        if step.held:
            held, low = step, rate
        else:
            failed_rate = rate
    return held, steps


async def _watch(address: str, token: str, received: list[int]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.NodeRegistryServiceStub(channel)
        call = stub.WatchNodes(
            pb.WatchNodesRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
        async for message in call:
            received[0] += len(message.events)


def _report(result: Result, count: int, held: Step | None) -> None:
    prefix = f"{count}_replica"
    if held is None:
        result.figure(f"{prefix}_sustained_heartbeats_per_s", 0.0, "/s")
        return
    result.figure(f"{prefix}_sustained_heartbeats_per_s", held.rate, "/s")
    result.figure(f"{prefix}_sustained_p99_ms", held.p99_ms, "ms")
    for name, value in held.cpu_us.items():
        result.figure(f"{prefix}_{name}_cpu_us_per_heartbeat", value, "us")
    plane, database = held.cpu_us["plane"], held.cpu_us["postgres"]
    result.figure(f"{prefix}_postgres_share_of_cpu", database / (plane + database), "x")


async def _measure(plan: Plan, url: str, work: Path, result: Result) -> None:
    """One then two replicas (long: replicas, watchers and meter span both and end together)."""
    token = f"ppos_{secrets.token_urlsafe(32)}"
    env = {
        "PPOS_SERVICES": "noderegistry",
        "PPOS_DATA_DIR": str(work / "data"),
        "PPOS_DATABASE_URL": url,
        "PPOS_CONTROL_TOKEN": token,
        "PPOS_LOG_LEVEL": "warning",
        "PPOS_NODE_SWEEP_INTERVAL": "0s",
    }
    replicas: list[Served] = []
    watchers: list[asyncio.Task[None]] = []
    received = [0]
    meter = CpuMeter(replicas, make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        replicas.append(await serve_control_plane(env, work / "replica-1.log"))
        credentials = await _fleet(replicas[0].address, token, plan.nodes)
        sustained: list[float] = []
        start = plan.start_rate
        for count in (1, 2):
            if count == 2:
                replicas.append(await serve_control_plane(env, work / "replica-2.log"))
            watchers += [
                asyncio.create_task(_watch(replicas[-1].address, token, received))
                for _ in range(plan.watchers)
            ]
            target = "ipv4:" + ",".join(r.address for r in replicas)
            async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
                sender = Sender(pb_grpc.NodeRegistryServiceStub(channel), credentials)
                await sender.offer(start, plan.warmup, plan.backlog_seconds)
                await asyncio.sleep(1.0)
                # What the replicas and their backends burn with no heartbeats (watchers
                # connected): the part of a step's CPU that is not per heartbeat.
                before = meter.snapshot()
                await asyncio.sleep(IDLE_SECONDS)
                for name, value in meter.per_heartbeat(before, 1).items():
                    result.figure(
                        f"{count}_replica_idle_{name}_cores", value / 1e6 / IDLE_SECONDS, "cores"
                    )
                held, steps = await _search(sender, meter, plan, start, count)
            result.notes += [step.line(count) for step in steps]
            _report(result, count, held)
            sustained.append(held.rate if held else 0.0)
            # Two replicas start where one held, less a margin: fewer steps to the edge.
            start = 0.8 * sustained[0] or plan.start_rate
        result.ratio("two_replicas_over_one", sustained[1], sustained[0])
        result.figure("watch_events_received", received[0], "events")
        # For the database's size: rows as the run left them (nodes at fillfactor 50).
        result.figure("node_row_bytes", meter.bytes_per_row("nodes"), "B")
        result.figure("change_event_bytes", meter.bytes_per_row("node_events"), "B")
        # 10,000 nodes at 10 s heartbeats on one replica
        result.target("1_replica_sustained_heartbeats_per_s", ">=", 1000)
        result.notes.append(
            f"{plan.nodes} nodes, open-loop steps of {plan.step_seconds:g} s (x{plan.growth:g}, "
            f"then {plan.bisections} bisections), held = p99 <= {P99_LIMIT_MS:g} ms from the "
            f"scheduled send and no call failed; {plan.watchers} watchers per replica; "
            f"{os.cpu_count()} CPUs shared by the replicas, PostgreSQL and the load generator"
        )
    finally:
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await task
        for replica in replicas:
            replica.stop()
        meter.close()


async def run(mode: Mode) -> Result:
    plan = PLANS[mode]
    result = Result("capacity", mode)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="ppos-capacity-") as tmp,
        pg_database("ppos_bench_capacity") as url,
    ):
        await _measure(plan, url, Path(tmp), result)
    result.figure("run_seconds", time.monotonic() - started, "s")
    return result
