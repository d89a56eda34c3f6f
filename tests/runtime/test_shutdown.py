"""Graceful shutdown: in-flight calls finish, streams end with a clear status,
health turns NOT_SERVING, and no new call is accepted."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.relay import SLOW, TICKS
from tests.support.servers import RunningPlane


async def test_in_flight_calls_finish_and_streams_end_with_unavailable(
    plane: RunningPlane,
) -> None:
    slow = plane.channel.unary_unary(SLOW)
    ticks = plane.channel.unary_stream(TICKS)
    stream = ticks(b"", metadata=plane.operator)
    first = await stream.read()
    assert first == b"0"
    in_flight = asyncio.ensure_future(slow(b"", metadata=plane.operator))
    await asyncio.sleep(0.1)  # the slow call is now inside its handler

    await plane.server.stop(grace=5)

    assert await in_flight == b"done", "an in-flight call must be allowed to finish"
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await _read_to_end(stream)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (ended.value.details() or "")


async def _read_to_end(stream: grpc.aio.UnaryStreamCall[bytes, bytes]) -> None:
    while await stream.read() is not grpc.aio.EOF:
        pass
    raise AssertionError("stream ended without a status")


async def test_health_turns_not_serving_while_draining(plane: RunningPlane) -> None:
    health = health_pb2_grpc.HealthStub(plane.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.ensure_future(plane.server.stop(grace=2))
    second = await watch.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stopping
