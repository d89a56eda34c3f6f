"""A PREFLIGHT_JWT is worth one request: bound to its body, spent once on a mutation.

Tokens are minted here as a peer service's outbound channel would mint them
(the plane's own minter, `rqh` the SHA-256 of the serialized request) and then
replayed as someone who captured them would: with another body, twice, and on
another replica of the same database. Every refusal changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.claims import request_sha256
from tests.node_registry.helpers import refusal
from tests.support.dbstate import row_counts
from tests.support.nodes import EnrolledNode, enroll_node
from tests.support.servers import RunningPlane, start_plane, stop_plane

NODE_REGISTRY = "ppos.controlplane.noderegistry.v1.NodeRegistryService"
GET_NODE = f"/{NODE_REGISTRY}/GetNode"
CORDON = f"/{NODE_REGISTRY}/CordonNode"
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


def mint(plane: RunningPlane, method: str, request: Message | None) -> tuple[tuple[str, str], ...]:
    token = plane.runtime.minter.mint_preflight(
        subject="ppos.controlplane.governance",
        audience=NODE_REGISTRY,
        method=method,
        request_id="req_binding",
        request_sha256=request_sha256(request.SerializeToString()) if request else "",
    )
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def node(plane: RunningPlane) -> EnrolledNode:
    return await enroll_node(plane.channel, plane.operator)


async def test_a_bound_token_is_accepted_with_its_own_body(
    plane: RunningPlane, node: EnrolledNode
) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    request = pb.GetNodeRequest(node_id=node.node_id)
    metadata = mint(plane, GET_NODE, request)
    assert (await stub.GetNode(request, metadata=metadata)).node.node_id == node.node_id
    # A read replayed with its own body is allowed: it reads what the token's
    # holder could read anyway, and a ledger write per read would cost every
    # peer read a database write (docs/security.md).
    assert (await stub.GetNode(request, metadata=metadata)).node.node_id == node.node_id


async def test_a_token_with_another_body_is_refused(
    plane: RunningPlane, node: EnrolledNode
) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    other = await enroll_node(plane.channel, plane.operator, region="ap-south-1")
    captured = mint(plane, CORDON, pb.CordonNodeRequest(node_id=other.node_id, reason="planned"))
    before = row_counts(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CordonNode(
            pb.CordonNodeRequest(node_id=node.node_id, reason="planned"), metadata=captured
        )
    assert caught.value.code() == UNAUTH
    assert refusal(caught.value).reason == "TOKEN_REQUEST_MISMATCH"
    assert row_counts(plane.database_url) == before
    got = await stub.GetNode(pb.GetNodeRequest(node_id=node.node_id), metadata=plane.operator)
    assert got.node.spec.schedulable


async def test_an_unbound_token_is_refused(plane: RunningPlane, node: EnrolledNode) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetNode(
            pb.GetNodeRequest(node_id=node.node_id), metadata=mint(plane, GET_NODE, None)
        )
    assert caught.value.code() == UNAUTH
    assert refusal(caught.value).reason == "TOKEN_UNBOUND"


async def test_a_mutating_token_is_spent_once(plane: RunningPlane, node: EnrolledNode) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    request = pb.CordonNodeRequest(node_id=node.node_id, reason="planned")
    metadata = mint(plane, CORDON, request)
    first = await stub.CordonNode(request, metadata=metadata)
    assert not first.node.spec.schedulable
    before = row_counts(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CordonNode(request, metadata=metadata)
    assert caught.value.code() == UNAUTH
    assert refusal(caught.value).reason == "TOKEN_REPLAYED"
    assert row_counts(plane.database_url) == before


@pytest.fixture
async def replica(
    plane: RunningPlane, tmp_path: Path, secret_registry: SecretRegistry
) -> AsyncIterator[RunningPlane]:
    """A second replica on the same database, with the same signing keys."""
    running = await start_plane(
        token=plane.token,
        database_url=plane.database_url,
        data_dir=tmp_path / "replica",
        secrets=secret_registry,
        extra_env={"PPOS_KEY_DIR": str(plane.data_dir / "keys")},
    )
    yield running
    await stop_plane(running)


async def test_a_mutating_token_spent_on_one_replica_is_refused_by_another(
    plane: RunningPlane, replica: RunningPlane, node: EnrolledNode
) -> None:
    request = pb.CordonNodeRequest(node_id=node.node_id, reason="planned")
    metadata = mint(plane, CORDON, request)
    await pb_grpc.NodeRegistryServiceStub(plane.channel).CordonNode(request, metadata=metadata)
    before = row_counts(plane.database_url)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.NodeRegistryServiceStub(replica.channel).CordonNode(
            request, metadata=metadata
        )
    assert caught.value.code() == UNAUTH
    assert refusal(caught.value).reason == "TOKEN_REPLAYED"
    assert row_counts(plane.database_url) == before
