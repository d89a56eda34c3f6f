"""The read path through the whole edge against a bare grpc.aio echo server.

Subject: `ppos-control-plane serve` (all services, as operators start it) answering
an operator's ListTenants (10 tenants, one page) and GetNode (an unknown id:
NOT_FOUND; and a registered node) — authentication, access rule, decode,
validation, the database read, encode, metrics. Baseline: a bare grpc.aio
server in its own process echoing the request's bytes (no auth, no database).
Both servers run pinned to one CPU, the 32 concurrent callers in this process
to the other; only one server is loaded at a time, and the workloads alternate
over rounds so drift of a shared machine hits them alike; medians are compared.
On SQLite and on PostgreSQL (whose own processes are not pinned). Every reply
must have the expected status, or the benchmark fails. Each workload repeats
one request, so on PostgreSQL the reads are hot and share statements within
the coalescing window (storage/loop_postgres.py); PostgreSQL is measured once
more with no window, for what a read costs alone (figures, no target).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.harness import Mode, Result
from bench.processes import (
    cpu_seconds,
    free_port,
    pg_database,
    pin,
    serve_control_plane,
)
from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as node_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as node_grpc

CONCURRENCY = 32
TENANTS = 10
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS = {CPUS[0]}
CLIENT_CPUS = set(CPUS[1:]) or set(CPUS)
ECHO = "/ppos.bench.v1.EchoService/Echo"
LIST_TENANTS = "/ppos.controlplane.governance.v1.GovernanceService/ListTenants"
GET_NODE = "/ppos.controlplane.noderegistry.v1.NodeRegistryService/GetNode"
DIGEST = "sha256:" + "d" * 64


@dataclass(frozen=True)
class Workload:
    name: str
    method: str
    request: bytes
    expected: grpc.StatusCode
    edge: bool  # through the control plane (else the bare echo server)


# -- role: the bare echo server --------------------------------------------------


async def _echo_server(port: int) -> None:
    async def echo(request: bytes, _context: Any) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "ppos.bench.v1.EchoService", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await server.stop(0)


def _start_echo() -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_read_path", "echo", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pin(SERVER_CPUS),
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the echo server did not start")
    return process, f"127.0.0.1:{port}"


# -- seeding ----------------------------------------------------------------------


async def _seed(address: str, token: str) -> str:
    """TENANTS tenants and one registered node; returns the node's id."""
    operator = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        governance = gov_grpc.GovernanceServiceStub(channel)
        for index in range(TENANTS):
            await governance.ProvisionTenant(
                gov_pb.ProvisionTenantRequest(
                    request_id=f"seed-{index}",
                    tenant_id=f"tenant-{index:03d}",
                    spec=res_pb.TenantSpec(display_name=f"Tenant {index}"),
                    labels={"tier": "gold" if index % 2 else "silver"},
                ),
                metadata=operator,
            )
        nodes = node_grpc.NodeRegistryServiceStub(channel)
        enrollment = await nodes.CreateEnrollment(
            node_pb.CreateEnrollmentRequest(region="eu-west-1", cluster="c1"), metadata=operator
        )
        node = await nodes.EnrollNode(
            node_pb.EnrollNodeRequest(hostname="worker-1"),
            metadata=(("authorization", f"Bearer {enrollment.enrollment_token}"),),
        )
        await nodes.RegisterNode(
            node_pb.RegisterNodeRequest(
                region="eu-west-1",
                cluster="c1",
                container=node_pb2.ContainerVersion(
                    image="registry.example/ppos/preflight-worker:7.4.1", digest=DIGEST
                ),
                capacity_slots=8,
                labels={"tier": "edge"},
            ),
            metadata=(("authorization", f"Bearer {node.node_credential}"),),
        )
        return str(node.node_id)


# -- measuring --------------------------------------------------------------------


async def _drive(
    channel: grpc.aio.Channel,
    work: Workload,
    metadata: tuple[tuple[str, str], ...] | None,
    seconds: float,
    pid: int,
) -> tuple[float, float]:
    """(calls/s, server CPU µs per call) of CONCURRENCY callers for `seconds`."""
    call = channel.unary_unary(work.method)
    codes: Counter[grpc.StatusCode] = Counter()

    async def once() -> None:
        try:
            await call(work.request, metadata=metadata, timeout=10)
            codes[grpc.StatusCode.OK] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code()] += 1

    for _ in range(CONCURRENCY):  # warm up: connections, caches, pools
        await once()
    codes.clear()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await once()

    started, cpu = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
    done = sum(codes.values())
    if set(codes) != {work.expected}:
        unexpected = {code.name: n for code, n in codes.items() if code != work.expected}
        raise RuntimeError(f"{work.name}: expected {work.expected.name} only, got {unexpected}")
    return done / elapsed, cpu / done * 1e6


