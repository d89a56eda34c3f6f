"""The portal's channel to a plane that requires mutual TLS: with the CA and a
client certificate the plane answers; with the CA alone the handshake fails."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ppos.portal.plane import PlaneLink
from tests.support.servers import RunningPlane


def _check(link: PlaneLink) -> int:
    try:
        reply = health_pb2_grpc.HealthStub(link.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return int(reply.status)
    finally:
        link.close()


async def test_the_portal_reaches_a_plane_over_mutual_tls(mtls_plane: RunningPlane) -> None:
    tls = mtls_plane.tls
    assert tls is not None
    link = PlaneLink(
        mtls_plane.address,
        ca_file=tls.ca_file,
        cert_file=tls.client_cert,
        key_file=tls.client_key,
    )
    assert await asyncio.to_thread(_check, link) == health_pb2.HealthCheckResponse.SERVING
    without = PlaneLink(mtls_plane.address, ca_file=tls.ca_file)
    with pytest.raises(grpc.RpcError) as caught:
        await asyncio.to_thread(_check, without)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
