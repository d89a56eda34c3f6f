"""Logs: per-call fields bound through contextvars, secrets never printed."""

from __future__ import annotations

import io
import json

import grpc
import pytest
import structlog

from ppos.controlplane.core.logging import (
    REDACTED,
    RedactSecrets,
    SecretRegistry,
    configure_logging,
)
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from tests.support.logs import captured
from tests.support.operators import add_operator
from tests.support.servers import RunningPlane


async def test_each_call_logs_request_id_method_and_caller(plane: RunningPlane) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    carol = await add_operator(plane, "carol", "operator")
    with captured() as logs, pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateEnrollment(
            pb.CreateEnrollmentRequest(region="Bad Region"),
            metadata=(*carol.metadata, ("x-request-id", "req_log_1")),
        )
    refused = [entry for entry in logs if entry["event"] == "rpc.refused"]
    assert len(refused) == 1
    entry = refused[0]
    assert entry["request_id"] == "req_log_1"
    assert entry["method"].endswith("/CreateEnrollment")
    assert entry["caller"] == "operator:carol"
    assert entry["code"] == "INVALID_ARGUMENT"
    assert plane.token not in repr(logs)


async def test_a_lookup_that_finds_nothing_is_logged_at_debug(plane: RunningPlane) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    with captured() as logs, pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetNode(
            pb.GetNodeRequest(node_id="node-00000000000000000000000000"),
            metadata=(*plane.operator, ("x-request-id", "req_log_2")),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    refused = [entry for entry in logs if entry["event"] == "rpc.refused"]
    assert [(entry["log_level"], entry["code"]) for entry in refused] == [("debug", "NOT_FOUND")]
    assert refused[0]["request_id"] == "req_log_2"


async def test_refused_credentials_are_logged_without_the_credential(plane: RunningPlane) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    attempt = plane.token[:-2] + "xx"
    with captured() as logs, pytest.raises(grpc.aio.AioRpcError):
        await stub.CreateEnrollment(
            pb.CreateEnrollmentRequest(region="eu-west-1"),
            metadata=(("authorization", f"Bearer {attempt}"),),
        )
    auth = [entry for entry in logs if entry["event"] == "auth.refused"]
    assert auth
    assert auth[0]["reason"] == "UNKNOWN_CREDENTIAL"
    assert attempt not in repr(logs)


def test_redaction_blanks_secret_keys_and_scrubs_registered_values() -> None:
    registry = SecretRegistry(["s3cr3t-value-that-is-long"])
    processor = RedactSecrets(registry)
    event = processor(
        None,
        "info",
        {
            "event": "x",
            "authorization": "Bearer abc",
            "node_credential": "eyJ...",
            "detail": "failed with s3cr3t-value-that-is-long inside",
            "nested": {"api_key": "k", "note": ["s3cr3t-value-that-is-long"]},
            "kid": "not-secret",
        },
    )
    assert event["authorization"] == REDACTED
    assert event["node_credential"] == REDACTED
    assert event["detail"] == f"failed with {REDACTED} inside"
    assert event["nested"] == {"api_key": REDACTED, "note": [REDACTED]}
    assert event["kid"] == "not-secret"


def test_json_off_a_tty_and_exceptions_are_scrubbed_too() -> None:
    stream = io.StringIO()
    registry = configure_logging(level="info", fmt="auto", stream=stream)
    registry.add("another-secret-of-enough-length")
    try:
        structlog.get_logger("t").bind(request_id="req_1").info("hello", n=1)
        try:
            int("boom another-secret-of-enough-length")
        except ValueError:
            structlog.get_logger("t").exception("failed")
    finally:
        # Restore the session's logging (tests share one configuration).
        from tests.conftest import restore_session_logging

        restore_session_logging()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "hello"
    assert lines[0]["request_id"] == "req_1"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert "another-secret-of-enough-length" not in stream.getvalue()
    assert REDACTED in lines[1]["exception"]
