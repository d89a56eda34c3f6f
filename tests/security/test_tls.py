"""TLS on the plane's listener and its channels out: mutual TLS refused at the
handshake without a good client certificate, files reloaded without a restart,
plaintext refused on any address but loopback."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.runtime.cli import load_settings
from ppos.controlplane.runtime.modules import Settings
from ppos.controlplane.runtime.server import ControlPlaneServer
from ppos.controlplane.security import outbound
from ppos.controlplane.security.peers import caller_identity
from ppos.controlplane.security.tls import ClientTls
from tests.support.relay import ECHO_SERVICE
from tests.support.servers import RunningPlane, plane_env
from tests.support.tls import TlsFiles, expired_client, new_tls_files

RELAY = "/ppos.test.v1.RelayService/Relay"
ECHO = f"/{ECHO_SERVICE}/Echo"
pytestmark = pytest.mark.timeout(60)


async def _health(address: str, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(reply.status)


async def _refused(address: str, credentials: grpc.ChannelCredentials) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _health(address, credentials)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_client_with_a_certificate_from_the_ca_is_served(
    mtls_plane: RunningPlane, tls_files: TlsFiles
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert await _health(mtls_plane.address, tls_files.client_credentials()) == serving


async def test_mutual_tls_refuses_at_the_handshake(
    mtls_plane: RunningPlane, tls_files: TlsFiles, tmp_path: Path
) -> None:
    address = mtls_plane.address
    await _refused(address, tls_files.client_credentials(with_certificate=False))
    other = new_tls_files(tmp_path / "other")  # trusts our server, presents another CA's cert
    await _refused(
        address,
        grpc.ssl_channel_credentials(
            tls_files.ca_file.read_bytes(),
            other.client_key.read_bytes(),
            other.client_cert.read_bytes(),
        ),
    )
    cert, key = expired_client(tls_files.ca, tmp_path / "expired")
    await _refused(
        address,
        grpc.ssl_channel_credentials(
            tls_files.ca_file.read_bytes(), key.read_bytes(), cert.read_bytes()
        ),
    )
    async with grpc.aio.insecure_channel(address) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(plaintext).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_peer_hop_runs_over_mutual_tls(mtls_plane: RunningPlane) -> None:
    """Relay -> Echo through the plane's own port: the outbound channel presents
    the plane's certificate and checks the listener's against the CA bundle."""
    reply = await mtls_plane.channel.unary_unary(RELAY)(b"x", metadata=mtls_plane.operator)
    subject, _, _, body = reply.split(b"|")
    assert (subject, body) == (b"ppos.controlplane.relay", b"x")


async def test_the_listener_picks_up_new_certificates_without_a_restart(
    mtls_plane: RunningPlane, tls_files: TlsFiles
) -> None:
    old = tls_files.client_credentials()
    tls_files.ca = trustme.CA()
    tls_files.write()  # a new CA: new server certificate, client CA and client certificate
    serving = health_pb2.HealthCheckResponse.SERVING
    assert await _health(mtls_plane.address, tls_files.client_credentials()) == serving
    await _refused(mtls_plane.address, old)


async def test_outbound_channels_are_made_again_when_their_files_change(
    mtls_plane: RunningPlane, tls_files: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel out whose client certificate is replaced by one the plane does not
    trust fails its next call (a new connection was made), and works again once
    the files are put back: the files are followed, not read once."""
    monkeypatch.setattr(outbound, "RELOAD_CHECK_SECONDS", 0.0)
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("client.pem", "client-key.pem"):
        (mine / name).write_bytes((tls_files.directory / name).read_bytes())
    assert mtls_plane.runtime is not None
    channel = outbound.open_channel(
        mtls_plane.address,
        mtls_plane.runtime.minter,
        audience=ECHO_SERVICE,
        subject=caller_identity("relay"),
        tls=ClientTls(tls_files.ca_file, mine / "client.pem", mine / "client-key.pem"),
    )
    async with channel:
        assert await channel.unary_unary(ECHO)(b"1", timeout=5)
        stranger = new_tls_files(tmp_path / "stranger")
        for name in ("client.pem", "client-key.pem"):
            (mine / name).write_bytes((stranger.directory / name).read_bytes())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(ECHO)(b"2", timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        for name in ("client.pem", "client-key.pem"):
            (mine / name).write_bytes((tls_files.directory / name).read_bytes())
        assert await channel.unary_unary(ECHO)(b"3", timeout=5)


async def test_a_client_tls_identity_is_restamped_when_a_file_is_replaced(
    tls_files: TlsFiles,
) -> None:
    identity = ClientTls(tls_files.ca_file, tls_files.client_cert, tls_files.client_key)
    before = identity.stamp()
    replacement = tls_files.client_cert.with_suffix(".new")
    replacement.write_bytes(tls_files.client_cert.read_bytes() + b"\n")
    os.replace(replacement, tls_files.client_cert)
    assert identity.stamp() != before


def _settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(
        None,
        plane_env(token="t" * 40, database_url="sqlite://", data_dir=tmp_path / "data", extra=env),
    )


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"])
async def test_plaintext_off_loopback_is_refused(tmp_path: Path, listen: str) -> None:
    settings = _settings(tmp_path, PPOS_LISTEN=listen)
    server = ControlPlaneServer(settings)
    with pytest.raises(ConfigError, match="PPOS_ALLOW_PLAINTEXT=true"):
        await server.start()


def test_plaintext_off_loopback_is_allowed_when_said_so(tmp_path: Path) -> None:
    settings = _settings(tmp_path, PPOS_LISTEN="0.0.0.0:0", PPOS_ALLOW_PLAINTEXT="true")
    settings.tls.validate(settings.server.listen)


def test_tls_settings_come_in_pairs(tmp_path: Path, tls_files: TlsFiles) -> None:
    settings = _settings(tmp_path, PPOS_TLS_CERT_FILE=str(tls_files.server_cert))
    with pytest.raises(ConfigError, match="give both"):
        settings.tls.validate("127.0.0.1:0")
    env = {**tls_files.plane_env(), "PPOS_TLS_CA_FILE": str(tls_files.directory / "missing")}
    settings = _settings(tmp_path, **env)
    with pytest.raises(ConfigError, match=r"--tls-ca-file: .* is not a readable file"):
        settings.tls.validate("127.0.0.1:0")
