"""WatchNodes from Python: snapshot, live changes, filters, resume, resync, bookmarks,
slow subscribers, shutdown and several replicas."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2
from prometheus_client import REGISTRY

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from tests.node_registry.conftest import PlaneFactory
from tests.node_registry.helpers import enroll, ready_node, refusal, registry
from tests.node_registry.watching import (
    ADDED,
    BOOKMARK,
    DELETED,
    MODIFIED,
    RESYNC_REQUIRED,
    SNAPSHOT,
    SNAPSHOT_END,
    Watcher,
    node_event,
)
from tests.support.servers import RunningPlane

READY, NOT_READY = node_pb2.READINESS_READY, node_pb2.READINESS_NOT_READY


async def _drain(watcher: Watcher) -> None:
    while await watcher.read() is not None:
        pass


def _watch(plane: RunningPlane, **request: object) -> Watcher:
    return Watcher(plane.channel, plane.operator, pb.WatchNodesRequest(**request))  # type: ignore[arg-type]


async def test_snapshot_then_live_changes_with_rising_versions(plane: RunningPlane) -> None:
    first = await ready_node(plane)
    second = await ready_node(plane)
    watcher = _watch(plane)
    snapshot = await watcher.snapshot()
    end = watcher.events[len(snapshot)]
    assert end.type == SNAPSHOT_END
    assert sorted(e.node.node_id for e in snapshot) == sorted([first.node_id, second.node_id])
    assert {e.resource_version for e in snapshot} == {end.resource_version}
    assert all(int(e.node.meta.resource_version) <= end.resource_version for e in snapshot)

    await first.heartbeat(ready=True, slots_in_use=2)
    await second.heartbeat(ready=False, not_ready_reason="OutOfMemory")
    third = await enroll(plane)
    await watcher.until(node_event(ADDED, third.node_id))
    changes = watcher.changes()
    assert [(e.type, e.node.node_id) for e in changes] == [
        (MODIFIED, first.node_id),
        (MODIFIED, second.node_id),
        (ADDED, third.node_id),
    ]
    assert changes[0].node.status.slots_in_use == 2
    assert changes[1].node.status.readiness_reason == "OutOfMemory"
    versions = [e.resource_version for e in changes]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    assert versions[0] > end.resource_version
    assert all(int(e.node.meta.resource_version) == e.resource_version for e in changes)
    watcher.cancel()


async def test_a_heartbeat_answers_with_the_node_its_change_event_carries(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane)
    watcher = _watch(plane)
    await watcher.snapshot()
    answered = (
        await agent.heartbeat(
            ready=True,
            slots_in_use=3,
            container=node_pb2.ContainerVersion(
                image="registry.example/ppos/preflight-worker:7.5.0",
                digest="sha256:" + "d" * 64,
            ),
        )
    ).node
    await watcher.until(node_event(MODIFIED, agent.node_id))
    (event,) = watcher.changes()
    assert event.node == answered  # the same node, field for field, timestamps included
    assert int(answered.meta.resource_version) == event.resource_version
    assert answered.status.container.image.endswith(":7.5.0")
    unchanged = (await agent.heartbeat(ready=True, slots_in_use=3)).node
    assert unchanged.meta.resource_version == answered.meta.resource_version
    assert unchanged.status.last_heartbeat_time.ToNanoseconds() > (
        answered.status.last_heartbeat_time.ToNanoseconds()
    )
    watcher.cancel()


async def test_a_filtered_watch_sees_nodes_enter_and_leave(plane: RunningPlane) -> None:
    agent = await ready_node(plane, enroll_labels={"tier": "edge"}, labels={"tier": "edge"})
    other = await ready_node(plane, labels={"tier": "core"})
    watcher = _watch(
        plane,
        filter=node_pb2.NodeFilter(readiness=[READY], label_selector="tier=edge"),
    )
    assert [e.node.node_id for e in await watcher.snapshot()] == [agent.node_id]
    await other.heartbeat(ready=False)  # never matched: not sent
    await agent.heartbeat(ready=False, not_ready_reason="Maintenance")
    gone = await watcher.until(node_event(DELETED, agent.node_id))
    assert gone.node.status.readiness == NOT_READY
    await agent.heartbeat(ready=True)
    await watcher.until(node_event(ADDED, agent.node_id, readiness=READY))
    await agent.heartbeat(ready=True, slots_in_use=1)
    await watcher.until(node_event(MODIFIED, agent.node_id, slots_in_use=1))
    assert other.node_id not in {e.node.node_id for e in watcher.events}
    watcher.cancel()


async def test_resume_delivers_exactly_the_missed_changes(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    watcher = _watch(plane)
    await watcher.snapshot()
    await agent.heartbeat(ready=True, slots_in_use=1)
    seen = await watcher.until(node_event(MODIFIED, agent.node_id, slots_in_use=1))
    watcher.cancel()
    for slots in (2, 3, 4):
        await agent.heartbeat(ready=True, slots_in_use=slots)
    resumed = _watch(plane, resume_from_version=seen.resource_version)
    await resumed.until(node_event(MODIFIED, agent.node_id, slots_in_use=4))
    assert [e.node.status.slots_in_use for e in resumed.events] == [2, 3, 4]
    assert all(e.type == MODIFIED for e in resumed.events)  # no snapshot on resume
    resumed.cancel()


async def test_list_then_watch_from_the_lists_version(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    listed = await registry(plane).ListNodes(pb.ListNodesRequest(), metadata=plane.operator)
    await agent.heartbeat(ready=True, slots_in_use=3)
    watcher = _watch(plane, resume_from_version=listed.resource_version)
    event = await watcher.until(lambda e: e.type == MODIFIED)
    assert event.node.status.slots_in_use == 3
    assert event.resource_version > listed.resource_version
    watcher.cancel()


async def test_too_old_or_unknown_versions_are_told_to_resync(make_plane: PlaneFactory) -> None:
    plane = await make_plane(
        PPOS_WATCH_WINDOW="4", PPOS_WATCH_QUEUE="4", PPOS_WATCH_REPLAY_MAX="40"
    )
    agent = await ready_node(plane)
    listed = await registry(plane).ListNodes(pb.ListNodesRequest(), metadata=plane.operator)
    for slots in range(70):  # more than the window and its trim chunk
        await agent.heartbeat(ready=True, slots_in_use=slots % 4)
    head = await registry(plane).ListNodes(pb.ListNodesRequest(), metadata=plane.operator)
    current = _watch(plane)
    await current.snapshot()  # a snapshot waits until this process has read every change
    current.cancel()
    # Further back than a resume may read from the log, or not a version yet.
    for version in (listed.resource_version, head.resource_version + 1000):
        watcher = _watch(plane, resume_from_version=version)
        assert [e.type for e in await watcher.read() or []] == [RESYNC_REQUIRED]
        assert await watcher.read() is None  # the stream ends with OK after it
        assert await watcher.call.code() == grpc.StatusCode.OK
    # Older than the memory window but within reach of the log: resumed from it.
    older = head.resource_version - 30
    from_log = _watch(plane, resume_from_version=older)
    await from_log.until(lambda e: e.resource_version == head.resource_version)
    assert [e.resource_version for e in from_log.changes()] == list(
        range(older + 1, head.resource_version + 1)
    )
    from_log.cancel()
    # A recent version still resumes.
    fine = _watch(plane, resume_from_version=head.resource_version)
    await agent.heartbeat(ready=True, slots_in_use=3)
    await fine.until(lambda e: e.type == MODIFIED)
    fine.cancel()


async def test_a_replica_started_later_resumes_older_versions_from_the_log(
    make_plane: PlaneFactory,
) -> None:
    first = await make_plane()
    agent = await ready_node(first)
    early = await registry(first).ListNodes(pb.ListNodesRequest(), metadata=first.operator)
    await agent.heartbeat(ready=True, slots_in_use=1)
    second = await make_plane()
    watcher = _watch(second, resume_from_version=early.resource_version)
    event = await watcher.until(lambda e: e.type != BOOKMARK)
    assert (event.type, event.node.status.slots_in_use) == (MODIFIED, 1)
    assert event.resource_version > early.resource_version
    watcher.cancel()


async def test_bookmarks_carry_the_current_version_when_nothing_matches(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane)
    watcher = _watch(
        plane,
        filter=node_pb2.NodeFilter(region="ap-south-1"),
        bookmark_interval=duration_pb2.Duration(seconds=1),
    )
    assert await watcher.snapshot() == []
    changed = (await agent.heartbeat(ready=True, slots_in_use=2)).node
    bookmark = await watcher.until(
        lambda e: e.type == BOOKMARK and e.resource_version >= int(changed.meta.resource_version)
    )
    assert not bookmark.HasField("node")
    assert watcher.changes() == []
    watcher.cancel()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"filter": node_pb2.NodeFilter(label_selector="a b")}, "filter.label_selector"),
        ({"filter": node_pb2.NodeFilter(region="Nowhere!")}, "filter.region"),
        ({"resume_from_version": -3}, "resume_from_version"),
        ({"bookmark_interval": duration_pb2.Duration(nanos=100_000_000)}, "bookmark_interval"),
    ],
)
async def test_bad_watch_requests_are_refused(
    plane: RunningPlane, request_fields: dict[str, object], field: str
) -> None:
    watcher = _watch(plane, **request_fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watcher.read()
    seen = refusal(caught.value)
    assert (seen.code, set(seen.field_violations)) == (grpc.StatusCode.INVALID_ARGUMENT, {field})


async def test_a_subscriber_that_stops_reading_is_cut_off_alone(make_plane: PlaneFactory) -> None:
    plane = await make_plane(PPOS_WATCH_QUEUE="5", PPOS_WATCH_FLUSH_INTERVAL="0s")
    agent = await ready_node(plane)
    healthy = _watch(plane)
    await healthy.snapshot()
    # A client whose transport takes about 1 KB and then nothing more.
    stalled_channel = grpc.aio.insecure_channel(
        plane.address,
        options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
    )
    stalled = Watcher(stalled_channel, plane.operator)
    drops = (
        REGISTRY.get_sample_value("ppos_watch_dropped_subscribers_total", {"reason": "queue_full"})
        or 0.0
    )
    for slots in range(40):
        beat = await agent.heartbeat(ready=True, slots_in_use=1 + slots % 4)
        version = int(beat.node.meta.resource_version)
        await healthy.until(lambda e, v=version: e.resource_version == v)
    assert len(healthy.changes()) == 40  # every change, none lost
    cut_off = REGISTRY.get_sample_value(
        "ppos_watch_dropped_subscribers_total", {"reason": "queue_full"}
    )
    assert cut_off == drops + 1
    # When the stalled client finally reads, it gets what was buffered, then the reason.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _drain(stalled)
    seen = refusal(caught.value)
    assert (seen.code, seen.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "WATCH_SUBSCRIBER_TOO_SLOW",
    )
    assert "resume_from_version" in seen.message
    assert seen.retry_seconds == 1.0
    resume_from = int(seen.metadata["resume_from_version"])
    # It resumes from there and catches up.
    again = _watch(plane, resume_from_version=resume_from)
    await again.until(node_event(MODIFIED, agent.node_id, slots_in_use=1 + 39 % 4))
    assert all(e.resource_version > resume_from for e in again.events)
    await stalled_channel.close()
    healthy.cancel()
    again.cancel()


async def test_streams_end_with_unavailable_on_shutdown(plane: RunningPlane) -> None:
    await ready_node(plane)
    watcher = _watch(plane)
    await watcher.snapshot()
    before = REGISTRY.get_sample_value("ppos_watch_subscribers") or 0.0
    await plane.server.stop(grace=2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watcher.read()
    seen = refusal(caught.value)
    assert (seen.code, seen.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_SHUTTING_DOWN")
    assert "resume_from_version" in seen.message
    assert REGISTRY.get_sample_value("ppos_watch_subscribers") == before - 1


async def test_too_many_watchers_are_refused(make_plane: PlaneFactory) -> None:
    plane = await make_plane(PPOS_WATCH_MAX_SUBSCRIBERS="1")
    first = _watch(plane)
    await first.snapshot()
    second = _watch(plane)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await second.read()
    assert refusal(caught.value).reason == "TOO_MANY_WATCHERS"
    first.cancel()
    await asyncio.sleep(0.2)  # the server notices the cancellation
    third = _watch(plane)
    await third.snapshot()
    third.cancel()


async def test_every_replica_sees_changes_made_on_another(
    make_plane: PlaneFactory, backend: str
) -> None:
    # PostgreSQL: LISTEN/NOTIFY must do it (the poll is slower than the test waits);
    # SQLite: the poll of the shared file does.
    poll = "60s" if backend == "postgresql" else "100ms"
    writer = await make_plane(PPOS_WATCH_POLL_INTERVAL=poll)
    reader = await make_plane(PPOS_WATCH_POLL_INTERVAL=poll)
    agent = await ready_node(writer)
    watcher = _watch(reader)
    snapshot = await watcher.snapshot()
    assert [e.node.node_id for e in snapshot] == [agent.node_id]
    await agent.heartbeat(ready=True, slots_in_use=1)
    event = await watcher.until(node_event(MODIFIED, agent.node_id, slots_in_use=1))
    mine = (
        await registry(writer).GetNode(
            pb.GetNodeRequest(node_id=agent.node_id), metadata=writer.operator
        )
    ).node
    assert event.resource_version == int(mine.meta.resource_version)
    # A cordon on the reader reaches a watcher of the writer too.
    on_writer = _watch(writer, resume_from_version=event.resource_version)
    await registry(reader).CordonNode(
        pb.CordonNodeRequest(node_id=agent.node_id, reason="replica check"),
        metadata=reader.operator,
    )
    cordoned = await on_writer.until(lambda e: e.type == MODIFIED)
    assert not cordoned.node.spec.schedulable
    watcher.cancel()
    on_writer.cancel()


async def test_snapshot_events_are_shared_but_correct_per_filter(plane: RunningPlane) -> None:
    eu = await ready_node(plane)
    us = await ready_node(plane, region="us-east-1")
    everyone = [_watch(plane) for _ in range(3)]
    only_us = _watch(plane, filter=node_pb2.NodeFilter(region="us-east-1"))
    for watcher in everyone:
        assert sorted(e.node.node_id for e in await watcher.snapshot()) == sorted(
            [eu.node_id, us.node_id]
        )
    assert [e.node.node_id for e in await only_us.snapshot()] == [us.node_id]
    await eu.heartbeat(ready=True, slots_in_use=1)
    await us.heartbeat(ready=True, slots_in_use=1)
    for watcher in everyone:
        await watcher.until(node_event(MODIFIED, us.node_id, slots_in_use=1))
        assert [e.node.node_id for e in watcher.changes()] == [eu.node_id, us.node_id]
    await only_us.until(node_event(MODIFIED, us.node_id, slots_in_use=1))
    assert [e.node.node_id for e in only_us.changes()] == [us.node_id]
    for watcher in (*everyone, only_us):
        assert all(e.type != SNAPSHOT for e in watcher.changes())
        watcher.cancel()


async def test_a_subscriber_stuck_in_one_send_is_cut_off_after_the_stall_timeout(
    make_plane: PlaneFactory,
) -> None:
    plane = await make_plane(PPOS_WATCH_STALL_TIMEOUT="300ms", PPOS_WATCH_FLUSH_INTERVAL="0s")
    agent = await ready_node(plane)
    for _ in range(3):  # a snapshot bigger than what the stalled transport takes
        await ready_node(plane)
    stalled_channel = grpc.aio.insecure_channel(
        plane.address,
        options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
    )
    stalled = Watcher(stalled_channel, plane.operator)
    before = (
        REGISTRY.get_sample_value("ppos_watch_dropped_subscribers_total", {"reason": "stalled"})
        or 0.0
    )
    for slots in range(8):  # a few changes: far below the queue limit, enough to block
        await agent.heartbeat(ready=True, slots_in_use=1 + slots % 4)
    for _ in range(100):
        dropped = REGISTRY.get_sample_value(
            "ppos_watch_dropped_subscribers_total", {"reason": "stalled"}
        )
        if dropped == before + 1:
            break
        await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _drain(stalled)
    seen = refusal(caught.value)
    assert seen.reason == "WATCH_SUBSCRIBER_TOO_SLOW"
    assert "took no message for 0.3s" in seen.message
    await stalled_channel.close()
