"""ppos-node-agent against a real plane (SQLite and PostgreSQL): enrollment to READY,
re-images that succeed and fail, credential renewal, a plane restarted under a running
agent, and a stopped fleet turning NOT_READY then LOST."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ppos.controlplane.client import ControlPlane, load_config
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.nodeagent import AgentOptions, IdentityStore, NodeAgent
from tests.nodeagent.conftest import PlaneHandle
from tests.support.polling import eventually

IMAGE = "registry.example/ppos/preflight-worker:7.4.1"
DIGEST = "sha256:" + "a1" * 32
TARGET = "registry.example/ppos/preflight-worker:7.4.2"
TARGET_DIGEST = "sha256:" + "b2" * 32
BROKEN = "registry.example/ppos/preflight-worker:7.5.0-broken"
READY = node_pb2.READINESS_READY


class AgentThread:
    """One NodeAgent running in a thread, its output kept."""

    def __init__(self, cp: ControlPlane, options: AgentOptions, store: IdentityStore) -> None:
        self.lines: list[str] = []
        self.agent = NodeAgent(
            cp.node_agent(),
            options,
            store=store,
            # Called in the agent's thread: the test's event loop serves the plane.
            enrollment_token=lambda: cp.nodes.create_enrollment(options.region).enrollment_token,
            say=self.lines.append,
        )
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.agent.run()))
        self.thread.start()

    async def stop(self) -> int:
        self.agent.stop.set()
        await asyncio.to_thread(self.thread.join, 30)
        assert not self.thread.is_alive()
        return self.result[0]


@contextmanager
def operator(plane: PlaneHandle) -> Iterator[ControlPlane]:
    config = load_config({"PPOS_CONTROL_TOKEN": plane.token}, address=plane.address, timeout=10)
    with ControlPlane(config) as cp:
        yield cp


def options(**changes: object) -> AgentOptions:
    base: dict[str, object] = {
        "region": "eu-west-1",
        "image": IMAGE,
        "digest": DIGEST,
        "reimage_seconds": 0.5,
        "fail_images": ("*-broken",),
        "max_backoff": 1.0,
    }
    base.update(changes)
    return AgentOptions(**base)  # type: ignore[arg-type]


async def node_of(cp: ControlPlane, agent: AgentThread) -> node_pb2.Node:
    node_id = await eventually(lambda: agent.agent.node_id, bool)
    return await asyncio.to_thread(cp.nodes.get_node, node_id)


async def until_node(
    cp: ControlPlane, node_id: str, readiness: int, within: float = 20.0
) -> node_pb2.Node:
    return await eventually(
        lambda: asyncio.to_thread(cp.nodes.get_node, node_id),
        lambda node: node.status.readiness == readiness,
        within=within,
        every=0.1,
    )


async def test_enroll_register_ready_and_reimages(agent_plane: PlaneHandle, tmp_path: Path) -> None:
    with operator(agent_plane) as cp:
        store = IdentityStore(tmp_path / "agent.json")
        running = AgentThread(cp, options(labels={"pool": "a"}), store)
        try:
            node = await node_of(cp, running)
            node = await until_node(cp, node.node_id, READY)
            assert (node.spec.region, node.status.container.image) == ("eu-west-1", IMAGE)
            assert node.status.container.digest == DIGEST
            assert node.meta.labels["pool"] == "a"
            assert (tmp_path / "agent.json").stat().st_mode & 0o777 == 0o600

            ok = await asyncio.to_thread(
                cp.nodes.reimage, node.node_id, image=TARGET, digest=TARGET_DIGEST, reason="upgrade"
            )
            done = await eventually(
                lambda: asyncio.to_thread(cp.nodes.get_command, ok.command.command_id),
                lambda c: c.state == node_pb2.NODE_COMMAND_STATE_SUCCEEDED,
                within=20,
                every=0.1,
            )
            assert TARGET in done.result_message
            node = await eventually(
                lambda: asyncio.to_thread(cp.nodes.get_node, node.node_id),
                lambda n: n.status.readiness == READY and n.status.container.image == TARGET,
                within=20,
                every=0.1,
            )
            assert node.status.container.digest == TARGET_DIGEST

            bad = await asyncio.to_thread(
                cp.nodes.reimage, node.node_id, image=BROKEN, digest=DIGEST, reason="try 7.5"
            )
            failed = await eventually(
                lambda: asyncio.to_thread(cp.nodes.get_command, bad.command.command_id),
                lambda c: c.state == node_pb2.NODE_COMMAND_STATE_FAILED,
                within=20,
                every=0.1,
            )
            assert "simulated failure" in failed.result_message
            node = await until_node(cp, node.node_id, READY)
            assert node.status.container.image == TARGET  # still the version that worked
            assert any("50%" in line for line in running.lines), running.lines
        finally:
            assert await running.stop() == 0
        nodes = await asyncio.to_thread(cp.nodes.list_nodes)
        assert [n.node_id for n in nodes.nodes] == [node.node_id]


async def test_credential_renewal(agent_plane: PlaneHandle, tmp_path: Path) -> None:
    with operator(agent_plane) as cp:
        running = AgentThread(cp, options(renew_every=1.0), IdentityStore(tmp_path / "a.json"))
        try:
            node = await node_of(cp, running)
            first = node.status.credential_generation
            await eventually(lambda: running.agent.renewals, lambda n: n >= 2, within=20)
            node = await eventually(
                lambda: asyncio.to_thread(cp.nodes.get_node, node.node_id),
                lambda n: n.status.credential_generation >= first + 2,
                within=10,
            )
            # The renewed credential is the one in use (the old one is revoked).
            stored = IdentityStore(tmp_path / "a.json").load()
            assert stored is not None
            assert stored.credential == running.agent.client.credential
            await until_node(cp, node.node_id, READY)
        finally:
            assert await running.stop() == 0
        assert not any("stopped:" in line for line in running.lines), running.lines


async def test_plane_restarted_under_a_running_agent(
    agent_plane: PlaneHandle, tmp_path: Path
) -> None:
    with operator(agent_plane) as cp:
        running = AgentThread(cp, options(), IdentityStore(tmp_path / "a.json"))
        try:
            node = await until_node(cp, (await node_of(cp, running)).node_id, READY)
            await agent_plane.stop()
            await eventually(lambda: running.agent.failures, lambda n: n >= 1, within=20)
            await agent_plane.start()
            await eventually(
                lambda: running.lines,
                lambda lines: any("reconnected" in line for line in lines),
                within=30,
            )
            await until_node(cp, node.node_id, READY)
            ok = await asyncio.to_thread(
                cp.nodes.reimage, node.node_id, image=TARGET, digest=TARGET_DIGEST, reason="after"
            )
            await eventually(
                lambda: asyncio.to_thread(cp.nodes.get_command, ok.command.command_id),
                lambda c: c.state == node_pb2.NODE_COMMAND_STATE_SUCCEEDED,
                within=20,
                every=0.1,
            )
        finally:
            assert await running.stop() == 0
        nodes = await asyncio.to_thread(cp.nodes.list_nodes)
        assert [n.node_id for n in nodes.nodes] == [node.node_id]  # registered once


async def test_restarted_agent_carries_on_as_the_same_node(
    agent_plane: PlaneHandle, tmp_path: Path
) -> None:
    store = IdentityStore(tmp_path / "a.json")
    with operator(agent_plane) as cp:
        first = AgentThread(cp, options(), store)
        node = await until_node(cp, (await node_of(cp, first)).node_id, READY)
        assert await first.stop() == 0
        again = NodeAgent(cp.node_agent(), options(), store=store, say=lambda _: None)
        thread = threading.Thread(target=again.run)
        thread.start()
        try:
            await eventually(lambda: again.readiness, lambda r: r == "READY", within=20)
            assert again.node_id == node.node_id
        finally:
            again.stop.set()
            await asyncio.to_thread(thread.join, 30)
        nodes = await asyncio.to_thread(cp.nodes.list_nodes)
        assert len(nodes.nodes) == 1


async def test_stopped_fleet_turns_not_ready_then_lost(
    agent_plane: PlaneHandle, tmp_path: Path
) -> None:
    token_file = tmp_path / "control-token"
    token_file.write_text(agent_plane.token)
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPOS_")}
    env.update({"PPOS_ADDRESS": agent_plane.address, "PPOS_CONTROL_TOKEN_FILE": str(token_file)})
    argv = [sys.executable, "-m", "ppos.nodeagent.cli", "--enroll", "--count", "3"]
    argv += ["--state-dir", str(tmp_path / "fleet"), "--region", "us-east-1", "--image", IMAGE]
    fleet = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    with operator(agent_plane) as cp:
        try:
            listed = await eventually(
                lambda: asyncio.to_thread(cp.nodes.list_nodes),
                lambda r: len(r.nodes) == 3 and all(n.status.readiness == READY for n in r.nodes),
                within=30,
                every=0.2,
            )
        finally:
            fleet.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(fleet.communicate(), 30)
        assert fleet.returncode == 0, output.decode()
        assert sorted(p.name for p in (tmp_path / "fleet").iterdir()) == [
            "agent-0.json",
            "agent-1.json",
            "agent-2.json",
        ]
        ids = sorted(n.node_id for n in listed.nodes)
        for wanted in (node_pb2.READINESS_NOT_READY, node_pb2.READINESS_LOST):
            await eventually(
                lambda: asyncio.to_thread(cp.nodes.list_nodes),
                lambda r, w=wanted: (
                    sorted(n.node_id for n in r.nodes if n.status.readiness == w) == ids
                ),
                within=20,
                every=0.2,
            )


async def test_not_ready_file_reports_readiness_and_reason(
    agent_plane: PlaneHandle, tmp_path: Path
) -> None:
    flag = tmp_path / "not-ready"
    flag.write_text("DiskPressure\n")
    with operator(agent_plane) as cp:
        running = AgentThread(cp, options(not_ready_file=flag), IdentityStore(None))
        try:
            node = await node_of(cp, running)
            node = await until_node(cp, node.node_id, node_pb2.READINESS_NOT_READY)
            await eventually(
                lambda: asyncio.to_thread(cp.nodes.get_node, node.node_id),
                lambda n: n.status.readiness_reason == "DiskPressure",
                within=20,
                every=0.1,
            )
            flag.unlink()
            await until_node(cp, node.node_id, READY)
        finally:
            assert await running.stop() == 0
