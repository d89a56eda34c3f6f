"""WatchNodes fan-out: many subscribers in one server process under a steady stream
of heartbeat changes.

Full: 1,000 WatchNodes subscribers on one server process (`ppos-control-plane
serve`, node registry only, in its own process so its memory can be read from
/proc) while a load process sends 200 heartbeat changes per second (200 nodes,
each once a second, each heartbeat changing its slots in use). The subscribers
run in 2 Node.js processes (@grpc/grpc-js, 10 streams per connection): cheap per
message, so the load generators do not starve the server on a small machine.
Measured:

- change-to-delivery latency: a subscriber's receive time minus the change's
  `last_heartbeat_time` (stamped by the server when it wrote the heartbeat),
  p50/p99 over every event a sample of subscribers received;
- server memory per subscriber: server RSS with every subscriber connected and
  synced (resumed from the current version, so no snapshot's transient buffers
  count) minus RSS before any connected (nothing changing), over the number of
  subscribers; as the baseline, the same for a bare grpc.aio server whose
  streaming handler sends one message and waits; and, separately, how much RSS
  grows once changes flow (the watch window, messages in flight);
- isolation: the same latency with one more subscriber that never reads (its
  transport takes 16 KB and then nothing, so the server's send to it blocks);
  phases without and with it alternate and are compared.

Targets: p99 <= 250 ms, memory <= 20 KB per subscriber, healthy p99 with the
stalled subscriber <= 1.10 x without. Tokens and credentials reach the child
processes on stdin or in their environment, never on a command line.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from bench.harness import Mode, Result
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc

SERVICE = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
ROOT = Path(__file__).resolve().parent.parent
SUBSCRIBERS_JS = ROOT / "bench" / "watch_subscribers.js"
PROTO_DIRS = [ROOT / "protos", Path(grpc_tools.__file__).parent / "_proto"]
# Histogram buckets: 1 ms up to 10 s.
BUCKET_MS = 1.0
BUCKETS = 10_000
DIGEST = "sha256:" + "c" * 64
# The subscribers' HTTP/2 window (see watch_subscribers.js); 65535 is grpc-js's own.
CLIENT_WINDOW = int(os.environ.get("PPOS_BENCH_CLIENT_WINDOW", str(1 << 20)))


@dataclass(frozen=True)
class Plan:
    subscribers: int
    subscriber_processes: int
    streams_per_connection: int
    sampled_per_process: int
    nodes: int
    rate: float
    phase_seconds: float
    phase_pairs: int  # phases alternate: A1 (no stalled subscriber), B1 (one), A2, B2, ...
    warmup_seconds: float
    window: int


PLANS = {
    "smoke": Plan(100, 1, 10, 50, 40, 40.0, 3.0, 2, 2.0, 256),
    # The p99 of a phase is set by its few slowest fan-outs (about 7 a second), so
    # one condition gets 90 s in three phases, alternated to cancel drift.
    "full": Plan(1000, 2, 10, 100, 200, 200.0, 30.0, 3, 8.0, 2048),
}


# -- helpers shared by the roles ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def percentile(histogram: Sequence[int], fraction: float) -> float:
    """The `fraction` quantile (ms) of a 1-ms histogram."""
    total = sum(histogram)
    if not total:
        return float("nan")
    cumulative = []
    running = 0
    for count in histogram:
        running += count
        cumulative.append(running)
    index = bisect.bisect_left(cumulative, fraction * total)
    return (index + 1) * BUCKET_MS


# -- role: heartbeats ----------------------------------------------------------


async def _heartbeats(config: dict[str, Any]) -> None:
    address, credentials, rate = config["address"], config["credentials"], config["rate"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    sent = failed = 0
    latencies: list[float] = []
    slots: dict[int, int] = {}
    limit = asyncio.Semaphore(256)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.NodeRegistryServiceStub(channel)

        async def beat(index: int) -> None:
            nonlocal sent, failed
            slots[index] = 2 if slots.get(index) == 1 else 1
            metadata = (("authorization", f"Bearer {credentials[index]}"),)
            started = loop.time()
            try:
                await stub.Heartbeat(
                    pb.HeartbeatRequest(ready=True, slots_in_use=slots[index]),
                    metadata=metadata,
                    timeout=10,
                )
                sent += 1
                latencies.append(loop.time() - started)
            except grpc.aio.AioRpcError:
                failed += 1
            finally:
                limit.release()

        loop.add_signal_handler(signal.SIGUSR1, lambda: _emit({"sent": sent, "failed": failed}))
        started = loop.time()
        tick = 0
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            delay = started + tick / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await limit.acquire()
            task = asyncio.create_task(beat(tick % len(credentials)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tick += 1
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = loop.time() - started
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    _emit(
        {
            "sent": sent,
            "failed": failed,
            "rate": sent / elapsed if elapsed else 0.0,
            "p99_ms": p99 * 1000,
        }
    )


# -- role: a subscriber that never reads ---------------------------------------


async def _stalled(config: dict[str, Any]) -> None:
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
    async with grpc.aio.insecure_channel(config["address"], options=options) as channel:
        stub = pb_grpc.NodeRegistryServiceStub(channel)
        call = stub.WatchNodes(
            pb.WatchNodesRequest(),
            metadata=(("authorization", f"Bearer {config['token']}"),),
        )
        _emit({"opened": True})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        received, code = 0, "STILL_OPEN"
        try:
            async with asyncio.timeout(3):
                async for _message in call:
                    received += 1
            code = "OK"
        except TimeoutError:
            call.cancel()
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        _emit({"status": code, "messages": received})


# -- role: a bare grpc.aio server, the memory baseline ---------------------------


async def _bare_server(config: dict[str, Any]) -> None:
    """WatchNodes as plain grpc.aio: no auth, no hub; one SNAPSHOT_END, then it waits."""
    hold = asyncio.Event()
    only = pb.WatchNodesResponse(
        events=[pb.WatchEvent(type=pb.WATCH_EVENT_TYPE_SNAPSHOT_END, resource_version=1)]
    ).SerializeToString()

    async def watch(_request: bytes, _context: Any) -> Any:
        yield only
        await hold.wait()

    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(watch)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"WatchNodes": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _emit({"port": port})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await server.stop(0)


# -- orchestration -------------------------------------------------------------


class Child:
    """A load process: a role of this module, or the Node.js subscribers."""

    def __init__(
        self, role: str, config: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        command = (
            ["node", str(SUBSCRIBERS_JS)]
            if role == "subscribers"
            else [sys.executable, "-m", "bench.bench_watch_fanout", role]
        )
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.send(json.dumps(config))

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    async def receive(self, wait: float = 120) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), wait)
        if not line:
            raise RuntimeError(f"child {self.process.args} exited ({self.process.poll()})")
        record: dict[str, Any] = json.loads(line)
        return record

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _serve(
    data_dir: Path, token: str, backend: str, plan: Plan
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "PPOS_SERVICES": "noderegistry",
        "PPOS_LISTEN": f"127.0.0.1:{port}",
        "PPOS_DATA_DIR": str(data_dir),
        "PPOS_DATABASE_URL": "" if backend == "sqlite" else backend,
        "PPOS_CONTROL_TOKEN": token,
        "PPOS_LOG_LEVEL": os.environ.get("PPOS_BENCH_SERVER_LOG_LEVEL", "warning"),
        "PPOS_NODE_SWEEP_INTERVAL": "0s",
        "PPOS_WATCH_WINDOW": str(plan.window),
        "PPOS_WATCH_QUEUE": str(plan.window // 2),
        "PPOS_WATCH_STALL_TIMEOUT": f"{plan.phase_seconds / 4:g}s",
    }
    log = data_dir.parent / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
            [sys.executable, "-m", "ppos.controlplane.runtime.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return process, address
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    process.kill()
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"server did not become healthy:\n{tail}")


async def _fleet(address: str, token: str, count: int) -> list[str]:
    operator = (("authorization", f"Bearer {token}"),)
    credentials: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.NodeRegistryServiceStub(channel)

        async def one(index: int) -> str:
            enrollment = await stub.CreateEnrollment(
                pb.CreateEnrollmentRequest(region="eu-west-1", cluster=f"c{index % 8}"),
                metadata=operator,
            )
            node = await stub.EnrollNode(
                pb.EnrollNodeRequest(hostname=f"worker-{index}"),
                metadata=(("authorization", f"Bearer {enrollment.enrollment_token}"),),
            )
            metadata = (("authorization", f"Bearer {node.node_credential}"),)
            await stub.RegisterNode(
                pb.RegisterNodeRequest(
                    region="eu-west-1",
                    cluster=f"c{index % 8}",
                    container=node_pb2.ContainerVersion(
                        image="registry.example/ppos/preflight-worker:7.4.1", digest=DIGEST
                    ),
                    capacity_slots=8,
                    labels={"tier": "edge", "gpu": "true" if index % 2 else "false"},
                ),
                metadata=metadata,
            )
            await stub.Heartbeat(pb.HeartbeatRequest(ready=True), metadata=metadata)
            return node.node_credential

        for start in range(0, count, 20):
            credentials += await asyncio.gather(
                *(one(i) for i in range(start, min(count, start + 20)))
            )
    return credentials


def _subscribers(
    address: str, token: str, count: int, plan: Plan, sampled: int, resume_from: int = 0
) -> Child:
    return Child(
        "subscribers",
        {
            "count": count,
            "per_connection": plan.streams_per_connection,
            "sampled": sampled,
            "resume_from": resume_from,
            "bookmark_seconds": 1,
            "flow_control_window": CLIENT_WINDOW,
        },
        env={
            "PPOS_ADDRESS": address,
            "PPOS_CONTROL_TOKEN": token,
            "PPOS_PROTO_DIRS": os.pathsep.join(str(d) for d in PROTO_DIRS),
        },
    )


async def _bare_memory(plan: Plan) -> float:
    """Bytes per open stream of a bare grpc.aio server, same clients and topology."""
    server = Child("bare_server", {})
    try:
        address = f"127.0.0.1:{(await server.receive())['port']}"
        await asyncio.sleep(1)
        before = _rss_bytes(server.process.pid)
        per_process = plan.subscribers // plan.subscriber_processes
        clients = [
            _subscribers(address, "unused", per_process, plan, 0)
            for _ in range(plan.subscriber_processes)
        ]
        try:
            for client in clients:
                await client.receive(wait=300)
            await asyncio.sleep(plan.warmup_seconds)
            return (_rss_bytes(server.process.pid) - before) / plan.subscribers
        finally:
            for client in clients:
                client.send("quit")
                client.stop()
    finally:
        server.send("stop")
        server.stop()


async def _sent(load: Child) -> int:
    load.process.send_signal(signal.SIGUSR1)
    return int((await load.receive())["sent"])


async def _version(address: str, token: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        listed = await pb_grpc.NodeRegistryServiceStub(channel).ListNodes(
            pb.ListNodesRequest(page_size=1), metadata=(("authorization", f"Bearer {token}"),)
        )
    return int(listed.resource_version)


def _label(backend: str) -> str:
    """The backend without its URL (which may hold a password)."""
    return "SQLite" if backend == "sqlite" else make_url(backend).get_backend_name()


def _merge(reports: list[dict[str, Any]], names: Sequence[str]) -> list[int]:
    merged = [0] * BUCKETS
    for report in reports:
        for name in names:
            for index, value in enumerate(report["histograms"].get(name, ())):
                merged[index] += value
    return merged


async def _measure(plan: Plan, backend: str, result: Result) -> None:
    bare_bytes = await _bare_memory(plan)
    token = "ppos_bench_" + secrets.token_urlsafe(32)
    children: list[Child] = []
    with tempfile.TemporaryDirectory() as tmp:
        server, address = await _serve(Path(tmp) / "data", token, backend, plan)
        try:
            credentials = await _fleet(address, token, plan.nodes)
            version = await _version(address, token)
            # Memory per subscriber: every stream open and synced, nothing changing
            # (as for the bare baseline), against the same server before any opened.
            await asyncio.sleep(plan.warmup_seconds)
            rss_before = _rss_bytes(server.pid)
            per_process = plan.subscribers // plan.subscriber_processes
            # They resume from the current version: a snapshot per subscriber would
            # leave its transient buffers in the figure, not what a subscriber keeps.
            subscribers = [
                _subscribers(address, token, per_process, plan, plan.sampled_per_process, version)
                for _ in range(plan.subscriber_processes)
            ]
            children += subscribers
            for child in subscribers:
                await child.receive(wait=300)
            await asyncio.sleep(plan.warmup_seconds)
            rss_with = _rss_bytes(server.pid)
            load = Child(
                "heartbeats", {"address": address, "credentials": credentials, "rate": plan.rate}
            )
            children.append(load)
            # Fill the watch window before measuring.
            await asyncio.sleep(max(plan.warmup_seconds, 1.5 * plan.window / plan.rate))
            phases: list[tuple[str, bool]] = []
            for pair in range(1, plan.phase_pairs + 1):
                phases += [(f"A{pair}", False), (f"B{pair}", True)]
            cpu_started, wall_started = _cpu_seconds(server.pid), time.perf_counter()
            sent_before = await _sent(load)
            clients_started = sum(_cpu_seconds(c.process.pid) for c in subscribers)
            load_started = _cpu_seconds(load.process.pid)
            stalled_reports = []
            rss_stalled_growth = 0
            for name, with_stalled in phases:
                stalled = None
                if with_stalled:
                    stalled = Child("stalled", {"address": address, "token": token})
                    children.append(stalled)
                    await stalled.receive()
                    await asyncio.sleep(2)  # its process start-up is not part of the phase
                    rss_at_start = _rss_bytes(server.pid)
                for child in subscribers:
                    child.send(f"phase {name}")
                await asyncio.sleep(plan.phase_seconds)
                for child in subscribers:
                    child.send("pause")
                if stalled is not None:
                    rss_stalled_growth = max(
                        rss_stalled_growth, _rss_bytes(server.pid) - rss_at_start
                    )
                    stalled.send("stop")
                    stalled_reports.append(await stalled.receive())
                    stalled.stop()
                    children.remove(stalled)
                await asyncio.sleep(0.5)
            wall = time.perf_counter() - wall_started
            rss_loaded = _rss_bytes(server.pid)
            server_cpu = (_cpu_seconds(server.pid) - cpu_started) / wall
            clients_cpu = (
                sum(_cpu_seconds(c.process.pid) for c in subscribers) - clients_started
            ) / wall
            load_cpu = (_cpu_seconds(load.process.pid) - load_started) / wall
            phase_rate = (await _sent(load) - sent_before) / wall
            reports = []
            for child in subscribers:
                child.send("report")
                reports.append(await child.receive())
            load.process.send_signal(signal.SIGTERM)
            load_report = await load.receive()
        finally:
            for child in children:
                child.stop()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
    baseline = _merge(reports, [name for name, stalled in phases if not stalled])
    stalled_hist = _merge(reports, [name for name, stalled in phases if stalled])
    p50 = result.figure(
        "change-to-delivery p50 (no stalled subscriber)", percentile(baseline, 0.5), "ms"
    )
    p99 = result.figure(
        "change-to-delivery p99 (no stalled subscriber)", percentile(baseline, 0.99), "ms"
    )
    p99_stalled = result.figure(
        "change-to-delivery p99 (one never-reading subscriber)",
        percentile(stalled_hist, 0.99),
        "ms",
    )
    result.figure("events measured (both kinds of phase)", sum(baseline) + sum(stalled_hist), "")
    result.ratio("p99 with stalled / p99 without", p99_stalled, p99)
    per_subscriber = result.figure(
        "server memory per subscriber", (rss_with - rss_before) / plan.subscribers / 1024, "KB"
    )
    result.figure(
        "server RSS growth once changes flow (window, messages in flight)",
        (rss_loaded - rss_with) / 2**20,
        "MB",
    )
    bare = result.figure(
        "bare grpc.aio server memory per open stream (baseline)", bare_bytes / 1024, "KB"
    )
    result.ratio("memory per subscriber / bare grpc.aio stream", per_subscriber, bare)
    result.figure(
        "server RSS growth while a subscriber is stalled", rss_stalled_growth / 1024, "KB"
    )
    result.figure("heartbeat changes per second during the phases", phase_rate, "/s")
    result.figure("heartbeat RPC p99 (load generator)", load_report["p99_ms"], "ms")
    result.figure("server CPU during the phases", server_cpu, "cores")
    result.figure("subscriber processes' CPU during the phases", clients_cpu, "cores")
    result.figure("heartbeat load process CPU during the phases", load_cpu, "cores")
    result.target("change-to-delivery p99 (no stalled subscriber)", "<=", 250)
    result.target("server memory per subscriber", "<=", 20)
    result.target("p99 with stalled / p99 without", "<=", 1.10)
    by_phase = ", ".join(
        f"{name} {percentile(_merge(reports, [name]), 0.99):.0f} ms" for name, _ in phases
    )
    errors = sorted({e for report in reports for e in report["errors"]})
    if "SCAN_MISMATCH" in errors:
        raise RuntimeError("the subscribers' wire scanner disagreed with a full decode")
    result.notes.append(
        f"{plan.subscribers} subscribers in {plan.subscriber_processes} processes, "
        f"{plan.streams_per_connection} streams per connection, latency sampled on "
        f"{plan.sampled_per_process * plan.subscriber_processes} of them; {plan.nodes} nodes "
        f"heartbeating {plan.rate:g} changes/s ({load_report['failed']} failed); phases of "
        f"{plan.phase_seconds:g}s alternating without/with a stalled subscriber; "
        f"subscribers' HTTP/2 window {CLIENT_WINDOW} bytes; {_label(backend)}; "
        f"p50 {p50:.0f} ms; p99 by phase (A without, B with the stalled subscriber): "
        f"{by_phase}; stalled subscriber ended: "
        + ", ".join(f"{r['status']} after {r['messages']} messages" for r in stalled_reports)
        + (f"; subscriber errors: {errors}" if errors else "")
        + "; the machine (2 cores) is shared and runs server and load generators alike"
    )


async def run(mode: Mode) -> Result:
    result = Result("watch_fanout", mode)
    backend = os.environ.get("PPOS_BENCH_DATABASE_URL", "sqlite")
    await _measure(PLANS[mode], backend, result)
    return result


def main() -> None:
    role = sys.argv[1]
    config = json.loads(sys.stdin.readline())
    handler = {"heartbeats": _heartbeats, "stalled": _stalled, "bare_server": _bare_server}[role]
    asyncio.run(handler(config))


if __name__ == "__main__":
    main()
