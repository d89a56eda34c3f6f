"""Helpers of the operator-tool tests: run pposctl in-process against a real plane,
and make real worker nodes through the node registry's own RPCs."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ppos.controlplane.cli.main import run
from ppos.controlplane.client import ControlPlane, NodeAgentClient, load_config
from tests.support.servers import RunningPlane

IMAGE = "registry.example/ppos/preflight-worker:7.4.1"
DIGEST = "sha256:" + "a1" * 32


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]


def operator_env(plane: RunningPlane, **extra: str) -> dict[str, str]:
    """The environment an operator's shell would have (the token as a variable here:
    these runs are in-process, so no argv and no file is involved)."""
    env = {"PPOS_ADDRESS": plane.address, "PPOS_CONTROL_TOKEN": plane.token, "PPOS_TIMEOUT": "10s"}
    env.update(extra)
    return env


def pposctl_sync(argv: list[str], env: Mapping[str, str]) -> Result:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run(argv, environ=env, stdout=stdout, stderr=stderr)
    return Result(code, stdout.getvalue(), stderr.getvalue())


async def pposctl(plane: RunningPlane, *argv: str, env: Mapping[str, str] | None = None) -> Result:
    """Run one pposctl command in a thread (the server shares this event loop)."""
    return await asyncio.to_thread(pposctl_sync, list(argv), env or operator_env(plane))


def control_plane(plane: RunningPlane) -> ControlPlane:
    return ControlPlane(load_config(operator_env(plane)))


def make_node(
    cp: ControlPlane,
    *,
    region: str = "eu-west-1",
    cluster: str = "c1",
    labels: Mapping[str, str] | None = None,
    ready: bool = True,
    capacity: int = 4,
) -> NodeAgentClient:
    """Enroll, register and heartbeat a node the way a real agent does."""
    enrollment = cp.nodes.create_enrollment(region, cluster=cluster, labels=labels)
    agent = cp.node_agent()
    agent.enroll(enrollment.enrollment_token, hostname=f"host-{region}")
    agent.register(
        region=region,
        cluster=cluster,
        image=IMAGE,
        digest=DIGEST,
        capacity_slots=capacity,
        labels=labels,
    )
    agent.heartbeat(ready=ready, image=IMAGE, digest=DIGEST, slots_in_use=1)
    return agent


@dataclass
class NodeHandle:
    """A registered node: its id and its own credential (never the control token)."""

    node_id: str
    credential: str


async def new_node(plane: RunningPlane, **kwargs: Any) -> NodeHandle:
    def work() -> NodeHandle:
        with control_plane(plane) as cp:
            agent = make_node(cp, **kwargs)
            return NodeHandle(agent.node_id, agent.credential)

    return await asyncio.to_thread(work)


async def as_node(plane: RunningPlane, node: NodeHandle, call: Any) -> Any:
    """Run `call(agent)` as the node, in a thread."""

    def work() -> Any:
        with ControlPlane(load_config({"PPOS_ADDRESS": plane.address})) as cp:
            agent = cp.node_agent(node.credential)
            agent.node_id = node.node_id
            return call(agent)

    return await asyncio.to_thread(work)


class SignallingStream(io.StringIO):
    """A stdout that says when some text has appeared (for commands that run on,
    like watches), and can pretend to be a terminal."""

    def __init__(self, *, terminal: bool = False) -> None:
        super().__init__()
        self._terminal = terminal
        self._wanted: list[tuple[str, threading.Event]] = []
        self._lock = threading.Lock()

    def isatty(self) -> bool:
        return self._terminal

    def write(self, text: str) -> int:
        count = super().write(text)
        with self._lock:
            seen = self.getvalue()
            for needle, event in self._wanted:
                if needle in seen:
                    event.set()
        return count

    def when(self, needle: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._wanted.append((needle, event))
            if needle in self.getvalue():
                event.set()
        return event


async def appears(stream: SignallingStream, needle: str, limit: float = 30) -> None:
    """Wait until `needle` was written (bounded: a bug fails instead of hanging)."""
    event = stream.when(needle)
    assert await asyncio.to_thread(event.wait, limit), f"{needle!r} never appeared"


def start_pposctl(
    plane: RunningPlane, *argv: str, stdout: io.StringIO, env: Mapping[str, str] | None = None
) -> asyncio.Task[int]:
    """Start a long-running pposctl command (a watch) in a thread."""
    stderr = io.StringIO()
    return asyncio.create_task(
        asyncio.to_thread(
            run, list(argv), environ=env or operator_env(plane), stdout=stdout, stderr=stderr
        )
    )
