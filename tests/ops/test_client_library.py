"""The client library: errors read back from real statuses with their rich details,
retries of UNAVAILABLE (bounded, jittered, honouring RetryInfo, one request id),
and where the control token may come from."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ppos.controlplane.auth.v1 import jwks_service_pb2, jwks_service_pb2_grpc
from ppos.controlplane.client import (
    ConfigurationError,
    Connection,
    ControlPlane,
    InvalidArgumentError,
    NotFoundError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
    load_config,
)
from ppos.controlplane.client.config import ClientConfig, Token
from ppos.controlplane.client.public import JwksClient
from ppos.controlplane.noderegistry.v1 import node_pb2
from tests.ops.support import IMAGE, control_plane, new_node
from tests.support.servers import RunningPlane


async def test_errors_carry_the_servers_details(plane: RunningPlane) -> None:
    def calls() -> tuple[Any, Any, Any]:
        with control_plane(plane) as cp:
            with pytest.raises(InvalidArgumentError) as bad:
                cp.nodes.create_enrollment("Bad Region", ttl_seconds=1)
            with pytest.raises(NotFoundError) as missing:
                cp.nodes.get_node("node_nosuch")
        wrong = ClientConfig(address=plane.address, token=Token("ppos_ct_" + "x" * 40, "test"))
        with ControlPlane(wrong) as cp, pytest.raises(UnauthenticatedError) as refused:
            cp.nodes.get_node("node_x")
        return bad.value, missing.value, refused.value

    bad, missing, refused = await asyncio.to_thread(calls)
    assert {v.field for v in bad.field_violations} == {"region", "ttl"}
    assert bad.reason == "INVALID_ARGUMENT"
    assert bad.request_id.startswith("req_")
    assert bad.details.domain == "controlplane.ppos.printprice"
    assert (missing.resource_type, missing.resource_name) == ("node", "node_nosuch")
    assert missing.one_line().startswith("Error from server (NotFound): node 'node_nosuch'")
    assert refused.reason == "UNKNOWN_CREDENTIAL"
    assert refused.method == "GetNode"


async def test_node_agent_and_operator_views_agree(plane: RunningPlane) -> None:
    node = await new_node(plane, region="us-east-1", ready=False)

    def read() -> node_pb2.Node:
        with control_plane(plane) as cp:
            return cp.nodes.get_node(node.node_id)

    seen = await asyncio.to_thread(read)
    assert seen.spec.region == "us-east-1"
    assert seen.status.readiness == node_pb2.READINESS_NOT_READY
    assert seen.status.container.image == IMAGE


class _Flaky(jwks_service_pb2_grpc.JwksServiceServicer):
    """A JwksService that is UNAVAILABLE (with RetryInfo) `failures` times first.

    A stand-in server: the real one cannot be made to fail on cue."""

    def __init__(self, failures: int, retry_after: float = 0.0) -> None:
        self.failures = failures
        self.retry_after = retry_after
        self.request_ids: list[str] = []

    async def GetJwks(self, request: Any, context: Any) -> jwks_service_pb2.GetJwksResponse:
        metadata = dict(context.invocation_metadata())
        self.request_ids.append(metadata.get("x-request-id", ""))
        if len(self.request_ids) <= self.failures:
            info = error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(nanos=int(self.retry_after * 1e9))
            )
            detail = any_pb2.Any()
            detail.Pack(info)
            status = rpc_status.to_status(
                status_pb2.Status(code=code_pb2.UNAVAILABLE, message="warming up", details=[detail])
            )
            await context.abort(status.code, status.details, status.trailing_metadata)
        return jwks_service_pb2.GetJwksResponse(active_kid="k1")


async def _serve(servicer: _Flaky) -> AsyncIterator[str]:
    server = grpc.aio.server()
    jwks_service_pb2_grpc.add_JwksServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[_Flaky, str]]:
    servicer = _Flaky(failures=2, retry_after=0.3)
    async for address in _serve(servicer):
        yield servicer, address


async def test_unavailable_is_retried_with_one_request_id_and_retry_info(
    flaky: tuple[_Flaky, str],
) -> None:
    servicer, address = flaky
    slept: list[float] = []

    def call() -> str:
        config = ClientConfig(address=address, retry=RetryPolicy(max_attempts=5))
        with Connection(config, sleep=slept.append) as conn:
            return JwksClient(conn).get().active_kid

    assert await asyncio.to_thread(call) == "k1"
    assert len(servicer.request_ids) == 3
    assert len(set(servicer.request_ids)) == 1
    assert servicer.request_ids[0].startswith("req_")
    assert len(slept) == 2
    assert all(delay >= 0.3 for delay in slept)  # RetryInfo honoured


async def test_retries_stop_at_the_attempt_limit(flaky: tuple[_Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 100

    def call() -> UnavailableError:
        config = ClientConfig(address=address, retry=RetryPolicy(max_attempts=3))
        with (
            Connection(config, sleep=lambda _s: None) as conn,
            pytest.raises(UnavailableError) as caught,
        ):
            JwksClient(conn).get()
        return caught.value

    error = await asyncio.to_thread(call)
    assert error.attempts == 3
    assert len(servicer.request_ids) == 3
    assert error.retry_after == pytest.approx(0.3)
    assert error.message == "warming up"


async def test_retries_stop_at_the_deadline(flaky: tuple[_Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 100
    servicer.retry_after = 2.0  # longer than the whole deadline

    def call() -> UnavailableError:
        config = ClientConfig(address=address, timeout=1.0, retry=RetryPolicy(max_attempts=10))
        with (
            Connection(config, sleep=lambda _s: None) as conn,
            pytest.raises(UnavailableError) as caught,
        ):
            JwksClient(conn).get()
        return caught.value

    error = await asyncio.to_thread(call)
    assert error.attempts == 1  # waiting 2 s would pass the 1 s deadline: give up at once


async def test_other_failures_are_not_retried(plane: RunningPlane) -> None:
    def call() -> int:
        with control_plane(plane) as cp:
            with pytest.raises(NotFoundError):
                cp.nodes.get_node("node_nosuch")
            return cp.connection.attempts_made

    assert await asyncio.to_thread(call) == 1


def test_token_sources(tmp_path: Path) -> None:
    token = "ppos_ct_" + "t" * 40
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    from_file = load_config({"PPOS_CONTROL_TOKEN_FILE": str(token_file)})
    assert from_file.require_token().value == token
    assert from_file.warnings == ()
    assert token not in repr(from_file)
    assert token not in str(from_file.token)
    assert (
        load_config({"PPOS_CONTROL_TOKEN": token}).require_token().source == "$PPOS_CONTROL_TOKEN"
    )
    flag = load_config({"PPOS_CONTROL_TOKEN": "ignored" * 6}, token_file=token_file)
    assert flag.require_token().value == token  # the flag wins over the environment
    with pytest.raises(ConfigurationError, match="not both"):
        load_config({"PPOS_CONTROL_TOKEN": token, "PPOS_CONTROL_TOKEN_FILE": str(token_file)})
    with pytest.raises(ConfigurationError, match="no control token"):
        load_config({}).require_token()
    token_file.write_text("has spaces in it\n")
    with pytest.raises(ConfigurationError, match="characters a bearer token cannot"):
        load_config({"PPOS_CONTROL_TOKEN_FILE": str(token_file)})
    with pytest.raises(ConfigurationError, match="is not host:port"):
        load_config({"PPOS_ADDRESS": "no-port"})
    with pytest.raises(ConfigurationError, match="PPOS_TIMEOUT"):
        load_config({"PPOS_TIMEOUT": "soon"})
    assert load_config({"PPOS_TIMEOUT": "250ms"}).timeout == pytest.approx(0.25)
