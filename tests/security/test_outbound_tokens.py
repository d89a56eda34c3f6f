"""What leaves the process: every outbound call carries a freshly minted
PREFLIGHT_JWT for its callee and method, and never the control token.

An operator calls Relay on a real control plane; Relay calls a downstream peer
(a recording gRPC server standing in for a registry or gateway) through the
real outbound interceptor. The recorder keeps the metadata it received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jwt
import pytest

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.security.tokens import PREFLIGHT_TYP
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
    metadata = (*relay_plane.operator, ("x-request-id", "req_outbound_1"), ("x-operator", "alice"))
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
        assert claims["act"] == {"sub": "operator:alice"}
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
    reply = await relay(
        b"x", metadata=(*plane.operator, ("x-request-id", "req_hop"), ("x-operator", "bob"))
    )
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
