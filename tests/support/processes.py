"""The control plane as a real subprocess, the way operators and containers run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.databases import runtime_url

BIN = Path(sys.executable).parent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    address: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited early:\n{self.log()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"server not serving after {timeout}s:\n{self.log()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def spawn_serve(
    *,
    data_dir: Path,
    token: str,
    database_url: str,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
) -> ServeProcess:
    port = free_port()
    log_path = data_dir.parent / f"serve-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "PPOS_CONTROL_TOKEN": token,
        "PPOS_DATABASE_URL": runtime_url(database_url),  # the services' login, not the owner
        "PPOS_DATA_DIR": str(data_dir),
        "PPOS_LISTEN": f"127.0.0.1:{port}",
        "PPOS_LOG_FORMAT": "json",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "ppos-control-plane"), "serve", *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServeProcess(process, f"127.0.0.1:{port}", log_path, full_env)


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ppos-control-plane"), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def kill_process(process: ServeProcess) -> None:
    if process.process.poll() is None:
        os.kill(process.process.pid, signal.SIGKILL)
        process.process.wait(10)
