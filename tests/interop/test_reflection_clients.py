"""grpcurl and buf curl drive the server by reflection alone (no .proto files),
with the operator token passed through the environment or stdin, never argv,
over mutual TLS (a plane requiring client certificates from a test CA)."""

from __future__ import annotations

import json

import pytest

from tests.support.external import binary, run
from tests.support.servers import RunningPlane

pytestmark = pytest.mark.interop

SERVICES = {
    "grpc.health.v1.Health",
    "ppos.controlplane.auth.v1.JwksService",
    "ppos.controlplane.governance.v1.GovernanceService",
    "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    "ppos.controlplane.registrysync.v1.RegistrySyncService",
}
CREATE_ENROLLMENT = "ppos.controlplane.noderegistry.v1.NodeRegistryService/CreateEnrollment"


@pytest.fixture
def plane(mtls_plane: RunningPlane) -> RunningPlane:
    """Every test here talks to a plane that requires mutual TLS."""
    return mtls_plane


def grpcurl_tls(plane: RunningPlane) -> tuple[str, ...]:
    """grpcurl's mutual TLS flags: the CA, the client certificate and its key."""
    assert plane.tls is not None
    tls = plane.tls
    return ("-cacert", str(tls.ca_file), "-cert", str(tls.client_cert), "-key", str(tls.client_key))


def buf_tls(plane: RunningPlane) -> tuple[str, ...]:
    assert plane.tls is not None
    tls = plane.tls
    return (
        "--cacert",
        str(tls.ca_file),
        "--cert",
        str(tls.client_cert),
        "--key",
        str(tls.client_key),
    )


async def test_grpcurl_lists_describes_and_calls(plane: RunningPlane) -> None:
    grpcurl = binary("grpcurl")
    no_certificate = await run(
        grpcurl, "-cacert", str(plane.tls.ca_file) if plane.tls else "", plane.address, "list"
    )
    assert no_certificate.code != 0  # refused at the handshake
    listed = await run(grpcurl, *grpcurl_tls(plane), plane.address, "list")
    assert listed.code == 0, listed.stderr
    assert set(listed.stdout.split()) >= SERVICES

    described = await run(
        grpcurl,
        *grpcurl_tls(plane),
        plane.address,
        "describe",
        "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    )
    assert described.code == 0, described.stderr
    assert "rpc CreateEnrollment" in described.stdout

    health = await run(grpcurl, *grpcurl_tls(plane), plane.address, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"

    refused = await run(
        grpcurl,
        *grpcurl_tls(plane),
        "-d",
        '{"region": "eu-west-1"}',
        plane.address,
        CREATE_ENROLLMENT,
    )
    assert refused.code != 0
    assert "Unauthenticated" in refused.stderr + refused.stdout

    accepted = await run(
        grpcurl,
        *grpcurl_tls(plane),
        "-expand-headers",
        "-H",
        "authorization: Bearer ${PPOS_CONTROL_TOKEN}",
        "-d",
        '{"region": "eu-west-1"}',
        plane.address,
        CREATE_ENROLLMENT,
        env={"PPOS_CONTROL_TOKEN": plane.token},
    )
    assert accepted.code == 0, accepted.stderr
    assert json.loads(accepted.stdout)["enrollment_token"].startswith("ppos_enroll_")

    invalid = await run(
        grpcurl,
        *grpcurl_tls(plane),
        "-expand-headers",
        "-H",
        "authorization: Bearer ${PPOS_CONTROL_TOKEN}",
        "-d",
        '{"region": "Not A Region"}',
        plane.address,
        CREATE_ENROLLMENT,
        env={"PPOS_CONTROL_TOKEN": plane.token},
    )
    assert invalid.code != 0
    assert "InvalidArgument" in invalid.stderr + invalid.stdout
    assert "google.rpc.BadRequest" in invalid.stderr + invalid.stdout


async def test_buf_curl_lists_methods_and_calls(plane: RunningPlane) -> None:
    buf = binary("buf")
    url = f"https://{plane.address}"
    listed = await run(buf, "curl", *buf_tls(plane), "--protocol", "grpc", "--list-methods", url)
    assert listed.code == 0, listed.stderr
    assert CREATE_ENROLLMENT in listed.stdout.split()

    jwks = await run(
        buf,
        "curl",
        *buf_tls(plane),
        "--protocol",
        "grpc",
        f"{url}/ppos.controlplane.auth.v1.JwksService/GetJwks",
    )
    assert jwks.code == 0, jwks.stderr
    assert json.loads(json.loads(jwks.stdout)["jwksJson"])["keys"]

    accepted = await run(
        buf,
        "curl",
        *buf_tls(plane),
        "--protocol",
        "grpc",
        "-H",
        "@-",
        "-d",
        '{"region": "eu-west-1"}',
        f"{url}/{CREATE_ENROLLMENT}",
        stdin=f"authorization: Bearer {plane.token}\n",
    )
    assert accepted.code == 0, accepted.stderr
    assert json.loads(accepted.stdout)["enrollmentId"].startswith("enr_")

    refused = await run(
        buf,
        "curl",
        *buf_tls(plane),
        "--protocol",
        "grpc",
        "-d",
        '{"region": "eu-west-1"}',
        f"{url}/{CREATE_ENROLLMENT}",
    )
    assert refused.code != 0
    assert "unauthenticated" in refused.stderr.lower()


@pytest.mark.parametrize(
    ("symbol", "kind"),
    [
        ("grpc.health.v1.Health.Check", "a method"),
        (CREATE_ENROLLMENT.replace("/", "."), "a method"),
        ("grpc.reflection.v1.ServerReflection", "a service"),
        ("grpc.reflection.v1.ServerReflection.ServerReflectionInfo", "a method"),
        ("google.rpc.ErrorInfo", "a message"),
        ("google.rpc.RetryInfo", "a message"),
    ],
)
async def test_grpcurl_describes_methods_and_error_details(
    plane: RunningPlane, symbol: str, kind: str
) -> None:
    described = await run(binary("grpcurl"), *grpcurl_tls(plane), plane.address, "describe", symbol)
    assert described.code == 0, described.stderr
    assert f"{symbol} is {kind}" in described.stdout


async def test_grpcurl_names_an_unknown_method_as_not_found(plane: RunningPlane) -> None:
    unknown = "grpc.health.v1.Health.NoSuchMethod"
    described = await run(
        binary("grpcurl"), *grpcurl_tls(plane), plane.address, "describe", unknown
    )
    assert described.code != 0
    assert "Symbol not found" in described.stderr


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
async def test_buf_curl_reflects_with_either_protocol(plane: RunningPlane, protocol: str) -> None:
    listed = await run(
        binary("buf"),
        "curl",
        "--protocol",
        "grpc",
        "--reflect-protocol",
        protocol,
        "--list-methods",
        *buf_tls(plane),
        f"https://{plane.address}",
    )
    assert listed.code == 0, listed.stderr
    methods = set(listed.stdout.split())
    assert CREATE_ENROLLMENT in methods
    assert "grpc.health.v1.Health/Check" in methods
