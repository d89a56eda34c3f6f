"""The one-port server: health per service, reflection, the public key set."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ppos.controlplane.auth.v1 import jwks_service_pb2, jwks_service_pb2_grpc
from ppos.controlplane.runtime.config import ServerSettings
from tests.conftest import TEST_EVENT_LOOP
from tests.support.servers import RunningPlane

SERVICES = [
    "ppos.controlplane.governance.v1.GovernanceService",
    "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    "ppos.controlplane.registrysync.v1.RegistrySyncService",
    "ppos.controlplane.auth.v1.JwksService",
]


async def test_health_serving_overall_and_per_service(plane: RunningPlane) -> None:
    stub = health_pb2_grpc.HealthStub(plane.channel)
    for name in ["", *SERVICES]:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_every_service_without_credentials(plane: RunningPlane) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(plane.channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for reply in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in reply.list_services_response.service}
    assert set(SERVICES) <= names
    assert "grpc.health.v1.Health" in names


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_answers_on_v1_and_v1alpha(plane: RunningPlane, version: str) -> None:
    # The two protocols' messages are the same on the wire.
    call = plane.channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    asked = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.health.v1.Health.Check"
        ),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="google.rpc.BadRequest"),
    ]
    replies = [reply async for reply in call(iter(asked))]
    listed = {s.name for s in replies[0].list_services_response.service}
    assert {
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw).name
        for reply in replies[1:]
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]
    assert "grpc_health/v1/health.proto" in files
    assert "google/rpc/error_details.proto" in files


async def test_jwks_is_public_and_matches_the_file(plane: RunningPlane) -> None:
    stub = jwks_service_pb2_grpc.JwksServiceStub(plane.channel)
    reply = await stub.GetJwks(jwks_service_pb2.GetJwksRequest())
    served = json.loads(reply.jwks_json)
    on_disk = json.loads((plane.data_dir / "jwks.json").read_text())
    assert served == on_disk
    kids = [key["kid"] for key in served["keys"]]
    assert reply.active_kid in kids
    for key in served["keys"]:
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
        assert "d" not in key, "private key material must never be published"


async def test_tests_run_on_the_event_loop_serve_uses_by_default() -> None:
    """In-process servers run on the loop `serve` runs on (uvloop by default), so
    the suite tests what production runs; PPOS_TEST_EVENT_LOOP=asyncio selects
    the standard library's."""
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.split(".")[0] == TEST_EVENT_LOOP
    assert ServerSettings().event_loop == "uvloop"
