"""WatchNodes resumes that outlive the replica: a restarted plane serves a resume from
the database's change log, and only a version the log has pruned must resync."""

from __future__ import annotations

from pathlib import Path

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from tests.node_registry.helpers import NodeAgent, enroll, ready_node, registry, scalar, set_time
from tests.node_registry.watching import (
    ADDED,
    DELETED,
    MODIFIED,
    RESYNC_REQUIRED,
    Watcher,
    node_event,
)
from tests.support.canary import scan_files
from tests.support.servers import RunningPlane, start_plane, stop_plane

READY = node_pb2.READINESS_READY


def _watch(plane: RunningPlane, **request: object) -> Watcher:
    return Watcher(plane.channel, plane.operator, pb.WatchNodesRequest(**request))  # type: ignore[arg-type]


def _summary(events: list[pb.WatchEvent]) -> list[tuple[int, str, int]]:
    return [(e.type, e.node.node_id, e.node.status.slots_in_use) for e in events]


async def test_a_restarted_plane_resumes_from_the_change_log(
    database_url: str, tmp_path: Path, canary_token: str, secret_registry: SecretRegistry
) -> None:
    async def start() -> RunningPlane:
        return await start_plane(
            token=canary_token,
            database_url=database_url,
            data_dir=tmp_path / "data",
            secrets=secret_registry,
        )

    first = await start()
    a1, a2 = await ready_node(first), await ready_node(first)
    watcher = _watch(first)
    await watcher.snapshot()
    await a1.heartbeat(ready=True, slots_in_use=1)
    recorded = (
        await watcher.until(node_event(MODIFIED, a1.node_id, slots_in_use=1))
    ).resource_version
    watcher.cancel()
    # Changes the first plane makes after the recorded version, then it stops.
    await a1.heartbeat(ready=True, slots_in_use=2)
    await a2.heartbeat(ready=False, not_ready_reason="OutOfMemory")
    third = await enroll(first)
    await stop_plane(first)

    second = await start()
    try:
        b1 = NodeAgent(second, a1.node_id, a1.credential)
        b2 = NodeAgent(second, a2.node_id, a2.credential)
        await b1.heartbeat(ready=True, slots_in_use=3)
        await b2.heartbeat(ready=True)
        everything = _watch(second, resume_from_version=recorded)
        ready_only = _watch(
            second, resume_from_version=recorded, filter=node_pb2.NodeFilter(readiness=[READY])
        )
        await everything.until(node_event(MODIFIED, a2.node_id, readiness=READY))
        await ready_only.until(node_event(ADDED, a2.node_id))
        # Every change after the recorded version, once, in order: the older ones
        # from the log, the newer ones from the new plane's memory.
        assert _summary(everything.changes()) == [
            (MODIFIED, a1.node_id, 2),
            (MODIFIED, a2.node_id, 0),
            (ADDED, third.node_id, 0),
            (MODIFIED, a1.node_id, 3),
            (MODIFIED, a2.node_id, 0),
        ]
        versions = [e.resource_version for e in everything.changes()]
        assert versions == sorted(set(versions))
        assert versions[0] > recorded
        # A filter sees nodes leave and enter it, whether the change came from the log or not.
        assert _summary(ready_only.changes()) == [
            (MODIFIED, a1.node_id, 2),
            (DELETED, a2.node_id, 0),
            (MODIFIED, a1.node_id, 3),
            (ADDED, a2.node_id, 0),
        ]
        # The streams go on live after the replay.
        await b1.heartbeat(ready=True, slots_in_use=4)
        live = await everything.until(node_event(MODIFIED, a1.node_id, slots_in_use=4))
        assert live.resource_version > versions[-1]
        everything.cancel()
        ready_only.cancel()

        # Compaction: events up to the recorded version age out of the log.
        set_time(
            database_url,
            "UPDATE node_events SET created_at = :t WHERE event_id <= :v",
            7200,
            v=recorded,
        )
        await registry(second).RunHealthSweep(pb.RunHealthSweepRequest(), metadata=second.operator)
        horizon = scalar(database_url, "SELECT pruned_through FROM node_event_log")
        assert horizon == recorded
        too_old = _watch(second, resume_from_version=recorded - 1)
        assert [e.type for e in await too_old.read() or []] == [RESYNC_REQUIRED]
        # The horizon itself still resumes: every change after it is in the log.
        at_horizon = _watch(second, resume_from_version=recorded)
        await at_horizon.until(node_event(MODIFIED, a1.node_id, slots_in_use=4))
        assert _summary(at_horizon.changes())[0] == (MODIFIED, a1.node_id, 2)
        at_horizon.cancel()
    finally:
        await stop_plane(second)
    assert scan_files(tmp_path, canary_token) == [], "canary token written to a file"
