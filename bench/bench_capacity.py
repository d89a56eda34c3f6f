"""capacity: heartbeats/s one node-registry replica sustains on PostgreSQL, and what a
second replica on the same database adds, in the same run.

Each heartbeat changes its node (slots_in_use alternates), so every call writes
a change event, NOTIFYs and is fanned out to the watchers subscribed on each
replica: the registry's write path in full. The load is closed-loop (a fixed
number of callers, each sending its next heartbeat when the last is answered)
and spread over the replicas by the client's round_robin balancing over an
`ipv4:` target, as a client of a headless Service would. Reported: heartbeats/s
and p99 latency with one replica, then with two; the ratio two/one; the plane's
CPU per heartbeat (the rest of a heartbeat's cost is PostgreSQL's and the load
generator's, which share the machine); and steady-state heartbeats (a healthy
fleet: the node's state repeated) on one replica.

`python -m bench --full capacity` (smoke mode: a few seconds, proves it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.bench_watch_fanout import _fleet
from bench.harness import Mode, Result
from bench.processes import Served, cpu_seconds, pg_database, serve_control_plane
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.outbound import CHANNEL_OPTIONS


@dataclass(frozen=True)
class Plan:
    nodes: int
    callers: int
    seconds: float
    warmup: float  # unmeasured load first: a replica's first calls pay its start-up
    watchers: int  # per replica


PLANS = {
    "smoke": Plan(nodes=40, callers=8, seconds=2.0, warmup=2.0, watchers=2),
    "full": Plan(nodes=2000, callers=32, seconds=20.0, warmup=10.0, watchers=10),
}


@dataclass
class Phase:
    heartbeats: int
    seconds: float
    p99_ms: float
    failed: int

    @property
    def rate(self) -> float:
        return self.heartbeats / self.seconds if self.seconds else 0.0


async def _load(
    target: str, credentials: list[str], plan: Plan, seconds: float, *, change: bool = True
) -> Phase:
    """`plan.callers` closed-loop callers heartbeating the fleet for `seconds`; with
    `change`, every heartbeat changes its node, else each repeats the node's state."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failed = 0
    slots = dict.fromkeys(range(len(credentials)), 1)
    next_node = 0
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.NodeRegistryServiceStub(channel)
        end = loop.time() + seconds

        async def caller() -> None:
            nonlocal failed, next_node
            while loop.time() < end:
                index = next_node % len(credentials)
                next_node += 1
                if change:
                    slots[index] = 3 - slots[index]
                started = loop.time()
                try:
                    await stub.Heartbeat(
                        pb.HeartbeatRequest(ready=True, slots_in_use=slots[index]),
                        metadata=(("authorization", f"Bearer {credentials[index]}"),),
                        timeout=10,
                    )
                    latencies.append(loop.time() - started)
                except grpc.aio.AioRpcError:
                    failed += 1

        began = loop.time()
        await asyncio.gather(*(caller() for _ in range(plan.callers)))
        elapsed = loop.time() - began
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan")
    return Phase(len(latencies), elapsed, p99, failed)


async def _watch(address: str, token: str, received: list[int]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.NodeRegistryServiceStub(channel)
        call = stub.WatchNodes(
            pb.WatchNodesRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
        async for message in call:
            received[0] += len(message.events)


async def _measure(plan: Plan, url: str, work: Path, result: Result) -> None:
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
    try:
        replicas.append(await serve_control_plane(env, work / "replica-1.log"))
        credentials = await _fleet(replicas[0].address, token, plan.nodes)
        phases = []
        for count in (1, 2):
            if count == 2:
                replicas.append(await serve_control_plane(env, work / "replica-2.log"))
            watchers += [
                asyncio.create_task(_watch(replicas[-1].address, token, received))
                for _ in range(plan.watchers)
            ]
            target = "ipv4:" + ",".join(r.address for r in replicas)
            await _load(target, credentials, plan, plan.warmup)
            cpu_before = sum(cpu_seconds(r.process.pid) for r in replicas)
            phase = await _load(target, credentials, plan, plan.seconds)
            cpu = sum(cpu_seconds(r.process.pid) for r in replicas) - cpu_before
            phases.append(phase)
            result.figure(f"{count}_replica_heartbeats_per_s", phase.rate, "/s")
            result.figure(f"{count}_replica_p99_ms", phase.p99_ms, "ms")
            result.figure(f"{count}_replica_failed", phase.failed, "calls")
            result.figure(
                f"{count}_replica_plane_cpu_us_per_heartbeat",
                cpu / phase.heartbeats * 1e6 if phase.heartbeats else float("nan"),
                "us",
            )
        result.ratio("two_replicas_over_one", phases[1].rate, phases[0].rate)
        # Steady state: heartbeats that change nothing (a healthy fleet), one replica.
        replicas.pop().stop()
        steady = await _load(replicas[0].address, credentials, plan, plan.seconds, change=False)
        result.figure("1_replica_steady_heartbeats_per_s", steady.rate, "/s")
        result.figure("1_replica_steady_p99_ms", steady.p99_ms, "ms")
        result.ratio("steady_over_changing", steady.rate, phases[0].rate)
        result.figure("watch_events_received", received[0], "events")
        result.target("1_replica_p99_ms", "<=", 250)
        result.notes.append(
            f"{plan.nodes} nodes, {plan.callers} closed-loop callers, {plan.seconds:g} s per "
            f"phase, {plan.watchers} watchers per replica, {os.cpu_count()} CPUs shared by "
            "the replicas, PostgreSQL and the load generator"
        )
    finally:
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await task
        for replica in replicas:
            replica.stop()


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
