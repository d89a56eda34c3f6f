"""The one error mapping: every domain error carries ErrorInfo and its own
detail; unexpected failures become INTERNAL with nothing but a request id."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ppos.controlplane.core.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    ResourceExhausted,
    StaleResourceVersion,
    Unavailable,
    bounded_message,
)
from ppos.controlplane.core.reply_bounds import (
    MAX_DETAILS_BYTES,
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGE_WIRE_BYTES,
    MAX_METADATA_ENTRIES,
    MAX_SHOWN_VIOLATIONS,
    clip,
)
from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2_grpc as pb_grpc
from ppos.controlplane.runtime.observability import MeteredServer
from ppos.controlplane.runtime.server import server_options
from ppos.controlplane.security.access import AccessTable, MethodRule
from ppos.controlplane.security.authentication import EdgeAuthenticator
from ppos.controlplane.security.control_token import ControlToken
from ppos.controlplane.security.edge import EdgeGuard, GuardedServer
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.principal import PrincipalKind
from ppos.controlplane.security.tokens import TokenVerifier
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


# -- bounded replies ---------------------------------------------------------------

# A default gRPC client reads at most 8 KiB of trailing metadata (its soft limit;
# between it and the 16 KiB hard limit it refuses at random). Each entry counts
# its key, its value and 32 bytes.
CLIENT_METADATA_LIMIT = 8 * 1024
BIG_ID = "t" * 1_048_576
HOSTILE_ERRORS: dict[str, DomainError] = {
    "1 MB id not found": NotFound("tenant", BIG_ID),
    "1 MB id already exists": AlreadyExists("tenant", BIG_ID),
    "20 KB tenant id": InvalidArgument.single("tenant_id", f"{'x' * 20_000!r} is not a tenant id"),
    "300 invalid enum values": InvalidArgument(
        [FieldViolation(f"phases[{i}]", f"{1000 + i} is not a tenant phase") for i in range(300)]
    ),
    "100,000 violations": InvalidArgument(
        [FieldViolation(f"queues[{i}].queue_id", "is required") for i in range(100_000)]
    ),
    "long fields and descriptions": InvalidArgument(
        [FieldViolation("f" * 5000 + str(i), "é" * 5000) for i in range(50)]
    ),
    "stale 1 MB version": StaleResourceVersion("queue", BIG_ID, BIG_ID, "7"),
    "wide message": Unavailable("😀" * 100_000, retry_after_seconds=1),
    "1,000 metadata entries": FailedPrecondition(
        "busy", metadata={f"key_{i}": "v" * 10_000 for i in range(1000)}
    ),
    "quota subject": ResourceExhausted("full", subject=BIG_ID, retry_after_seconds=1),
    "many preconditions": FailedPrecondition(
        "blocked",
        [PreconditionViolation("T" * 1000, "s" * 1000, "d" * 1000) for _ in range(10_000)],
    ),
}


def _trailing_size(metadata: Sequence[tuple[str, str | bytes]]) -> int:
    return sum(len(key) + len(value) + 32 for key, value in metadata)


def _wire_size(status: grpc.Status) -> int:
    """What the status costs on the wire: percent-encoded message, base64 details."""
    message = urllib.parse.quote(status.details, safe=_UNRESERVED)
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(details, bytes)
    return (
        len("grpc-status")
        + 2
        + 32
        + len("grpc-message")
        + len(message)
        + 32
        + len("grpc-status-details-bin")
        + len(base64.b64encode(details))
        + 32
    )


_UNRESERVED = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


@pytest.mark.parametrize("name", list(HOSTILE_ERRORS))
def test_every_reply_is_bounded_whatever_the_input(name: str) -> None:
    error = HOSTILE_ERRORS[name]
    error.metadata["request_id"] = "req_bounded"
    status = error.to_grpc_status()
    assert _wire_size(status) < 7 * 1024, name
    proto = error.to_status_proto()
    assert proto.ByteSize() <= MAX_DETAILS_BYTES
    assert proto.message == status.details
    assert len(proto.message) <= MAX_MESSAGE_CHARS
    info = _details(proto)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.metadata["request_id"] == "req_bounded"  # kept whatever else is cut
    assert len(info.metadata) <= MAX_METADATA_ENTRIES


def test_an_echoed_id_is_never_longer_than_an_id_may_be() -> None:
    proto = NotFound("tenant", BIG_ID).to_status_proto()
    resource = _details(proto)["ResourceInfo"]
    assert isinstance(resource, error_details_pb2.ResourceInfo)
    assert len(resource.resource_name) == MAX_ID_CHARS
    assert resource.resource_name.startswith("ttt")
    assert resource.resource_name.endswith("...(1,048,576 chars)")
    info = _details(proto)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.metadata["resource_name"] == resource.resource_name
    assert resource.resource_name in proto.message
    assert clip("short", MAX_ID_CHARS) == "short"


def test_violations_are_listed_up_to_the_limit_then_counted() -> None:
    proto = HOSTILE_ERRORS["100,000 violations"].to_status_proto()
    bad = _details(proto)["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert len(bad.field_violations) == MAX_SHOWN_VIOLATIONS + 1
    assert bad.field_violations[0].field == "queues[0].queue_id"
    assert bad.field_violations[-1].field == ""
    assert bad.field_violations[-1].description == f"and {100_000 - MAX_SHOWN_VIOLATIONS:,} more"
    assert proto.message.startswith("invalid request: queues[0].queue_id: is required; ")
    assert proto.message.endswith(" more")
    assert "99,9" in proto.message
    # Texts too long for the size budget: fewer shown, the rest still counted.
    crowded = _details(HOSTILE_ERRORS["long fields and descriptions"].to_status_proto())
    bad = crowded["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    shown = len(bad.field_violations) - 1
    assert 0 < shown < MAX_SHOWN_VIOLATIONS
    assert bad.field_violations[-1].description == f"and {50 - shown:,} more"
    # Other details' lists are bounded the same way.
    many = _details(HOSTILE_ERRORS["many preconditions"].to_status_proto())
    failure = many["PreconditionFailure"]
    assert isinstance(failure, error_details_pb2.PreconditionFailure)
    assert len(failure.violations) <= MAX_SHOWN_VIOLATIONS + 1
    assert failure.violations[-1].description.endswith(" more")


def test_a_message_of_wide_characters_is_cut_by_its_encoded_size() -> None:
    message = bounded_message("😀" * 100_000)
    encoded = urllib.parse.quote(message, safe=_UNRESERVED)
    assert len(encoded) <= MAX_MESSAGE_WIRE_BYTES
    assert message.endswith(" chars)")
    assert bounded_message("plain and short") == "plain and short"


def test_a_message_of_percent_signs_is_cut_by_its_encoded_size() -> None:
    """Printable ASCII is counted without a per-character loop: each `%` still
    costs three bytes on the wire."""
    message = bounded_message("%" * 500)  # under the character limit, not the wire's
    assert len(urllib.parse.quote(message, safe=_UNRESERVED)) <= MAX_MESSAGE_WIRE_BYTES
    assert message.endswith(" chars)")
    assert bounded_message("100% of 3") == "100% of 3"


class _Raiser:
    """A service that raises each hostile error, through the real edge."""

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        async def raise_named(request: bytes, context: Any) -> bytes:
            raise HOSTILE_ERRORS[request.decode()]

        return {"Raise": grpc.unary_unary_rpc_method_handler(raise_named)}


async def test_a_default_client_reads_the_real_status_of_every_hostile_error(
    tmp_path: Path,
) -> None:
    service = "ppos.test.v1.RaiseService"
    token = "ppos_errors_test_token_0123456789abcdef"
    access = AccessTable(
        [MethodRule(f"/{service}/Raise", service, frozenset({PrincipalKind.OPERATOR}))]
    )
    ring = KeyRing.from_directory(tmp_path / "keys")
    edge = EdgeGuard(
        access, EdgeAuthenticator(ControlToken(token), TokenVerifier(ring, issuer="test"))
    )
    server = grpc.aio.server(options=server_options(access))
    GuardedServer(MeteredServer(server), edge).add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service, _Raiser().handlers())]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        # A default client: no raised metadata or message limits.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(f"/{service}/Raise")
            for name, error in HOSTILE_ERRORS.items():
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(
                        name.encode(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
                    )
                got = caught.value
                assert got.code() == error.code, name
                trailing = got.trailing_metadata() or ()
                assert _trailing_size(trailing) < CLIENT_METADATA_LIMIT, name
                rich = rpc_status.from_call(got)  # also checks message and code agree
                assert rich is not None, name
                assert rich.code == error.code.value[0]
                assert _details(rich)["ErrorInfo"], name
    finally:
        await server.stop(0)


async def test_hostile_requests_get_readable_replies_from_the_plane(plane: RunningPlane) -> None:
    """The natural cases, on the real plane with its default-client channel."""
    governance = gov_grpc.GovernanceServiceStub(plane.channel)
    requests: list[tuple[str, Any, Any]] = [
        ("20 KB tenant id", governance.GetTenant, gov_pb.GetTenantRequest(tenant_id="x" * 20_000)),
        (
            "300 invalid enum values",
            governance.ListTenants,
            gov_pb.ListTenantsRequest(phases=[1000 + i for i in range(300)]),
        ),
        (
            "1 MB id",
            governance.ProvisionTenant,
            gov_pb.ProvisionTenantRequest(request_id="req_1", tenant_id="t" * 1_000_000),
        ),
        (
            "100,000 violations",
            governance.ProvisionTenant,
            gov_pb.ProvisionTenantRequest(
                request_id="req_2",
                tenant_id="acme",
                queues=[gov_pb.QueueTemplate(queue_id="Q") for _ in range(100_000)],
            ),
        ),
    ]
    for name, method, request in requests:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(request, metadata=plane.operator, timeout=30)
        got = caught.value
        assert got.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (
            name,
            got.code(),
            got.details(),
        )
        assert _trailing_size(got.trailing_metadata() or ()) < CLIENT_METADATA_LIMIT, name
        rich = rpc_status.from_call(got)
        assert rich is not None, name
        assert len(rich.message) <= MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    "error",
    [
        NotFound("node", "node-0001"),
        NotFound("tenant", BIG_ID),
        AlreadyExists("queue", "q-1", reason="QUEUE_EXISTS"),
        NotFound("node", "n-\u00e9\u4e16", message="node 'n-\u00e9\u4e16' is gone"),
    ],
    ids=["plain", "long name", "own reason", "wide characters"],
)
@pytest.mark.parametrize("request_id", ["req_1", "r" * 5000, "\u4e16" * 300])
def test_a_resource_errors_status_encoded_in_shared_parts_is_the_one_built_whole(
    error: NotFound, request_id: str
) -> None:
    """A resource error's status reuses what every call about that resource
    shares and encodes only the request id: the same Status (code, message,
    ErrorInfo with every entry, ResourceInfo) as built whole, for any request id.
    Compared decoded: a map's entries may be encoded in any order."""
    for _ in range(2):  # encoded once, then taken from what is kept
        error.metadata["request_id"] = request_id
        status = error.to_grpc_status()
        whole = error.to_status_proto()
        assert status.code == error.code
        assert status.details == whole.message
        assert _decoded(status) == _decoded_proto(whole)
        info = _details(whole)["ErrorInfo"]
        assert isinstance(info, error_details_pb2.ErrorInfo)
        assert info.metadata["request_id"] == clip(request_id, MAX_ID_CHARS)
    # Another id of the same length takes the kept frame, with its own bytes in it.
    error.metadata["request_id"] = request_id[:-2] + "zz"
    assert _decoded(error.to_grpc_status()) == _decoded_proto(error.to_status_proto())
    # A request id set before the other entries: the same status.
    first = {"request_id": request_id}
    error.metadata = {**first, **{k: v for k, v in error.metadata.items() if k != "request_id"}}
    assert _decoded(error.to_grpc_status()) == _decoded_proto(error.to_status_proto())
    other = NotFound(error.resource_type, error.resource_name + "x")
    other.metadata["request_id"] = request_id
    assert _decoded(other.to_grpc_status()) == _decoded_proto(other.to_status_proto())


def _decoded(status: grpc.Status) -> tuple[object, ...]:
    sent = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(sent, bytes)
    return _decoded_proto(status_pb2.Status.FromString(sent))


def _decoded_proto(status: status_pb2.Status) -> tuple[object, ...]:
    """The status's code, message and each detail as a message (maps as maps)."""
    details = _details(status)
    assert len(details) == len(status.details)
    return status.code, status.message, [detail.type_url for detail in status.details], details
