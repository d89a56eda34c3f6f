"""Registration and heartbeats: versions, readiness, and refusals that change nothing."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from tests.node_registry.helpers import (
    IMAGE,
    NEW_DIGEST,
    NEW_IMAGE,
    db_state,
    enroll,
    ready_node,
    refusal,
    registry,
    scalar,
)
from tests.support.servers import RunningPlane


async def test_enroll_register_heartbeat_makes_a_ready_node(plane: RunningPlane) -> None:
    agent = await enroll(plane, labels={"tier": "edge"})
    enrolled = await registry(plane).GetNode(
        pb.GetNodeRequest(node_id=agent.node_id), metadata=plane.operator
    )
    assert enrolled.node.status.readiness == node_pb2.READINESS_NOT_READY
    assert enrolled.node.status.readiness_reason == "Enrolled"

    registered = await agent.register(labels={"gpu": "true"}, capacity_slots=8)
    assert registered.node.spec.capacity_slots == 8
    assert dict(registered.node.meta.labels) == {"gpu": "true"}
    assert registered.node.status.container.image == IMAGE
    assert registered.heartbeat.ttl.seconds == 30

    beat = await agent.heartbeat(ready=True, slots_in_use=3)
    node = beat.node
    assert node.status.readiness == node_pb2.READINESS_READY
    assert node.status.slots_in_use == 3
    conditions = {c.type: c for c in node.status.conditions}
    assert set(conditions) == {"Ready", "Schedulable", "HeartbeatFresh"}
    assert conditions["Ready"].reason == "HeartbeatReady"
    # Every change has its own version from the one registry sequence.
    versions = [
        int(v)
        for v in (
            enrolled.node.meta.resource_version,
            registered.node.meta.resource_version,
            node.meta.resource_version,
        )
    ]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    events = scalar(
        plane.database_url,
        "SELECT count(*) FROM node_events WHERE node_id = :n",
        n=agent.node_id,
    )
    assert events == 3


async def test_heartbeat_that_changes_nothing_refreshes_liveness_without_a_version(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane)
    first = (await agent.heartbeat(ready=True, slots_in_use=1)).node
    same = (await agent.heartbeat(ready=True, slots_in_use=1)).node
    assert same.meta.resource_version == first.meta.resource_version
    assert same.status.last_heartbeat_time.ToNanoseconds() > (
        first.status.last_heartbeat_time.ToNanoseconds()
    )
    changed = (await agent.heartbeat(ready=True, slots_in_use=2)).node
    assert int(changed.meta.resource_version) > int(first.meta.resource_version)


async def test_container_change_and_not_ready_reason_are_recorded(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    beat = await agent.heartbeat(
        ready=False,
        not_ready_reason="DiskPressure",
        container=node_pb2.ContainerVersion(image=NEW_IMAGE, digest=NEW_DIGEST),
    )
    assert beat.node.status.readiness == node_pb2.READINESS_NOT_READY
    assert beat.node.status.readiness_reason == "DiskPressure"
    assert beat.node.status.container.image == NEW_IMAGE
    audited = scalar(
        plane.database_url,
        "SELECT count(*) FROM audit_log WHERE resource_id = :n AND after_json LIKE :img",
        n=agent.node_id,
        img=f"%{NEW_IMAGE}%",
    )
    assert audited == 1


async def test_reregistering_the_same_declaration_is_not_a_change(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    before = (await agent.register()).node.meta.resource_version
    again = (await agent.register()).node.meta.resource_version
    assert again == before
    relabelled = (await agent.register(labels={"gpu": "false"})).node
    assert int(relabelled.meta.resource_version) > int(before)
    assert relabelled.meta.generation == 3  # enrolment, first registration, relabel


async def test_renewing_the_credential_revokes_the_old_one(plane: RunningPlane) -> None:
    agent = await ready_node(plane)
    renewed = await agent.stub.RenewNodeCredential(
        pb.RenewNodeCredentialRequest(), metadata=agent.metadata
    )
    old = agent.metadata
    agent.credential = renewed.node_credential
    assert (await agent.heartbeat()).node.status.credential_generation == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent.stub.Heartbeat(pb.HeartbeatRequest(ready=True), metadata=old)
    assert refusal(caught.value).reason == "NODE_CREDENTIAL_REVOKED"


async def test_a_node_cannot_heartbeat_or_register_for_another_node(plane: RunningPlane) -> None:
    mallory = await ready_node(plane)
    victim = await ready_node(plane)
    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mallory.heartbeat(ready=False, node_id=victim.node_id, slots_in_use=1)
    seen = refusal(caught.value)
    assert seen.code == grpc.StatusCode.PERMISSION_DENIED
    assert seen.reason == "NODE_ID_MISMATCH"
    assert victim.node_id in seen.message
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mallory.register(node_id=victim.node_id, capacity_slots=1)
    assert refusal(caught.value).code == grpc.StatusCode.PERMISSION_DENIED
    assert db_state(plane.database_url) == before
    # Naming itself is fine.
    assert (await mallory.heartbeat(node_id=mallory.node_id)).node.node_id == mallory.node_id


async def test_operators_and_peers_cannot_call_node_rpcs(plane: RunningPlane) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await registry(plane).Heartbeat(pb.HeartbeatRequest(ready=True), metadata=plane.operator)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    peer = registry_peer(plane)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await peer.Heartbeat(pb.HeartbeatRequest(ready=True))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def registry_peer(plane: RunningPlane):  # type: ignore[no-untyped-def]
    from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc

    return pb_grpc.NodeRegistryServiceStub(
        plane.runtime.peers.channel("noderegistry", caller="governance")
    )


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"capacity_slots": -1}, {"capacity_slots"}),
        ({"capacity_slots": 5000}, {"capacity_slots"}),
        (
            {"labels": {"bad key!": "x", "ok": "white space"}},
            {"labels['bad key!']", "labels['ok']"},
        ),
        ({"image": "", "digest": ""}, {"container.image"}),
        ({"digest": "sha256:XYZ"}, {"container.digest"}),
        ({"region": "EU West"}, {"region"}),
    ],
)
async def test_bad_registrations_are_refused_precisely_and_change_nothing(
    plane: RunningPlane, fields: dict[str, object], violations: set[str]
) -> None:
    agent = await enroll(plane)
    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent.register(**fields)
    seen = refusal(caught.value)
    assert seen.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(seen.field_violations) == violations
    assert db_state(plane.database_url) == before


async def test_bad_heartbeats_are_refused_precisely_and_change_nothing(
    plane: RunningPlane,
) -> None:
    agent = await ready_node(plane, capacity_slots=2)
    before = db_state(plane.database_url)
    cases = [
        ({"slots_in_use": -1}, grpc.StatusCode.INVALID_ARGUMENT, "slots_in_use"),
        ({"slots_in_use": 3}, grpc.StatusCode.INVALID_ARGUMENT, "slots_in_use"),
        (
            {"ready": True, "not_ready_reason": "DiskPressure"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "not_ready_reason",
        ),
        (
            {"ready": False, "not_ready_reason": "disk is full; help"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "not_ready_reason",
        ),
        (
            {"container": node_pb2.ContainerVersion(digest=NEW_DIGEST)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "container.image",
        ),
    ]
    for fields, code, field in cases:
        ready = bool(fields.pop("ready", True))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent.heartbeat(ready=ready, **fields)
        seen = refusal(caught.value)
        assert (seen.code, field in seen.field_violations) == (code, True), fields
    assert db_state(plane.database_url) == before


async def test_heartbeat_before_registration_and_wrong_region_are_preconditions(
    plane: RunningPlane,
) -> None:
    agent = await enroll(plane, region="eu-west-1")
    before = db_state(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent.heartbeat()
    assert refusal(caught.value).reason == "NODE_NOT_REGISTERED"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent.register(region="us-east-1")
    seen = refusal(caught.value)
    assert (seen.code, seen.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REGION_MISMATCH")
    assert db_state(plane.database_url) == before


async def test_concurrent_heartbeats_are_each_decided_on_their_own(plane: RunningPlane) -> None:
    agents = [await ready_node(plane) for _ in range(12)]
    revoked = agents[3]
    renewed = await revoked.stub.RenewNodeCredential(
        pb.RenewNodeCredentialRequest(), metadata=revoked.metadata
    )
    too_many = agents[5]  # capacity 4
    twice = agents[7]
    calls = [
        a.heartbeat(ready=True, slots_in_use=9 if a is too_many else 1 + i % 3)
        for i, a in enumerate(agents)
    ]
    calls.append(twice.heartbeat(ready=False, not_ready_reason="Draining", slots_in_use=2))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[3], grpc.aio.AioRpcError)
    assert refusal(results[3]).reason == "NODE_CREDENTIAL_REVOKED"
    assert isinstance(results[5], grpc.aio.AioRpcError)
    assert refusal(results[5]).code == grpc.StatusCode.INVALID_ARGUMENT
    for index, (agent, reply) in enumerate(zip(agents, results, strict=False)):
        if index in (3, 5):
            continue
        assert isinstance(reply, pb.HeartbeatResponse), reply
        assert reply.node.node_id == agent.node_id
        if index != 7:
            assert reply.node.status.slots_in_use == 1 + index % 3
    # The same node twice: answered in order, each with the node as of its heartbeat.
    first, second = results[7], results[-1]
    assert isinstance(first, pb.HeartbeatResponse)
    assert isinstance(second, pb.HeartbeatResponse)
    assert first.node.status.readiness == node_pb2.READINESS_READY
    assert second.node.status.readiness_reason == "Draining"
    assert int(second.node.meta.resource_version) > int(first.node.meta.resource_version)
    # Nothing of the refused heartbeats was written.
    revoked.credential = renewed.node_credential
    assert (await revoked.heartbeat()).node.status.slots_in_use == 0
    assert (
        await registry(plane).GetNode(
            pb.GetNodeRequest(node_id=too_many.node_id), metadata=plane.operator
        )
    ).node.status.slots_in_use == 0
