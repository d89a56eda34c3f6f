"""Live views fed by the plane's watch streams: one upstream stream per kind for the
whole portal, whatever the tabs; a view is read again on a change, not on a timer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.portal.live import LiveHub, Topic
from ppos.portal.upstreams import NodeWatch
from tests.portal.support import Operator, PortalWorld, operator_for, text_of


async def read_events(
    operator: Operator, path: str, event: str, done: Callable[[list[str]], bool]
) -> list[str]:
    """The data of each `event` on the stream at `path`, until `done(datas)`."""
    datas: list[str] = []
    async with operator.http.stream("GET", path) as stream:
        assert stream.status_code == 200
        buffer = ""
        async for chunk in stream.aiter_text():
            buffer += chunk.replace("\r\n", "\n")
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                lines = block.split("\n")
                if f"event: {event}" in lines:
                    datas.append("\n".join(x[6:] for x in lines if x.startswith("data: ")))
                    if done(datas):
                        return datas
    return datas


def hub_of(world: PortalWorld) -> LiveHub:
    hub: LiveHub = world.portal.app.state.portal.hub
    return hub


async def test_tabs_share_one_watch_and_are_read_again_only_on_a_change(
    world: PortalWorld, operator: Operator
) -> None:
    hub = hub_of(world)
    tabs = 3
    node_id = world.nodes["a"].node_id

    async def tab() -> list[str]:
        return await read_events(
            operator, "/events/overview", "overview", lambda d: _draining(d[-1]) == 1
        )

    tasks = [asyncio.create_task(tab()) for _ in range(tabs)]
    await _until(lambda: len(hub.topics.get("overview", _NONE).subscribers) == tabs)
    await _until(lambda: hub.nodes.synced)
    topic = hub.topics["overview"]
    # A read only follows a change an upstream reported: polling every live_interval
    # (0.3 s here) would read ten times in 3 s. (+1: a change just before the window
    # may be read in it.)
    await asyncio.sleep(1.0)
    changes, reads = _changes(topic), topic.reads
    await asyncio.sleep(3.0)
    assert topic.reads - reads <= _changes(topic) - changes + 1

    await asyncio.to_thread(world.cp.nodes.drain, node_id, reason="live test", grace_seconds=600)
    panels = await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
    assert all(_draining(p[-1]) == 1 for p in panels)
    assert hub.nodes.streams_opened == 1  # one WatchNodes for every tab
    assert hub.nodes.nodes[node_id].status.readiness == node_pb2.READINESS_DRAINING
    await _until(lambda: "overview" not in hub.topics)  # no tab left: the reader stopped
    await _until(lambda: not hub.nodes.running)  # and the watch with it


def _changes(topic: Topic) -> int:
    return sum(upstream.generation for upstream in topic.upstreams)


def _draining(panel: str) -> int:
    """DRAINING nodes of the region of node `a` in an overview panel."""
    for row in re.findall(r'<tr data-region="eu-west-1">(.*?)</tr>', panel, re.S):
        cell = re.search(r'class="r-DRAINING">(\d+)<', row)
        if cell:
            return int(cell.group(1))
    return -1


async def test_a_heartbeat_change_reaches_the_nodes_table_through_the_watch(
    world: PortalWorld, operator: Operator
) -> None:
    hub = hub_of(world)
    agent = world.nodes["b"]

    def shows_not_ready(datas: list[str]) -> bool:
        row = re.search(rf'data-node="{agent.node_id}".*?</tr>', datas[-1], re.S)
        return row is not None and "NOT_READY" in text_of(row.group(0))

    reading = asyncio.create_task(
        read_events(operator, "/events/nodes?region=eu-west-1", "nodes", shows_not_ready)
    )
    await _until(lambda: hub.nodes.synced and any(k[0] == "nodes" for k in _keys(hub)))
    await asyncio.to_thread(agent.heartbeat, ready=False)
    datas = await asyncio.wait_for(reading, timeout=20)
    assert shows_not_ready(datas)
    assert hub.nodes.streams_opened == 1


async def test_the_audit_log_appends_new_entries_live(
    world: PortalWorld, operator: Operator
) -> None:
    page = await operator.get("/audit")
    live = re.search(r'sse-connect="(/events/audit\?[^"]+)"', page.text)
    assert live is not None, page.text
    path = live.group(1).replace("&amp;", "&")
    reading = asyncio.create_task(
        read_events(operator, path, "audit", lambda d: "live <audit>" in text_of("".join(d)))
    )
    await _until(lambda: hub_of(world).audit.running)
    node_id = world.nodes["c"].node_id
    await asyncio.to_thread(world.cp.nodes.cordon, node_id, reason="live <audit>")
    rows = text_of("".join(await asyncio.wait_for(reading, timeout=20)))
    assert "live <audit>" in rows
    assert node_id in rows
    assert hub_of(world).audit.streams_opened == 1


async def test_admin_job_progress_follows_its_watch(world: PortalWorld, operator: Operator) -> None:
    hub = hub_of(world)

    def finished(datas: list[str]) -> bool:
        return (
            bool(job_ids)
            and re.search(rf'data-job="{job_ids[0]}".*?class="state">SUCCEEDED<', datas[-1], re.S)
            is not None
        )

    job_ids: list[str] = []
    reading = asyncio.create_task(
        read_events(operator, "/events/admin-jobs", "admin-jobs", finished)
    )
    await _until(lambda: "admin-jobs" in hub.topics)
    job = await asyncio.to_thread(
        world.cp.governance.start_admin_job, res.ADMIN_JOB_KIND_HEALTH_SWEEP
    )
    job_ids.append(job.admin_job_id)
    started = asyncio.get_running_loop().time()
    datas = await asyncio.wait_for(reading, timeout=30)
    assert finished(datas)
    assert asyncio.get_running_loop().time() - started < 15  # the watch, not a fallback
    await _until(lambda: "admin-jobs" not in hub.topics)
    await _until(lambda: job.admin_job_id not in hub.admin_jobs)


def test_a_resync_required_starts_the_node_watch_over_from_a_snapshot() -> None:
    """RESYNC_REQUIRED (the resume point was pruned): the next stream is a snapshot,
    which replaces the nodes kept, so a node deleted meanwhile is gone."""
    watch = NodeWatch(lambda: None)
    events = pb.WatchEventType

    def message(*pairs: tuple[int, str, int]) -> pb.WatchNodesResponse:
        return pb.WatchNodesResponse(
            events=[
                pb.WatchEvent(type=kind, resource_version=version, node=node_pb2.Node(node_id=n))
                for kind, n, version in pairs
            ]
        )

    first = message(
        (events.WATCH_EVENT_TYPE_SNAPSHOT, "node_a", 5),
        (events.WATCH_EVENT_TYPE_SNAPSHOT, "node_b", 5),
        (events.WATCH_EVENT_TYPE_SNAPSHOT_END, "", 5),
        (events.WATCH_EVENT_TYPE_MODIFIED, "node_a", 9),
    )
    watch.seen(first)
    watch.apply(first)
    assert sorted(watch.nodes) == ["node_a", "node_b"]
    assert watch.synced
    assert watch._resume == 9  # resumed after the last change seen

    resync = message((events.WATCH_EVENT_TYPE_RESYNC_REQUIRED, "", 0))
    watch.seen(resync)
    watch.apply(resync)
    assert watch._resume == 0
    assert watch.resyncs == 1
    assert sorted(watch.nodes) == ["node_a", "node_b"]  # kept until the snapshot is in

    again = message(
        (events.WATCH_EVENT_TYPE_SNAPSHOT, "node_a", 20),
        (events.WATCH_EVENT_TYPE_SNAPSHOT_END, "", 20),
    )
    watch.seen(again)
    watch.apply(again)
    assert sorted(watch.nodes) == ["node_a"]
    assert watch._resume == 20


def _keys(hub: LiveHub) -> list[tuple[object, ...]]:
    return [k for k in hub.topics if isinstance(k, tuple)]


async def _until(condition: Callable[[], bool]) -> None:
    """Polls a condition on the portal's state (no event to wait on from a test)."""
    async with asyncio.timeout(20):
        while not condition():  # noqa: ASYNC110 - state owned by the portal
            await asyncio.sleep(0.05)


