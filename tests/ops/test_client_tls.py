"""`--ca-file`: pposctl over TLS to a server whose certificate the CA file vouches
for, and a clear failure against one it does not (a small stand-in server with
gRPC health only); `--cert-file`/`--key-file`: pposctl over mutual TLS to a
real plane that requires client certificates."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2_grpc

from ppos.controlplane.core.logging import SecretRegistry
from tests.ops.support import operator_env, pposctl_sync
from tests.support.servers import RunningPlane, start_plane, stop_plane
from tests.support.tls import TlsFiles, new_tls_files

ROOT = Path(__file__).resolve().parents[2]


def self_signed(directory: Path, name: str) -> tuple[bytes, bytes, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ca_file = directory / f"{name}-ca.pem"
    ca_file.write_bytes(pem)
    return pem, key_pem, ca_file


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    cert, key, ca_file = self_signed(tmp_path, "localhost")
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    try:
        yield f"localhost:{port}", ca_file
    finally:
        await server.stop(0)


async def test_health_over_tls_with_the_right_ca(
    tls_server: tuple[str, Path], tmp_path: Path
) -> None:
    address, ca_file = tls_server
    ok = await asyncio.to_thread(
        pposctl_sync, ["health", "-q", "--ca-file", str(ca_file), "--address", address], {}
    )
    assert ok.code == 0, ok.stderr
    from_env = await asyncio.to_thread(
        pposctl_sync, ["health", "-q"], {"PPOS_ADDRESS": address, "PPOS_CA_FILE": str(ca_file)}
    )
    assert from_env.code == 0
    _, _, other_ca = self_signed(tmp_path, "someone-else")
    refused = await asyncio.to_thread(
        pposctl_sync,
        ["health", "--ca-file", str(other_ca), "--address", address, "--timeout", "3s"],
        {},
    )
    assert refused.code == 3  # the handshake fails: unreachable as far as we can trust
    plaintext = await asyncio.to_thread(
        pposctl_sync, ["health", "--address", address, "--timeout", "3s"], {}
    )
    assert plaintext.code == 3
    missing = await asyncio.to_thread(
        pposctl_sync, ["health", "--ca-file", str(tmp_path / "nope.pem")], {}
    )
    assert missing.code == 2
    assert "CA file" in missing.stderr


@pytest.fixture
async def mtls_plane(
    tmp_path: Path, database_url: str, canary_token: str, secret_registry: SecretRegistry
) -> AsyncIterator[tuple[RunningPlane, TlsFiles]]:
    files = new_tls_files(tmp_path / "tls")
    running = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        extra_env=files.plane_env(),
        channel_credentials=files.client_credentials(),
    )
    try:
        yield running, files
    finally:
        await stop_plane(running)


async def test_pposctl_over_mutual_tls(mtls_plane: tuple[RunningPlane, TlsFiles]) -> None:
    plane, files = mtls_plane
    env = {**operator_env(plane), "PPOS_CA_FILE": str(files.ca_file)}
    flags = ["--cert-file", str(files.client_cert), "--key-file", str(files.client_key)]
    listed = await asyncio.to_thread(pposctl_sync, ["nodes", "list", *flags, "-o", "json"], env)
    assert listed.code == 0, listed.stderr
    from_env = await asyncio.to_thread(
        pposctl_sync,
        ["health", "-q"],
        {**env, "PPOS_CERT_FILE": str(files.client_cert), "PPOS_KEY_FILE": str(files.client_key)},
    )
    assert from_env.code == 0, from_env.stderr
    no_certificate = await asyncio.to_thread(pposctl_sync, ["health", "--timeout", "3s"], env)
    assert no_certificate.code == 3  # refused at the handshake
    half = await asyncio.to_thread(
        pposctl_sync, ["health", "--cert-file", str(files.client_cert)], env
    )
    assert half.code == 2
    assert "give both" in half.stderr


async def test_the_development_ca_script_makes_a_working_mutual_tls_setup(
    tmp_path: Path, database_url: str, canary_token: str, secret_registry: SecretRegistry
) -> None:
    """scripts/dev-ca.sh's files, used as compose uses them: the plane serves with
    its certificate and requires one from the CA; pposctl presents the operator's."""
    tls = tmp_path / "tls"
    made = await asyncio.create_subprocess_exec(
        "bash", str(ROOT / "scripts" / "dev-ca.sh"), str(tls), "plane=governance", "operator"
    )
    assert await made.wait() == 0
    assert oct(tls.stat().st_mode & 0o777) == "0o700"
    assert oct((tls / "ca-key.pem").stat().st_mode & 0o777) == "0o600"
    env = {
        "PPOS_TLS_CERT_FILE": str(tls / "plane.pem"),
        "PPOS_TLS_KEY_FILE": str(tls / "plane-key.pem"),
        "PPOS_TLS_CLIENT_CA_FILE": str(tls / "ca.pem"),
        "PPOS_TLS_CA_FILE": str(tls / "ca.pem"),
    }
    plane = await start_plane(
        token=canary_token,
        database_url=database_url,
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        extra_env=env,
    )
    try:
        client = {
            "PPOS_ADDRESS": plane.address,
            "PPOS_CA_FILE": str(tls / "ca.pem"),
            "PPOS_CERT_FILE": str(tls / "operator.pem"),
            "PPOS_KEY_FILE": str(tls / "operator-key.pem"),
        }
        ok = await asyncio.to_thread(pposctl_sync, ["health", "-q"], client)
        assert ok.code == 0, ok.stderr
        without = {k: v for k, v in client.items() if k not in ("PPOS_CERT_FILE", "PPOS_KEY_FILE")}
        refused = await asyncio.to_thread(pposctl_sync, ["health", "--timeout", "3s"], without)
        assert refused.code == 3
    finally:
        await stop_plane(plane)
