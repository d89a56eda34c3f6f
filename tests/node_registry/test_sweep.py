"""Health sweeps: TTL and grace, LOST and back, drains, schedules, replicas, pruning."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, text

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from tests.node_registry.conftest import PlaneFactory
from tests.node_registry.helpers import (
    age_heartbeat,
    ready_node,
    registry,
    scalar,
    set_time,
)
from tests.support.servers import RunningPlane

TTL, GRACE = 30, 120  # the defaults


async def _sweep(plane: RunningPlane) -> pb.RunHealthSweepResponse:
    return await registry(plane).RunHealthSweep(pb.RunHealthSweepRequest(), metadata=plane.operator)


async def _node(plane: RunningPlane, node_id: str) -> node_pb2.Node:
    reply = await registry(plane).GetNode(
        pb.GetNodeRequest(node_id=node_id), metadata=plane.operator
    )
    return reply.node


async def test_stale_heartbeats_turn_ready_into_not_ready_then_lost(plane: RunningPlane) -> None:
    fresh = await ready_node(plane)
    stale = await ready_node(plane)
    gone = await ready_node(plane)
    age_heartbeat(plane.database_url, stale.node_id, TTL + 5)
    age_heartbeat(plane.database_url, gone.node_id, TTL + GRACE + 5)
    result = await _sweep(plane)
    assert (result.marked_not_ready, result.marked_lost) == (1, 1)
    assert result.resource_version == scalar(
        plane.database_url, "SELECT max(event_id) FROM node_events"
    )
    assert (await _node(plane, fresh.node_id)).status.readiness == node_pb2.READINESS_READY
    node = await _node(plane, stale.node_id)
    assert (node.status.readiness, node.status.readiness_reason) == (
        node_pb2.READINESS_NOT_READY,
        "HeartbeatStale",
    )
    fresh_condition = {c.type: c for c in node.status.conditions}["HeartbeatFresh"]
    assert fresh_condition.reason == "HeartbeatStale"
    lost = await _node(plane, gone.node_id)
    assert lost.status.readiness == node_pb2.READINESS_LOST
    # The stale node goes LOST once the grace has passed too.
    age_heartbeat(plane.database_url, stale.node_id, TTL + GRACE + 5)
    again = await _sweep(plane)
    assert (again.marked_not_ready, again.marked_lost) == (0, 1)
    # Each transition is in the change log with the readiness before it.
    transitions = scalar(
        plane.database_url,
        "SELECT count(*) FROM node_events WHERE node_id = :n AND previous_readiness = 'NOT_READY' "
        "AND readiness = 'LOST' AND reason = 'NodeLost'",
        n=stale.node_id,
    )
    assert transitions == 1
    # Nothing left to do: a sweep is idempotent.
    assert (await _sweep(plane)).marked_lost == 0
    sweeps = scalar(
        plane.database_url,
        "SELECT count(*) FROM audit_log WHERE resource_kind = 'node_health_sweep'",
    )
    assert sweeps == 2  # the sweeps that changed something


async def test_a_lost_node_comes_back_through_not_ready(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    age_heartbeat(plane.database_url, agent.node_id, TTL + GRACE + 1)
    await _sweep(plane)
    back = (await agent.heartbeat(ready=True)).node
    assert (back.status.readiness, back.status.readiness_reason) == (
        node_pb2.READINESS_NOT_READY,
        "HeartbeatResumed",
    )
    ready = (await agent.heartbeat(ready=True)).node
    assert ready.status.readiness == node_pb2.READINESS_READY
    path = scalar(
        plane.database_url,
        "SELECT count(*) FROM node_events WHERE node_id = :n AND previous_readiness = 'LOST' "
        "AND readiness = 'NOT_READY' AND reason = 'HeartbeatResumed'",
        n=agent.node_id,
    )
    assert path == 1
    audited = scalar(
        plane.database_url,
        "SELECT count(*) FROM audit_log WHERE resource_id = :n AND before_json LIKE '%LOST%' "
        "AND after_json LIKE '%HeartbeatResumed%'",
        n=agent.node_id,
    )
    assert audited == 1


async def test_an_expired_drain_turns_not_ready(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    await agent.heartbeat(ready=True, slots_in_use=3)
    await registry(plane).DrainNode(
        pb.DrainNodeRequest(node_id=agent.node_id, reason="rack move"), metadata=plane.operator
    )
    set_time(
        plane.database_url,
        "UPDATE nodes SET drain_deadline = :t WHERE node_id = :n",
        1,
        n=agent.node_id,
    )
    result = await _sweep(plane)
    assert result.drains_expired == 1
    node = await _node(plane, agent.node_id)
    assert node.status.readiness_reason == "DrainDeadlineExceeded"
    assert not node.spec.schedulable


async def test_the_scheduled_sweep_runs_by_itself(make_plane: PlaneFactory) -> None:
    plane = await make_plane(PPOS_NODE_SWEEP_INTERVAL="200ms", PPOS_NODE_SWEEP_START_DELAY="0s")
    agent = await ready_node(plane)
    age_heartbeat(plane.database_url, agent.node_id, TTL + 1)
    for _ in range(200):
        if (await _node(plane, agent.node_id)).status.readiness == node_pb2.READINESS_NOT_READY:
            break
        await asyncio.sleep(0.05)
    node = await _node(plane, agent.node_id)
    assert node.status.readiness_reason == "HeartbeatStale"
    actor = scalar(
        plane.database_url,
        "SELECT actor_kind || ':' || actor_name FROM audit_log "
        "WHERE resource_kind = 'node_health_sweep'",
    )
    assert actor == "internal:health-sweep"


async def test_replicas_sweeping_at_once_change_each_node_once(
    make_plane: PlaneFactory,
) -> None:
    first = await make_plane()
    second = await make_plane()
    agents = [await ready_node(first) for _ in range(6)]
    for agent in agents:
        age_heartbeat(first.database_url, agent.node_id, TTL + 1)
    results = await asyncio.gather(*(_sweep(p) for p in (first, second, first, second)))
    assert sum(r.marked_not_ready for r in results) == len(agents)
    per_node = scalar(
        first.database_url,
        "SELECT max(c) FROM (SELECT count(*) AS c FROM node_events "
        "WHERE reason = 'HeartbeatStale' GROUP BY node_id) AS counts",
    )
    assert per_node == 1
    # Versions stay unique and every node's version is its last event.
    mismatched = scalar(
        first.database_url,
        "SELECT count(*) FROM nodes WHERE resource_version <> "
        "(SELECT max(event_id) FROM node_events e WHERE e.node_id = nodes.node_id)",
    )
    assert mismatched == 0


async def test_old_events_are_pruned_and_the_horizon_recorded(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    for slots in (1, 2, 3):
        await agent.heartbeat(ready=True, slots_in_use=slots)
    newest = scalar(plane.database_url, "SELECT max(event_id) FROM node_events")
    set_time(
        plane.database_url,
        "UPDATE node_events SET created_at = :t WHERE event_id < :v",
        7200,
        v=newest,
    )
    result = await _sweep(plane)
    assert result.events_pruned == newest - 1
    assert scalar(plane.database_url, "SELECT count(*) FROM node_events") == 1
    assert scalar(plane.database_url, "SELECT pruned_through FROM node_event_log") == newest - 1
    # Versions keep rising after pruning.
    later = (await agent.heartbeat(ready=True, slots_in_use=0)).node
    assert int(later.meta.resource_version) > newest


async def test_a_sweep_does_not_wait_on_a_node_another_transaction_holds(
    plane: RunningPlane, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("row locks and the version lock are PostgreSQL's; SQLite has one writer")
    held = await ready_node(plane)
    free = await ready_node(plane)
    for agent in (held, free):
        age_heartbeat(plane.database_url, agent.node_id, TTL + 1)
    engine = create_engine(plane.database_url)
    try:
        with engine.connect() as connection, connection.begin():
            connection.execute(
                text("SELECT 1 FROM nodes WHERE node_id = :n FOR UPDATE"), {"n": held.node_id}
            )
            # The fast path times out on the held row, the sweep runs again skipping it.
            result = await _sweep(plane)
            assert result.marked_not_ready == 1
        assert (await _node(plane, held.node_id)).status.readiness == node_pb2.READINESS_READY
        assert (await _node(plane, free.node_id)).status.readiness == node_pb2.READINESS_NOT_READY
        assert (await _sweep(plane)).marked_not_ready == 1  # the next sweep takes it
    finally:
        engine.dispose()
