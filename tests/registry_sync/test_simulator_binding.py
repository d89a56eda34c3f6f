"""The simulated gateway, like a real regional system, takes a PREFLIGHT_JWT for
one request only: a captured command token is worthless with another body, and
spent once it has been used."""

from __future__ import annotations

from pathlib import Path

import grpc

from ppos.controlplane.security.claims import request_sha256
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.tokens import TokenMinter
from ppos.preflight.v1 import gateway_service_pb2 as pb
from ppos.preflight.v1 import gateway_service_pb2_grpc as pb_grpc
from ppos.preflightsim.auth import gateway_audience
from tests.registry_sync.harness import call_error, prepare_keys, start_simulator

REGION = "eu-west-1"
APPLY = "/ppos.preflight.v1.PreflightGatewayService/ApplyQueuePolicy"


def command(capacity: int) -> pb.ApplyQueuePolicyRequest:
    return pb.ApplyQueuePolicyRequest(
        header=pb.CommandHeader(idempotency_key=f"cmd-{capacity}", reason="resize"),
        tenant_id="acme",
        queue_id="standard",
        capacity=capacity,
        state=pb.QUEUE_STATE_ACTIVE,
        generation=capacity,
    )


async def test_a_gateway_command_token_is_bound_and_spent_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jwks = prepare_keys(data)
    minter = TokenMinter(KeyRing.from_directory(data / "keys"), issuer="ppos-control-plane")
    running = await start_simulator(REGION, jwks)
    assert running.gateway is not None
    intended = command(8)
    token = minter.mint_preflight(
        subject="ppos.controlplane.governance",
        audience=gateway_audience(REGION),
        method=APPLY,
        request_id="req_captured",
        request_sha256=request_sha256(intended.SerializeToString()),
    )
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.PreflightGatewayServiceStub(channel)
            forged = await call_error(stub.ApplyQueuePolicy(command(1), metadata=metadata))
            assert forged.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "another request" in (forged.details() or "")
            assert running.gateway.calls == []

            ack = await stub.ApplyQueuePolicy(intended, metadata=metadata)
            assert not ack.ack.duplicate

            replayed = await call_error(stub.ApplyQueuePolicy(intended, metadata=metadata))
            assert replayed.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "already used" in (replayed.details() or "")
    finally:
        await running.stop(0)
    applied = running.gateway.applied("ApplyQueuePolicy")
    assert [call.request["capacity"] for call in applied] == [8]
    assert len(running.gateway.calls) == 1