class _NoTopic:
    subscribers: frozenset[object] = frozenset()


_NONE = _NoTopic()


async def test_a_signed_out_operators_stream_is_handed_to_another(
    world: PortalWorld, operator: Operator
) -> None:
    """The shared WatchNodes carries one operator's credential; when that session ends
    the stream is reopened (resumed) with another live tab's, and changes still come."""
    hub = hub_of(world)
    async with operator_for(world) as http:
        bea = Operator(http)
        assert (await bea.sign_in(world.token, operator="bea")).status_code == 303
        tabs = [
            (
                person,
                asyncio.create_task(
                    read_events(
                        person, "/events/overview", "overview", lambda d: _draining(d[-1]) == 1
                    )
                ),
            )
            for person in (operator, bea)
        ]
        await _until(lambda: len(hub.topics.get("overview", _NONE).subscribers) == 2)
        await _until(lambda: hub.nodes.synced)
        carrier = hub.nodes.session_id
        (signed_out, ended), (survivor, reading) = sorted(
            tabs, key=lambda tab: _session_id(tab[0]) != carrier
        )
        assert _session_id(signed_out) == carrier
        # The survivor keeps a tab open after seeing the change, so the stream is needed.
        kept = asyncio.create_task(
            read_events(survivor, "/events/overview", "overview", lambda d: False)
        )
        await _until(lambda: len(hub.topics["overview"].subscribers) == 3)
        assert (await signed_out.post("/signout", {})).status_code == 303
        await asyncio.to_thread(world.cp.nodes.drain, world.nodes["a"].node_id, reason="handover")
        panels = await asyncio.wait_for(reading, timeout=20)
        assert _draining(panels[-1]) == 1
        await asyncio.wait_for(ended, timeout=20)  # its stream ended: "expired"
        await _until(lambda: hub.nodes.session_id == _session_id(survivor))
        assert hub.nodes.streams_opened == 2
        kept.cancel()


def _session_id(person: Operator) -> str:
    return person.http.cookies.get("ppos_session") or ""
