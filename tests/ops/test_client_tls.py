"""`--ca-file`: pposctl over TLS to a server whose certificate the CA file vouches
for, and a clear failure against one it does not. The control plane serves
plaintext (TLS is terminated in front of it); this server is a small stand-in
with gRPC health only, the one thing needed to prove the client side."""

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

from tests.ops.support import pposctl_sync


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
