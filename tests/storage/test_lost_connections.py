"""A database connection lost in the middle of a call is UNAVAILABLE with a retry
delay (`DATABASE_UNAVAILABLE`), not INTERNAL; it changes nothing, and the next call
gets a fresh connection (PostgreSQL: a real server, its backend really ended)."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest

from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from tests.node_registry.helpers import db_state, ready_node, refusal, registry
from tests.support.databases import _libpq, runtime_url
from tests.support.polling import eventually
from tests.support.servers import RunningPlane

WAITING_ON_A_ROW_LOCK = (
    "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_connection_lost_mid_call_is_unavailable_and_changes_nothing(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane)
    stub = registry(plane)
    # As the plane's login: pg_stat_activity shows a role's waits to that role only.
    holder = await psycopg.AsyncConnection.connect(_libpq(runtime_url(plane.database_url)))
    try:
        # Hold the node's row so the Cordon below waits inside its transaction.
        await holder.execute("SELECT 1 FROM nodes WHERE node_id = %s FOR UPDATE", (agent.node_id,))
        before = await asyncio.to_thread(db_state, plane.database_url)
        cordon = stub.CordonNode(  # under way once made: a grpc.aio call is awaitable
            pb.CordonNodeRequest(node_id=agent.node_id, reason="rack move"),
            metadata=plane.operator,
            timeout=30,
        )

        async def waiting_on_a_row_lock() -> list[tuple[int]]:
            return await (await holder.execute(WAITING_ON_A_ROW_LOCK)).fetchall()

        waiting = await eventually(waiting_on_a_row_lock, bool, within=20)
        assert len(waiting) == 1, waiting
        await holder.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cordon
    finally:
        await holder.rollback()
        await holder.close()

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    seen = refusal(caught.value)
    assert seen.reason == "DATABASE_UNAVAILABLE"
    assert seen.retry_seconds is not None
    assert seen.retry_seconds > 0
    assert "request_id" in seen.metadata
    assert await asyncio.to_thread(db_state, plane.database_url) == before

    # The retry the status asks for works: the pool hands out a live connection.
    node = (
        await stub.CordonNode(
            pb.CordonNodeRequest(node_id=agent.node_id, reason="rack move"),
            metadata=plane.operator,
            timeout=30,
        )
    ).node
    assert not node.spec.schedulable
