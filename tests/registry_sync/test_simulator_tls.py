"""The simulator's own TLS: mutual TLS refused at the handshake without a
client certificate from its CA, a renewed certificate served without a
restart, plaintext refused off loopback unless --allow-plaintext."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ppos.preflightsim import cli as sim_cli
from tests.registry_sync.harness import prepare_keys, start_simulator
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.timeout(60)


def _tls_args(files: TlsFiles) -> list[str]:
    return [
        "--tls-cert-file",
        str(files.server_cert),
        "--tls-key-file",
        str(files.server_key),
        "--tls-client-ca-file",
        str(files.ca_file),
    ]


async def _status(port: int, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(reply.status)


async def test_the_simulator_serves_mutual_tls_and_follows_its_files(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    jwks = prepare_keys(tmp_path / "plane")
    sim = await start_simulator("eu-west-1", jwks, extra=_tls_args(tls_files))
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        assert await _status(sim.port, tls_files.client_credentials()) == serving
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _status(sim.port, tls_files.client_credentials(with_certificate=False))
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        old = tls_files.client_credentials()
        tls_files.ca = trustme.CA()
        tls_files.write()  # renewed from another CA, in place
        assert await _status(sim.port, tls_files.client_credentials()) == serving
        with pytest.raises(grpc.aio.AioRpcError):
            await _status(sim.port, old)
    finally:
        await sim.stop(0)


async def test_the_simulator_refuses_plaintext_off_loopback(tmp_path: Path) -> None:
    jwks = prepare_keys(tmp_path / "plane")
    argv = ["--region", "eu-west-1", "--jwks-file", str(jwks), "--listen", "0.0.0.0:0"]
    with pytest.raises(sim_cli.StartError, match="--allow-plaintext"):
        await sim_cli.start(sim_cli.build_parser().parse_args(argv))
    allowed = await sim_cli.start(sim_cli.build_parser().parse_args([*argv, "--allow-plaintext"]))
    await allowed.stop(0)
