"""Chaos: node-registry replicas (real processes on one PostgreSQL) are SIGKILLed
while nodes heartbeat and a watcher follows; the watcher resumes on a surviving
replica each time. Every acknowledged change is seen exactly once, in order, and
nothing is lost. SQLite deployments are one process (nothing to fail over to)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from pathlib import Path

import grpc
import pytest

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from tests.governance.processes import PlaneProcess, start_plane_process
from tests.node_registry.watching import BOOKMARK, MODIFIED, RESYNC_REQUIRED, SNAPSHOT_END
from tests.support.servers import plane_env

NODES = 8
ROUNDS = 30
DIGEST = "sha256:" + "a" * 64

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._logs = logs
        self._started = itertools.count()
        self.live: list[PlaneProcess] = []

    async def start(self) -> None:
        log = self._logs / f"replica-{next(self._started)}.log"
        self.live.append(await start_plane_process(self._env, log))

    async def kill(self, victim: PlaneProcess) -> None:
        self.live.remove(victim)
        await victim.kill()

    def pick(self) -> PlaneProcess:
        return random.choice(self.live)


async def _call_any(cluster: Cluster, method: str, request: object, token: str) -> object:
    """One call, retried on another replica while replicas die under it."""
    for _ in range(100):
        plane = cluster.pick()
        async with grpc.aio.insecure_channel(plane.address) as channel:
            stub = pb_grpc.NodeRegistryServiceStub(channel)
            try:
                return await getattr(stub, method)(
                    request, metadata=(("authorization", f"Bearer {token}"),), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"{method}: no replica answered")


async def _node(cluster: Cluster, operator: str, index: int) -> tuple[str, str]:
    enrollment = await _call_any(
        cluster, "CreateEnrollment", pb.CreateEnrollmentRequest(region="eu-west-1"), operator
    )
    enrolled = await _call_any(
        cluster,
        "EnrollNode",
        pb.EnrollNodeRequest(hostname=f"worker-{index}"),
        enrollment.enrollment_token,  # type: ignore[attr-defined]
    )
    credential = enrolled.node_credential  # type: ignore[attr-defined]
    register = pb.RegisterNodeRequest(
        region="eu-west-1",
        container=node_pb2.ContainerVersion(image="registry.example/w:1", digest=DIGEST),
        capacity_slots=8,
    )
    await _call_any(cluster, "RegisterNode", register, credential)
    await _call_any(cluster, "Heartbeat", pb.HeartbeatRequest(ready=True), credential)
    return enrolled.node_id, credential  # type: ignore[attr-defined]


class Follower:
    """A watcher that resumes on a live replica from the last version it saw."""

    def __init__(self, cluster: Cluster, operator: str) -> None:
        self._cluster = cluster
        self._operator = operator
        self.version = 0
        self.seen: dict[str, list[int]] = {}
        self.versions: list[int] = []
        self.resumes = 0

    async def follow(self) -> None:
        while True:
            plane = self._cluster.pick()
            async with grpc.aio.insecure_channel(plane.address) as channel:
                stub = pb_grpc.NodeRegistryServiceStub(channel)
                request = pb.WatchNodesRequest(resume_from_version=self.version)
                call = stub.WatchNodes(
                    request, metadata=(("authorization", f"Bearer {self._operator}"),)
                )
                with contextlib.suppress(grpc.aio.AioRpcError):
                    async for message in call:
                        for event in message.events:
                            self._take(event)
            self.resumes += 1
            await asyncio.sleep(0.1)

    def _take(self, event: pb.WatchEvent) -> None:
        assert event.type != RESYNC_REQUIRED, "a resume within the change log had to resync"
        if event.type in (BOOKMARK, SNAPSHOT_END):
            self.version = max(self.version, event.resource_version)
            return
        if event.type == MODIFIED:
            self.versions.append(event.resource_version)
            self.seen.setdefault(event.node.node_id, []).append(event.node.status.slots_in_use)
        self.version = event.resource_version


async def test_replicas_killed_under_load_lose_and_repeat_nothing(
    database_url: str, backend: str, tmp_path: Path, canary_token: str
) -> None:
    if backend != "postgresql":
        pytest.skip("one process per SQLite database: no replica to fail over to")
    env = plane_env(token=canary_token, database_url=database_url, data_dir=tmp_path / "data")
    env["PPOS_SERVICES"] = "noderegistry"
    cluster = Cluster(env, tmp_path)
    for _ in range(2):
        await cluster.start()
    follower = Follower(cluster, canary_token)
    following: asyncio.Task[None] | None = None
    try:
        nodes = [await _node(cluster, canary_token, i) for i in range(NODES)]
        following = asyncio.create_task(follower.follow())
        await asyncio.sleep(1)  # the snapshot: every node as registered
        first_change = follower.version
        sent: dict[str, list[int]] = {node_id: [] for node_id, _ in nodes}
        for round_ in range(1, ROUNDS + 1):
            if round_ in (ROUNDS // 3, 2 * ROUNDS // 3):
                await cluster.kill(cluster.live[0])  # mid-load, calls and the watch on it
                await cluster.start()
            slots = 1 + round_ % 4  # differs from the last round's: every beat is a change

            async def beat(node_id: str, credential: str, value: int) -> None:
                request = pb.HeartbeatRequest(ready=True, slots_in_use=value)
                await _call_any(cluster, "Heartbeat", request, credential)
                sent[node_id].append(value)

            await asyncio.gather(*(beat(n, c, slots) for n, c in nodes))
        for _ in range(150):  # the watcher catches up with the last round
            if all(follower.seen.get(n, [])[-1:] == s[-1:] for n, s in sent.items()):
                break
            await asyncio.sleep(0.2)
        assert first_change > 0
        for node_id, values in sent.items():
            assert follower.seen[node_id] == values, f"{node_id}: seen differs from sent"
        assert follower.versions == sorted(set(follower.versions)), "repeated or out of order"
        assert follower.resumes >= 1, "the watch never had to resume"
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        for plane in list(cluster.live):
            await plane.stop()
