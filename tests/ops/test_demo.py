"""`make demo` (scripts/demo.py) on free ports: nodes, sync and governance move, a
stopped agent's nodes go NOT_READY then LOST, and a taken port is refused."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ppos.controlplane.client import ControlPlane, load_config
from ppos.controlplane.noderegistry.v1 import node_pb2
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PPOS_")}


async def test_a_taken_port_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(DEMO), "--port", str(port), "--dir", str(tmp_path / "demo"),
            env=demo_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 3
    assert f"port {port} is taken" in err.decode()
    assert out == b""
    assert not (tmp_path / "demo").exists()  # nothing started, nothing written


class RunningDemo:
    def __init__(self, process: asyncio.subprocess.Process, port: int, home: Path) -> None:
        self.process = process
        self.port = port
        self.home = home
        self.output: list[str] = []

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.output.append(line.decode())

    def operator(self) -> ControlPlane:
        config = load_config(
            {}, address=f"127.0.0.1:{self.port}", token_file=self.home / "control-token"
        )
        return ControlPlane(config)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[RunningDemo]:
    port = free_port()
    home = tmp_path / "demo"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(DEMO), "--port", str(port), "--dir", str(home), "--portal-port", "0",
        "--story-seconds", "60",
        env=demo_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    running = RunningDemo(process, port, home)
    reader = asyncio.create_task(running.read())
    try:
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 60)
        await reader
    assert "stopped cleanly" in "".join(running.output), "".join(running.output)


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310 - a loopback URL we printed
        return int(page.status), page.read()


async def test_nodes_sync_and_governance_move(demo: RunningDemo) -> None:
    started = time.monotonic()
    await eventually(
        lambda: demo.output,
        lambda out: any("Everything is running" in line for line in out),
        within=150,
        every=0.5,
    )
    text = "".join(demo.output)
    assert f"control plane      127.0.0.1:{demo.port}" in text
    for region in ("eu-west-1", "us-east-1", "ap-south-1"):
        assert f"{region:<18} registry and gateway simulator on 127.0.0.1:" in text
    portal = re.search(r"dashboard portal   (http://127\.0\.0\.1:\d+/)", text)
    assert portal is not None, text
    status, body = await asyncio.to_thread(fetch, portal.group(1) + "signin")
    assert status == 200
    assert b"Sign in" in body
    with demo.operator() as cp:

        def state() -> tuple[dict[int, int], dict[str, int], set[str], int]:
            nodes = cp.nodes.list_nodes().nodes
            readiness: dict[int, int] = {}
            for node in nodes:
                readiness[node.status.readiness] = readiness.get(node.status.readiness, 0) + 1
            synced = {s.region: s.records_synced for s in cp.sync.list_statuses()}
            policies = {d.policy_id for d in cp.governance.list_decisions().decisions}
            succeeded = cp.nodes.list_commands(states=[node_pb2.NODE_COMMAND_STATE_SUCCEEDED])
            return readiness, synced, policies, len(succeeded.commands)

        def told(value: tuple[dict[int, int], dict[str, int], set[str], int]) -> bool:
            readiness, synced, policies, reimaged = value
            return (
                readiness.get(node_pb2.READINESS_READY, 0) >= 12
                and readiness.get(node_pb2.READINESS_LOST, 0) == 2
                and all(synced.get(r, 0) >= 6 for r in ("eu-west-1", "us-east-1"))
                and policies
                == {"env-recovery", "degraded-capacity", "partial-remainder", "findings-review"}
                and reimaged >= 3
            )

        await eventually(lambda: asyncio.to_thread(state), told, within=120, every=2)
        quarantined = await asyncio.to_thread(cp.sync.get_status, "ap-south-1")
        assert quarantined.quarantined_count >= 1
        # The runtime failure came back as revision 2 once its node was re-imaged.
        jobs = await asyncio.to_thread(cp.sync.list_jobs, region="eu-west-1")
        assert any(job.record.revision == 2 for job in jobs.jobs)
    assert time.monotonic() - started < 240  # a bound on waiting under load, not a benchmark