def _workloads(node_id: str) -> list[Workload]:
    return [
        Workload(
            "bare echo",
            ECHO,
            gov_pb.ListTenantsRequest(page_size=TENANTS).SerializeToString(),
            grpc.StatusCode.OK,
            edge=False,
        ),
        Workload(
            "ListTenants",
            LIST_TENANTS,
            gov_pb.ListTenantsRequest(page_size=TENANTS).SerializeToString(),
            grpc.StatusCode.OK,
            edge=True,
        ),
        Workload(
            "GetNode (NOT_FOUND)",
            GET_NODE,
            node_pb.GetNodeRequest(node_id="node-00000000000000000000000000").SerializeToString(),
            grpc.StatusCode.NOT_FOUND,
            edge=True,
        ),
        Workload(
            "GetNode (found)",
            GET_NODE,
            node_pb.GetNodeRequest(node_id=node_id).SerializeToString(),
            grpc.StatusCode.OK,
            edge=True,
        ),
    ]


async def _measure(
    label: str,
    database_url: str,
    data_dir: Path,
    result: Result,
    rounds: int,
    seconds: float,
    *,
    settings: dict[str, str] | None = None,
    targets: bool = True,
) -> None:
    token = "ppos_bench_" + secrets.token_urlsafe(32)
    env = {
        "PPOS_CONTROL_TOKEN": token,
        "PPOS_DATABASE_URL": database_url,
        "PPOS_DATA_DIR": str(data_dir),
        "PPOS_LOG_LEVEL": "info",  # as in production: per-call debug lines filtered
        "PPOS_LOG_FORMAT": "json",
        **(settings or {}),
    }
    echo, echo_address = _start_echo()
    served = None
    try:
        served = await serve_control_plane(env, data_dir.parent / f"{label}.log", cpus=SERVER_CPUS)
        node_id = await _seed(served.address, token)
        workloads = _workloads(node_id)
        samples: dict[str, list[tuple[float, float]]] = {w.name: [] for w in workloads}
        operator = (("authorization", f"Bearer {token}"),)
        async with (
            grpc.aio.insecure_channel(echo_address) as bare,
            grpc.aio.insecure_channel(served.address) as edge,
        ):
            for _ in range(rounds):
                for work in workloads:
                    channel, pid = (edge, served.process.pid) if work.edge else (bare, echo.pid)
                    samples[work.name].append(
                        await _drive(channel, work, operator if work.edge else None, seconds, pid)
                    )
    finally:
        if served is not None:
            served.stop()
        assert echo.stdin is not None
        echo.stdin.write("stop\n")
        echo.stdin.flush()
        echo.wait(10)
    baseline = result.figure(
        f"{label}: bare grpc.aio echo (calls/s, median)",
        statistics.median(s[0] for s in samples["bare echo"]),
        "/s",
    )
    for work in workloads[1:]:
        rate = result.figure(
            f"{label}: {work.name} (calls/s, median)",
            statistics.median(s[0] for s in samples[work.name]),
            "/s",
        )
        result.ratio(f"{label}: {work.name} / bare echo", rate, baseline)
        if targets:
            result.target(f"{label}: {work.name} / bare echo", ">=", 0.5)
    for work in workloads:
        result.figure(
            f"{label}: server CPU per call, {work.name} (median)",
            statistics.median(s[1] for s in samples[work.name]),
            "µs",
        )
    per_round = "; ".join(
        f"{w.name} " + ", ".join(f"{s[0]:.0f}" for s in samples[w.name]) for w in workloads
    )
    result.notes.append(f"{label} calls/s by round: {per_round}")


async def run(mode: Mode) -> Result:
    result = Result("read_path", mode)
    rounds, seconds = (1, 0.5) if mode == "smoke" else (5, 3.0)
    own_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, CLIENT_CPUS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("sq", "pg", "pg-alone"):
                (Path(tmp) / name).mkdir()
            await _measure(
                "SQLite",
                f"sqlite:///{tmp}/sq/bench.db",
                Path(tmp) / "sq" / "data",
                result,
                rounds,
                seconds,
            )
            with pg_database("ppos_bench_read_path") as url:
                await _measure(
                    "PostgreSQL", url, Path(tmp) / "pg" / "data", result, rounds, seconds
                )
            # What each read costs when it is not shared (figures only): the
            # workloads repeat one request, which the coalescing window shares.
            with pg_database("ppos_bench_read_path_alone") as url:
                await _measure(
                    "PostgreSQL, no coalescing",
                    url,
                    Path(tmp) / "pg-alone" / "data",
                    result,
                    rounds,
                    seconds,
                    settings={"PPOS_READ_COALESCE_WINDOW": "0s"},
                    targets=False,
                )
    finally:
        os.sched_setaffinity(0, own_cpus)
    result.notes.append(
        f"{CONCURRENCY} concurrent callers on one channel, {rounds} alternating round(s) of "
        f"{seconds:g}s per workload; servers pinned to CPU {sorted(SERVER_CPUS)}, callers to "
        f"{sorted(CLIENT_CPUS)}; ListTenants pages {TENANTS} tenants; the echo returns the "
        "ListTenants request's bytes"
    )
    return result


def main() -> None:
    if sys.argv[1] == "echo":
        asyncio.run(_echo_server(int(sys.argv[2])))


if __name__ == "__main__":
    main()
