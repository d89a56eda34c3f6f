"""The client library retries ABORTED only for calls that carry a request id (the
server answers a repeat with the first call's result), honouring RetryInfo, within
the attempt limit; a call without one gets AbortedError after its first attempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ppos.controlplane.client import AbortedError, Connection, RetryPolicy
from ppos.controlplane.client.config import ClientConfig, Token
from ppos.controlplane.client.connection import carries_request_id
from ppos.controlplane.client.governance import GovernanceClient
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as pb_grpc
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb

RETRY_AFTER = 0.25


class _Conflicted(pb_grpc.GovernanceServiceServicer):
    """A GovernanceService whose queue writes lose to concurrent changes `conflicts` times.

    A stand-in server: the real one cannot be made to conflict on cue on every
    database (tests/governance/test_database_conflicts.py does it on PostgreSQL)."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.calls: list[tuple[str, str]] = []  # (method, x-request-id)

    async def _maybe_abort(self, method: str, context: Any) -> None:
        metadata = dict(context.invocation_metadata())
        self.calls.append((method, metadata.get("x-request-id", "")))
        if len(self.calls) <= self.conflicts:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(nanos=int(RETRY_AFTER * 1e9))
                )
            )
            status = rpc_status.to_status(
                status_pb2.Status(code=code_pb2.ABORTED, message="lost a race", details=[detail])
            )
            await context.abort(status.code, status.details, status.trailing_metadata)

    async def CreateQueue(self, request: Any, context: Any) -> pb.CreateQueueResponse:
        await self._maybe_abort("CreateQueue", context)
        return pb.CreateQueueResponse(queue=res.Queue())

    async def ResizeQueue(self, request: Any, context: Any) -> pb.ResizeQueueResponse:
        await self._maybe_abort("ResizeQueue", context)
        return pb.ResizeQueueResponse(queue=res.Queue())


@pytest.fixture
async def conflicted() -> AsyncIterator[tuple[_Conflicted, str]]:
    servicer = _Conflicted(conflicts=2)
    server = grpc.aio.server()
    pb_grpc.add_GovernanceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def _config(address: str, attempts: int = 5) -> ClientConfig:
    return ClientConfig(
        address=address,
        token=Token("ppos_ct_" + "s" * 40, "test"),
        retry=RetryPolicy(max_attempts=attempts),
    )


async def test_aborted_is_retried_for_a_call_with_a_request_id(
    conflicted: tuple[_Conflicted, str],
) -> None:
    servicer, address = conflicted
    slept: list[float] = []

    def call() -> None:
        with Connection(_config(address), sleep=slept.append) as conn:
            GovernanceClient(conn).create_queue(
                "acme", "proofs", res.QueueSpec(capacity=3), request_id="cq-1"
            )

    await asyncio.to_thread(call)
    assert [method for method, _ in servicer.calls] == ["CreateQueue"] * 3
    assert len({request_id for _, request_id in servicer.calls}) == 1
    assert len(slept) == 2
    assert all(delay >= RETRY_AFTER for delay in slept)  # RetryInfo honoured


async def test_aborted_retries_stop_at_the_attempt_limit(
    conflicted: tuple[_Conflicted, str],
) -> None:
    servicer, address = conflicted
    servicer.conflicts = 100

    def call() -> AbortedError:
        with (
            Connection(_config(address, attempts=3), sleep=lambda _s: None) as conn,
            pytest.raises(AbortedError) as caught,
        ):
            GovernanceClient(conn).create_queue("acme", "proofs", res.QueueSpec(capacity=3))
        return caught.value

    error = await asyncio.to_thread(call)
    assert error.attempts == 3
    assert len(servicer.calls) == 3
    assert error.retry_after == pytest.approx(RETRY_AFTER)


async def test_aborted_is_not_retried_for_a_call_without_a_request_id(
    conflicted: tuple[_Conflicted, str],
) -> None:
    servicer, address = conflicted

    def call() -> AbortedError:
        with (
            Connection(_config(address), sleep=lambda _s: None) as conn,
            pytest.raises(AbortedError) as caught,
        ):
            GovernanceClient(conn).resize_queue(
                "acme", "proofs", 4, reason="busy", expected_resource_version="3"
            )
        return caught.value

    error = await asyncio.to_thread(call)
    assert error.attempts == 1
    assert servicer.calls == [("ResizeQueue", servicer.calls[0][1])]
    assert error.retry_after == pytest.approx(RETRY_AFTER)


def test_which_requests_carry_a_request_id() -> None:
    assert carries_request_id(pb.CreateQueueRequest(request_id="cq-1"))
    assert not carries_request_id(pb.CreateQueueRequest())  # the field, left empty
    assert not carries_request_id(pb.ResizeQueueRequest(tenant_id="acme"))
    assert carries_request_id(nr_pb.ReimageNodeRequest(idempotency_key="k-1"))
    assert not carries_request_id(object())
