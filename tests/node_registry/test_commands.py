"""Re-image commands: lifecycle, idempotency, refusals, timeouts, lost nodes, peers."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from tests.node_registry.conftest import PlaneFactory
from tests.node_registry.helpers import (
    NEW_DIGEST,
    NEW_IMAGE,
    NodeAgent,
    age_heartbeat,
    db_state,
    enroll,
    ready_node,
    refusal,
    registry,
    scalar,
    set_time,
)
from tests.support.servers import RunningPlane

S = node_pb2  # command states and kinds live in node.proto


def _reimage(node_id: str, key: str = "", reason: str = "CVE-2026-1234", **extra: object):  # type: ignore[no-untyped-def]
    return pb.ReimageNodeRequest(
        node_id=node_id,
        target=node_pb2.ContainerVersion(image=NEW_IMAGE, digest=NEW_DIGEST),
        reason=reason,
        idempotency_key=key,
        **extra,  # type: ignore[arg-type]
    )


async def _issue(plane: RunningPlane, node_id: str, key: str = "") -> node_pb2.NodeCommand:
    reply = await registry(plane).ReimageNode(_reimage(node_id, key), metadata=plane.operator)
    return reply.command


async def _command(plane: RunningPlane, command_id: str) -> node_pb2.NodeCommand:
    reply = await registry(plane).GetNodeCommand(
        pb.GetNodeCommandRequest(command_id=command_id), metadata=plane.operator
    )
    return reply.command


async def test_reimage_lifecycle_from_issue_to_success(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    command = await _issue(plane, agent.node_id, key="rollout-42:node-1")
    assert command.state == S.NODE_COMMAND_STATE_PENDING
    assert (command.issued_by.kind, command.issued_by.name) == ("operator", "break-glass")
    assert command.deadline.seconds - command.create_time.seconds == 1800

    first = await agent.heartbeat(ready=True)
    assert [c.command_id for c in first.commands] == [command.command_id]
    assert first.commands[0].state == S.NODE_COMMAND_STATE_DELIVERED
    assert first.commands[0].reimage.target.digest == NEW_DIGEST
    # Not acknowledged yet: handed over again on the next heartbeat.
    second = await agent.heartbeat(ready=True)
    assert second.commands[0].delivery_count == 2

    acked = (await agent.report(command.command_id, S.NODE_COMMAND_STATE_ACKNOWLEDGED)).command
    assert acked.state == S.NODE_COMMAND_STATE_ACKNOWLEDGED
    beat = await agent.heartbeat(ready=True)
    assert beat.commands == []  # acknowledged commands are not handed out again
    assert beat.node.status.readiness == node_pb2.READINESS_REIMAGING

    done = (
        await agent.report(command.command_id, S.NODE_COMMAND_STATE_SUCCEEDED, "now on 7.5.0")
    ).command
    assert (done.state, done.result_message) == (S.NODE_COMMAND_STATE_SUCCEEDED, "now on 7.5.0")
    assert done.finish_time.seconds
    assert done.acknowledge_time.seconds
    assert done.deliver_time.seconds
    node = (
        await agent.heartbeat(
            ready=True, container=node_pb2.ContainerVersion(image=NEW_IMAGE, digest=NEW_DIGEST)
        )
    ).node
    assert node.status.readiness == node_pb2.READINESS_READY
    assert node.status.container.image == NEW_IMAGE
    states = scalar(
        plane.database_url,
        "SELECT count(*) FROM audit_log WHERE resource_kind = 'node_command' AND resource_id = :c",
        c=command.command_id,
    )
    assert states == 4  # issued, delivered, acknowledged, succeeded


async def test_idempotency_key_replays_and_refuses_another_body(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    stub = registry(plane)
    first = await stub.ReimageNode(_reimage(agent.node_id, "key-1"), metadata=plane.operator)
    replay = await stub.ReimageNode(_reimage(agent.node_id, "key-1"), metadata=plane.operator)
    assert (first.duplicate, replay.duplicate) == (False, True)
    assert replay.command.command_id == first.command.command_id
    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReimageNode(
            _reimage(agent.node_id, "key-1", reason="another reason"), metadata=plane.operator
        )
    seen = refusal(caught.value)
    assert (seen.code, seen.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert seen.metadata["command_id"] == first.command.command_id
    assert db_state(plane.database_url) == before


async def test_concurrent_replays_of_one_key_make_one_command(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    stub = registry(plane)
    replies = await asyncio.gather(
        *(
            stub.ReimageNode(_reimage(agent.node_id, "race"), metadata=plane.operator)
            for _ in range(5)
        )
    )
    assert len({r.command.command_id for r in replies}) == 1
    assert sorted(r.duplicate for r in replies) == [False, True, True, True, True]


async def test_one_reimage_at_a_time_per_node(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    running = await _issue(plane, agent.node_id)
    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _issue(plane, agent.node_id)
    seen = refusal(caught.value)
    assert (seen.code, seen.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REIMAGE_IN_PROGRESS")
    assert seen.metadata["command_id"] == running.command_id
    assert db_state(plane.database_url) == before


async def test_bad_reimage_requests_are_refused_with_every_field(plane: RunningPlane) -> None:
    agent = await enroll(plane)  # enrolled, never registered
    stub = registry(plane)
    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReimageNode(
            pb.ReimageNodeRequest(
                node_id=agent.node_id,
                target=node_pb2.ContainerVersion(image=NEW_IMAGE, digest="latest"),
                idempotency_key="has spaces",
                timeout=duration_pb2.Duration(seconds=5),
            ),
            metadata=plane.operator,
        )
    seen = refusal(caught.value)
    assert seen.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(seen.field_violations) == {"target.digest", "reason", "idempotency_key", "timeout"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _issue(plane, agent.node_id)
    assert refusal(caught.value).reason == "NODE_NOT_REGISTERED"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _issue(plane, "node_unknown")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert db_state(plane.database_url) == before


async def test_out_of_order_and_foreign_reports_are_refused(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    other = await ready_node(plane)
    command = await _issue(plane, agent.node_id)
    before = db_state(plane.database_url)
    cases = [
        (agent, S.NODE_COMMAND_STATE_ACKNOWLEDGED, "", "INVALID_COMMAND_TRANSITION"),  # pending
        (other, S.NODE_COMMAND_STATE_ACKNOWLEDGED, "", "NOT_YOUR_COMMAND"),
    ]
    for who, state, message, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await who.report(command.command_id, state, message)
        assert refusal(caught.value).reason == reason
    assert db_state(plane.database_url) == before
    await agent.heartbeat()  # delivered
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent.report(command.command_id, S.NODE_COMMAND_STATE_SUCCEEDED)
    seen = refusal(caught.value)
    assert (seen.reason, seen.metadata["state"]) == ("INVALID_COMMAND_TRANSITION", "DELIVERED")
    for state, message in (
        (S.NODE_COMMAND_STATE_FAILED, ""),
        (S.NODE_COMMAND_STATE_CANCELLED, "x"),
        (S.NODE_COMMAND_STATE_PENDING, ""),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent.report(command.command_id, state, message)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await agent.report(command.command_id, S.NODE_COMMAND_STATE_FAILED, "disk full")
    # A retried report is a no-op; a contradicting one is refused.
    again = (
        await agent.report(command.command_id, S.NODE_COMMAND_STATE_FAILED, "disk full")
    ).command
    assert again.state == S.NODE_COMMAND_STATE_FAILED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent.report(command.command_id, S.NODE_COMMAND_STATE_SUCCEEDED)
    seen = refusal(caught.value)
    assert (seen.reason, seen.metadata["state"]) == ("COMMAND_FINISHED", "FAILED")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent.report("cmd_unknown", S.NODE_COMMAND_STATE_ACKNOWLEDGED)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_an_acknowledged_reimage_and_refuse_cancelling_twice(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane)
    command = await _issue(plane, agent.node_id)
    await agent.heartbeat()
    await agent.report(command.command_id, S.NODE_COMMAND_STATE_ACKNOWLEDGED)
    stub = registry(plane)
    cancelled = (
        await stub.CancelNodeCommand(
            pb.CancelNodeCommandRequest(command_id=command.command_id, reason="wrong image"),
            metadata=plane.operator,
        )
    ).command
    assert cancelled.state == S.NODE_COMMAND_STATE_CANCELLED
    assert "wrong image" in cancelled.result_message
    node = (
        await stub.GetNode(pb.GetNodeRequest(node_id=agent.node_id), metadata=plane.operator)
    ).node
    assert node.status.readiness_reason == "ReimageCancelled"
    before = db_state(plane.database_url)
    for request in (
        pb.CancelNodeCommandRequest(command_id=command.command_id, reason="again"),
        pb.CancelNodeCommandRequest(command_id=command.command_id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CancelNodeCommand(request, metadata=plane.operator)
        assert caught.value.code() in (
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent.report(command.command_id, S.NODE_COMMAND_STATE_SUCCEEDED)
    assert refusal(caught.value).metadata["state"] == "CANCELLED"
    assert db_state(plane.database_url) == before


async def test_a_lost_nodes_commands_stay_pending_and_reach_it_when_it_returns(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane)
    age_heartbeat(plane.database_url, agent.node_id, 200)
    await registry(plane).RunHealthSweep(pb.RunHealthSweepRequest(), metadata=plane.operator)
    command = await _issue(plane, agent.node_id)
    await registry(plane).RunHealthSweep(pb.RunHealthSweepRequest(), metadata=plane.operator)
    pending = await registry(plane).ListNodeCommands(
        pb.ListNodeCommandsRequest(node_id=agent.node_id, states=[S.NODE_COMMAND_STATE_PENDING]),
        metadata=plane.operator,
    )
    assert [c.command_id for c in pending.commands] == [command.command_id]
    back = await agent.heartbeat(ready=True)
    assert back.node.status.readiness_reason == "HeartbeatResumed"
    assert [c.command_id for c in back.commands] == [command.command_id]


async def test_overdue_commands_time_out_visibly(plane: RunningPlane) -> None:
    lost = await ready_node(plane)
    slow = await ready_node(plane)
    never_delivered = await _issue(plane, lost.node_id)
    running = await _issue(plane, slow.node_id)
    await slow.heartbeat()
    await slow.report(running.command_id, S.NODE_COMMAND_STATE_ACKNOWLEDGED)
    age_heartbeat(plane.database_url, lost.node_id, 200)
    set_time(plane.database_url, "UPDATE node_commands SET deadline = :t", 1)
    result = await registry(plane).RunHealthSweep(
        pb.RunHealthSweepRequest(), metadata=plane.operator
    )
    assert (result.commands_timed_out, result.marked_lost) == (2, 1)
    timed_out = await _command(plane, never_delivered.command_id)
    assert timed_out.state == S.NODE_COMMAND_STATE_TIMED_OUT
    assert "never delivered: the node was LOST" in timed_out.result_message
    stuck = await _command(plane, running.command_id)
    assert "acknowledged but never completed" in stuck.result_message
    node = (
        await registry(plane).GetNode(
            pb.GetNodeRequest(node_id=slow.node_id), metadata=plane.operator
        )
    ).node
    assert node.status.readiness_reason == "ReimageTimedOut"
    # A late success report cannot rewrite the outcome.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await slow.report(running.command_id, S.NODE_COMMAND_STATE_SUCCEEDED)
    assert refusal(caught.value).metadata["state"] == "TIMED_OUT"


async def test_list_commands_newest_first_with_pages(plane: RunningPlane) -> None:
    agents = [await ready_node(plane) for _ in range(3)]
    issued = [await _issue(plane, a.node_id) for a in agents]
    stub = registry(plane)
    page = await stub.ListNodeCommands(
        pb.ListNodeCommandsRequest(page_size=2), metadata=plane.operator
    )
    rest = await stub.ListNodeCommands(
        pb.ListNodeCommandsRequest(page_size=2, page_token=page.next_page_token),
        metadata=plane.operator,
    )
    listed = [c.command_id for c in (*page.commands, *rest.commands)]
    assert listed == [c.command_id for c in reversed(issued)]
    assert rest.next_page_token == ""


async def test_governance_reimages_and_cordons_as_a_peer(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    peer = pb_grpc.NodeRegistryServiceStub(
        plane.runtime.peers.channel("noderegistry", caller="governance")
    )
    cordoned = await peer.CordonNode(
        pb.CordonNodeRequest(node_id=agent.node_id, reason="FAILED_RUNTIME_ENVIRONMENT on job_1")
    )
    assert not cordoned.node.spec.schedulable
    issued = await peer.ReimageNode(_reimage(agent.node_id, "policy:fre:job_1:1"))
    assert (issued.command.issued_by.kind, issued.command.issued_by.name) == (
        "service",
        "ppos.controlplane.governance",
    )
    replay = await peer.ReimageNode(_reimage(agent.node_id, "policy:fre:job_1:1"))
    assert replay.duplicate
    actors = scalar(
        plane.database_url,
        "SELECT count(*) FROM audit_log WHERE actor_kind = 'service' "
        "AND actor_name = 'ppos.controlplane.governance'",
    )
    assert actors == 2  # the cordon and the command


async def test_command_stream_delivers_new_commands_and_ends_on_shutdown(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane)
    earlier = await _issue(plane, agent.node_id)
    stream = agent.stub.StreamNodeCommands(pb.StreamNodeCommandsRequest(), metadata=agent.metadata)
    first = await asyncio.wait_for(stream.read(), 10)
    assert first.command.command_id == earlier.command_id
    assert first.command.state == S.NODE_COMMAND_STATE_DELIVERED
    await agent.report(earlier.command_id, S.NODE_COMMAND_STATE_FAILED, "no space")
    later = await _issue(plane, agent.node_id)
    second = await asyncio.wait_for(stream.read(), 10)
    assert second.command.command_id == later.command_id
    await plane.server.stop(grace=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(stream.read(), 10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_node_rpcs_refuse_operator_credentials(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    command = await _issue(plane, agent.node_id)
    impostor = NodeAgent(plane, agent.node_id, plane.token)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await impostor.report(command.command_id, S.NODE_COMMAND_STATE_ACKNOWLEDGED)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_command_issued_on_one_replica_reaches_a_stream_on_another(
    make_plane: PlaneFactory, backend: str
) -> None:
    # PostgreSQL: NOTIFY wakes the other replica's stream at once; SQLite: the
    # stream looks again every heartbeat interval.
    env = {"PPOS_HEARTBEAT_INTERVAL": "1s"} if backend == "sqlite" else {}
    issuer = await make_plane(**env)
    streamer = await make_plane(**env)
    agent = await ready_node(issuer)
    on_streamer = NodeAgent(streamer, agent.node_id, agent.credential)
    stream = on_streamer.stub.StreamNodeCommands(
        pb.StreamNodeCommandsRequest(), metadata=on_streamer.metadata
    )
    await asyncio.sleep(0.3)  # the stream is open and has found nothing yet
    command = await _issue(issuer, agent.node_id)
    delivered = await asyncio.wait_for(stream.read(), 15)
    assert delivered.command.command_id == command.command_id
    stream.cancel()
