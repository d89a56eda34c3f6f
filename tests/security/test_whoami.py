"""IdentityService.WhoAmI: who the edge takes a credential to be, from the
credential alone, as the portal and `pposctl whoami` ask it."""

from __future__ import annotations

import grpc
import pytest

from ppos.controlplane.auth.v1 import access_pb2
from ppos.controlplane.auth.v1 import identity_service_pb2 as pb
from ppos.controlplane.auth.v1 import identity_service_pb2_grpc as pb_grpc
from tests.ops.support import operator_env, pposctl
from tests.support.nodes import enroll_node
from tests.support.operators import add_operator
from tests.support.servers import RunningPlane


async def who(plane: RunningPlane, metadata: tuple[tuple[str, str], ...]) -> pb.WhoAmIResponse:
    stub = pb_grpc.IdentityServiceStub(plane.channel)
    return await stub.WhoAmI(pb.WhoAmIRequest(), metadata=metadata)


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("viewer", access_pb2.OPERATOR_ROLE_VIEWER),
        ("operator", access_pb2.OPERATOR_ROLE_OPERATOR),
        ("admin", access_pb2.OPERATOR_ROLE_ADMIN),
    ],
)
async def test_a_named_operator_is_named_with_its_role_whatever_x_operator_says(
    plane: RunningPlane, role: str, expected: int
) -> None:
    alice = await add_operator(plane, "alice", role)
    reply = await who(plane, (*alice.metadata, ("x-operator", "mallory")))
    assert (reply.kind, reply.name, reply.actor, reply.role) == (
        access_pb2.PRINCIPAL_KIND_OPERATOR,
        "alice",
        "operator:alice",
        expected,
    )


async def test_the_control_token_is_the_break_glass_admin_and_a_node_is_its_id(
    plane: RunningPlane,
) -> None:
    reply = await who(plane, plane.operator)
    assert (reply.actor, reply.role) == ("operator:break-glass", access_pb2.OPERATOR_ROLE_ADMIN)
    node = await enroll_node(plane.channel, plane.operator)
    reply = await who(plane, node.metadata)
    assert (reply.kind, reply.name, reply.role) == (
        access_pb2.PRINCIPAL_KIND_NODE,
        node.node_id,
        access_pb2.OPERATOR_ROLE_UNSPECIFIED,
    )


async def test_no_credential_or_a_wrong_one_learns_nothing(plane: RunningPlane) -> None:
    for metadata in ((), (("authorization", "Bearer not-a-credential"),)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await who(plane, metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_pposctl_whoami(plane: RunningPlane) -> None:
    viewer = await add_operator(plane, "vera", "viewer")
    env = operator_env(plane, PPOS_CONTROL_TOKEN=viewer.credential)
    result = await pposctl(plane, "whoami", env=env)
    assert (result.code, result.stdout.strip()) == (0, "operator:vera (role viewer)")
    result = await pposctl(plane, "whoami", "-o", "json", env=env)
    assert result.json()["role"] == "OPERATOR_ROLE_VIEWER"
