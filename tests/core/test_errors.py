"""The one error mapping: every domain error carries ErrorInfo and its own
detail; unexpected failures become INTERNAL with nothing but a request id."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from ppos.controlplane.core.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    StaleResourceVersion,
    Unavailable,
)
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from tests.support.servers import RunningPlane


def _details(status: status_pb2.Status) -> dict[str, object]:
    found: dict[str, object] = {}
    for any_detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.RetryInfo,
            error_details_pb2.QuotaFailure,
        ):
            message = kind()
            if any_detail.Unpack(message):
                found[kind.__name__] = message
    return found


def test_each_error_maps_to_its_code_and_details() -> None:
    cases = [
        (
            InvalidArgument([FieldViolation("spec.capacity", "must be positive")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BadRequest",
        ),
        (NotFound("node", "node_1"), grpc.StatusCode.NOT_FOUND, "ResourceInfo"),
        (AlreadyExists("tenant", "acme"), grpc.StatusCode.ALREADY_EXISTS, "ResourceInfo"),
        (
            StaleResourceVersion("queue", "q1", "3", "4"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "PreconditionFailure",
        ),
        (
            ResourceExhausted("queue full", subject="watch", retry_after_seconds=2),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "QuotaFailure",
        ),
        (
            Unavailable("gateway down", retry_after_seconds=1.5),
            grpc.StatusCode.UNAVAILABLE,
            "RetryInfo",
        ),
    ]
    for error, code, detail in cases:
        status = error.to_status_proto()
        assert status.code == code.value[0]
        details = _details(status)
        assert "ErrorInfo" in details, error
        assert detail in details, error
    stale = _details(StaleResourceVersion("queue", "q1", "3", "4").to_status_proto())
    info = stale["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "STALE_RESOURCE_VERSION"
    assert info.metadata["current_resource_version"] == "4"
    retry = _details(Unavailable("x", retry_after_seconds=1.5).to_status_proto())["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 1
    assert retry.retry_delay.nanos == 500_000_000


async def test_field_violations_reach_the_client_with_every_bad_field(plane: RunningPlane) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateEnrollment(
            pb.CreateEnrollmentRequest(
                region="EU West", cluster="Bad Cluster!", labels={"-bad": "ok", "good": "bad value"}
            ),
            metadata=plane.operator,
        )
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    rich = next(
        status_pb2.Status.FromString(v)
        for k, v in error.trailing_metadata() or ()
        if k == "grpc-status-details-bin"
    )
    bad = _details(rich)["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    fields = {v.field for v in bad.field_violations}
    assert fields == {"region", "cluster", "labels['-bad']", "labels['good']"}
    assert all(v.description for v in bad.field_violations)
    info = _details(rich)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.metadata["request_id"].startswith("req_")


async def test_not_found_names_the_resource(plane: RunningPlane) -> None:
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetNode(pb.GetNodeRequest(node_id="node_nope"), metadata=plane.operator)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "node_nope" in (caught.value.details() or "")


async def test_unexpected_failure_is_internal_without_internals(plane: RunningPlane) -> None:
    """Break the database under a running server: the client learns only a request id."""
    stub = pb_grpc.NodeRegistryServiceStub(plane.channel)
    original = plane.runtime.db.read_sync

    def broken(work: object) -> object:
        raise RuntimeError("secret internal detail: table xyz exploded")

    plane.runtime.db.read_sync = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListNodes(  # GetNode reads without a session (storage.reads)
                pb.ListNodesRequest(),
                metadata=(*plane.operator, ("x-request-id", "req_boom")),
            )
    finally:
        plane.runtime.db.read_sync = original  # type: ignore[method-assign]
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "req_boom" in (error.details() or "")
    assert "exploded" not in (error.details() or "")
