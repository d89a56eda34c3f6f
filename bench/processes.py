"""Process helpers shared by the benchmarks: ports, CPU time, memory, CPU pinning,
and the shipped commands (`ppos-control-plane serve`, `ppos-preflight-sim`)
started as operators start them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from ppos.controlplane.security.keys import KeyRing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(cpus: set[int]) -> Callable[[], None]:
    """A preexec_fn that pins a child process to `cpus`."""
    return lambda: os.sched_setaffinity(0, cpus)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


BIN = Path(sys.executable).parent


@dataclass
class Served:
    """A process started as operators start it, and where it answers."""

    process: subprocess.Popen[bytes]
    address: str
    log: Path

    def stop(self, wait: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def log_tail(self, size: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-size:]


def publish_keys(data_dir: Path) -> Path:
    """The control plane's signing keys made up front, and the JWKS a simulator trusts."""
    ring = KeyRing.from_directory(data_dir / "keys")
    path = data_dir / "jwks.json"
    ring.write_jwks(path)
    return path


async def serve_control_plane(
    env: dict[str, str], log: Path, *, cpus: set[int] | None = None
) -> Served:
    """`ppos-control-plane serve` with `env` (tokens in the environment, never on the
    command line), on a free port; returns once its health check answers SERVING."""
    port = free_port()
    full = {**os.environ, **env, "PPOS_LISTEN": f"127.0.0.1:{port}"}
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
            [str(BIN / "ppos-control-plane"), "serve"],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            preexec_fn=pin(cpus) if cpus else None,
        )
    served = Served(process, f"127.0.0.1:{port}", log)
    async with grpc.aio.insecure_channel(served.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(600):
            if process.poll() is not None:
                break
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return served
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    served.stop()
    raise RuntimeError(f"the control plane did not become healthy:\n{served.log_tail()}")


async def serve_simulator(region: str, jwks: Path, work_dir: Path) -> Served:
    """`ppos-preflight-sim` for `region` (its gateway checks every PREFLIGHT_JWT)."""
    port_file = work_dir / f"sim-{region}.port"
    log = work_dir / f"sim-{region}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
            [
                str(BIN / "ppos-preflight-sim"),
                "--region",
                region,
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                str(port_file),
                "--jwks-file",
                str(jwks),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    for _ in range(600):
        if port_file.exists():
            return Served(process, f"127.0.0.1:{port_file.read_text().strip()}", log)
        if process.poll() is not None:
            break
        await asyncio.sleep(0.05)
    served = Served(process, "", log)
    served.stop()
    raise RuntimeError(f"the simulator for {region} did not start:\n{served.log_tail()}")


PG_URL = os.environ.get(
    "PPOS_BENCH_PG_URL",
    os.environ.get(
        "PPOS_TEST_PG_URL", "postgresql+psycopg://ppos_test:ppos_test@127.0.0.1:5432/ppos_test"
    ),
)


@contextlib.contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one run (dropped after); yields its URL."""
    name = f"{prefix}_{os.getpid()}"
    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    drop()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        drop()
