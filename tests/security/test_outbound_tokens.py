"""What leaves the process: every outbound call carries a freshly minted
PREFLIGHT_JWT for its callee and method, and never the control token.

An operator calls Relay on a real control plane; Relay calls a downstream peer
(a recording gRPC server standing in for a registry or gateway) through the
real outbound interceptor. The recorder keeps the metadata it received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as nr_grpc
from ppos.controlplane.security.claims import PREFLIGHT_TYP, PreflightClaims
from ppos.controlplane.security.outbound import open_channel
from ppos.controlplane.security.principal import current_request_id
from ppos.controlplane.security.self_minted import SelfMinted
from tests.support.operators import add_operator
from tests.support.recorder import Recorder
from tests.support.relay import ECHO, ECHO_SERVICE, RELAY
from tests.support.servers import RunningPlane, start_plane, stop_plane


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    peer = Recorder()
    await peer.start()
    yield peer
    await peer.stop()


@pytest.fixture
async def relay_plane(
    recorder: Recorder,
    database_url: str,
    tmp_path: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> AsyncIterator[RunningPlane]:
    running = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        relay_target=recorder.address,
    )
    yield running
    await stop_plane(running)


async def test_each_outbound_call_carries_a_fresh_token_and_never_the_control_token(
    relay_plane: RunningPlane, recorder: Recorder, canary_token: str
) -> None:
    relay = relay_plane.channel.unary_unary(RELAY)
    metadata = (*relay_plane.operator, ("x-request-id", "req_outbound_1"))
    for _ in range(3):
        await relay(b"ping", metadata=metadata)

    assert [call.method for call in recorder.calls] == [ECHO] * 3
    jtis = set()
    keyring = relay_plane.runtime.keyring
    for call in recorder.calls:
        flat = repr(call.metadata)
        assert canary_token not in flat, "control token forwarded downstream"
        authorizations = [v for k, v in call.metadata if k == "authorization"]
        assert len(authorizations) == 1
        token = authorizations[0].removeprefix("Bearer ")
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "ES256"
        assert header["typ"] == PREFLIGHT_TYP
        assert header["kid"] == keyring.active.kid
        claims = jwt.decode(
            token,
            keyring.public_key(header["kid"]),
            algorithms=["ES256"],
            audience=ECHO_SERVICE,
            issuer="ppos-control-plane",
        )
        assert claims["sub"] == "ppos.controlplane.relay"
        assert claims["act"] == {"sub": "operator:break-glass"}
        assert claims["mth"] == ECHO
        assert claims["rid"] == "req_outbound_1"
        assert 0 < claims["exp"] - claims["iat"] <= 300
        assert dict(call.metadata)["x-request-id"] == "req_outbound_1"
        jtis.add(claims["jti"])
    assert len(jtis) == 3, "a token must never be reused across calls"


async def test_peer_hop_is_verified_by_the_callee_edge(plane: RunningPlane) -> None:
    """Relay -> Echo on the same plane: the callee's edge verifies the minted token
    and sees the calling service, the operator it acts for and the request id."""
    relay = plane.channel.unary_unary(RELAY)
    bob = await add_operator(plane, "bob", "admin")
    reply = await relay(b"x", metadata=(*bob.metadata, ("x-request-id", "req_hop")))
    subject, acting_for, request_id, body = reply.split(b"|")
    assert subject == b"ppos.controlplane.relay"
    assert acting_for == b"operator:bob"
    assert request_id == b"req_hop"
    assert body == b"x"


async def test_operators_cannot_call_peer_only_methods(plane: RunningPlane) -> None:
    echo = plane.channel.unary_unary(ECHO)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo(b"x", metadata=plane.operator)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_peer_call_back_to_this_process_is_recognised_and_still_authorised(
    plane: RunningPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the one-port server a peer hop comes back through our own port: its edge
    recognises the token its own channel minted (no signature check), and still
    authenticates and authorises the call as the peer's."""
    peers = plane.runtime.peers
    registry = peers.self_minted
    assert registry is not None
    taken = _record_takes(registry, monkeypatch)
    stub = nr_grpc.NodeRegistryServiceStub(peers.channel("noderegistry", caller="governance"))
    current_request_id.set("req_self_minted_hop")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetNode(nr_pb.GetNodeRequest(node_id="node_never_enrolled"), timeout=10)

    # NOT_FOUND comes from the handler: the edge let the peer through.
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    ours = [(claims, found) for claims, found in taken if claims["rid"] == "req_self_minted_hop"]
    assert len(ours) == 1
    claims, found = ours[0]
    assert found, "the edge recognised the token its own channel minted"
    assert claims["mth"] == "/ppos.controlplane.noderegistry.v1.NodeRegistryService/GetNode"
    assert claims["sub"] == "ppos.controlplane.governance"


def _record_takes(
    registry: SelfMinted, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[dict[str, Any], bool]]:
    """(claims, recognised) of every token the edge looks up, in order."""
    taken: list[tuple[dict[str, Any], bool]] = []
    real = registry.take

    def recording(token: str) -> tuple[PreflightClaims, str] | None:
        known = real(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        taken.append((claims, known is not None))
        return known

    monkeypatch.setattr(registry, "take", recording)
    return taken


async def test_a_peer_call_from_another_process_is_verified_in_full(
    plane: RunningPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel that is not this process's own loopback (another replica, a split
    deployment) remembers nothing: the callee verifies the signature."""
    registry = plane.runtime.peers.self_minted
    assert registry is not None
    taken = _record_takes(registry, monkeypatch)
    channel = open_channel(
        plane.address,
        plane.runtime.minter,
        audience="ppos.controlplane.noderegistry.v1.NodeRegistryService",
        subject="ppos.controlplane.governance",
    )
    current_request_id.set("req_remote_hop")
    try:
        stub = nr_grpc.NodeRegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetNode(nr_pb.GetNodeRequest(node_id="node_never_enrolled"), timeout=10)
    finally:
        await channel.close()

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert [found for claims, found in taken if claims["rid"] == "req_remote_hop"] == [False]
