"""The edge decodes requests only after it has admitted the call, for all four
call shapes: an unauthenticated caller learns nothing but UNAUTHENTICATED
whatever the body; an admitted one gets INVALID_ARGUMENT with a fixed message
for a body that is too large for the method or does not decode; a request
stream is held to the same rule message by message.

A real grpc.aio server on loopback, registered as the composition root does
(metrics outside the edge, the transport limit from the access table), with
a service of every shape whose requests are real protobuf messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from ppos.controlplane.runtime.observability import MeteredServer
from ppos.controlplane.runtime.server import server_options
from ppos.controlplane.security.access import AccessTable, MethodRule
from ppos.controlplane.security.authentication import EdgeAuthenticator
from ppos.controlplane.security.control_token import ControlToken
from ppos.controlplane.security.edge import EdgeGuard, GuardedServer
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.principal import PrincipalKind
from ppos.controlplane.security.tokens import TokenVerifier
from tests.support.logs import captured

SERVICE = "ppos.test.v1.ShapesService"
LIMIT = 1024  # bytes, every method of the test service
LARGEST = 128 * 1024  # one method's, above the default: so the transport's
SHAPES = ("Unary", "ServerStream", "WriterStream", "ClientStream", "Bidi")
STREAMING_REQUESTS = ("ClientStream", "Bidi")
UNDECODABLE = b"\xff"  # a field tag with no end
BAD_UTF8 = b"\x0a\x02\xff\xfe"  # `service` (a string) holding bytes that are not UTF-8
NESTED_GROUPS = b"\xa3\x06" * 101 + b"\xa4\x06" * 101  # 101 nested unknown groups
FIXED_MESSAGE = "invalid request: request: is not a valid encoding of this method's request message"
REPLY = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def _request(name: str) -> bytes:
    return health_pb2.HealthCheckRequest(service=name).SerializeToString()


def _request_of(size: int) -> bytes:
    """A valid request of exactly `size` bytes."""
    body = _request("n" * (size - 4))  # tag and a length of up to three bytes
    body = _request("n" * (size - 4 + size - len(body)))
    assert len(body) == size
    return body


@dataclass
class Shapes:
    """The test service: records what each behaviour received, decoded."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def _saw(self, method: str, request: Any) -> None:
        assert isinstance(request, health_pb2.HealthCheckRequest), type(request)
        self.seen.append((method, request.service))

    def unary(self, method: str) -> Any:
        async def behaviour(request: Any, context: Any) -> health_pb2.HealthCheckResponse:
            self._saw(method, request)
            return REPLY

        return behaviour

    async def server_stream(
        self, request: Any, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        self._saw("ServerStream", request)
        yield REPLY
        yield REPLY

    async def writer_stream(self, request: Any, context: Any) -> None:
        self._saw("WriterStream", request)
        await context.write(REPLY)

    async def client_stream(
        self, requests: AsyncIterator[Any], context: Any
    ) -> health_pb2.HealthCheckResponse:
        async for request in requests:
            self._saw("ClientStream", request)
        return REPLY

    async def bidi(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        async for request in requests:
            self._saw("Bidi", request)
            yield REPLY

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        common: dict[str, Any] = {
            "request_deserializer": health_pb2.HealthCheckRequest.FromString,
            "response_serializer": health_pb2.HealthCheckResponse.SerializeToString,
        }
        return {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary("Unary"), **common),
            "Open": grpc.unary_unary_rpc_method_handler(self.unary("Open"), **common),
            "Large": grpc.unary_unary_rpc_method_handler(self.unary("Large"), **common),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, **common),
            "WriterStream": grpc.unary_stream_rpc_method_handler(self.writer_stream, **common),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, **common),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, **common),
        }


def _rule(name: str, *kinds: PrincipalKind, limit: int = LIMIT) -> MethodRule:
    return MethodRule(f"/{SERVICE}/{name}", SERVICE, frozenset(kinds), max_request_bytes=limit)


@dataclass
class Served:
    address: str
    token: str
    shapes: Shapes

    @property
    def operator(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    token = "ppos_shapes_test_token_0123456789abcdef"
    ring = KeyRing.from_directory(tmp_path / "keys")
    access = AccessTable(
        [
            *(_rule(name, PrincipalKind.OPERATOR) for name in SHAPES),
            _rule("Open", PrincipalKind.ANONYMOUS),
            _rule("Large", PrincipalKind.OPERATOR, limit=LARGEST),
        ]
    )
    edge = EdgeGuard(
        access, EdgeAuthenticator(ControlToken(token), TokenVerifier(ring, issuer="test"))
    )
    server = grpc.aio.server(options=server_options(access))
    shapes = Shapes()
    GuardedServer(MeteredServer(server), edge).add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, shapes.handlers())]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Served(f"127.0.0.1:{port}", token, shapes)
    finally:
        await server.stop(0)


async def _call(
    served: Served, method: str, bodies: list[bytes], metadata: Any = None
) -> grpc.aio.AioRpcError | None:
    """Call `method` with raw `bodies` (one, or a stream); the error, or None when OK."""
    path = f"/{SERVICE}/{method}"
    if method in STREAMING_REQUESTS:
        try:
            await asyncio.to_thread(_stream_requests, served.address, method, bodies, metadata)
        except grpc.RpcError as error:
            return error  # type: ignore[return-value]  # the blocking client's, same API
        return None
    async with grpc.aio.insecure_channel(served.address) as channel:
        try:
            if method in ("ServerStream", "WriterStream"):
                call = channel.unary_stream(path)(bodies[0], metadata=metadata, timeout=10)
                async for _ in call:
                    pass
            else:
                await channel.unary_unary(path)(bodies[0], metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error
    return None


def _stream_requests(address: str, method: str, bodies: list[bytes], metadata: Any) -> None:
    """Stream `bodies` with the blocking client. The edge refuses a streaming call
    as it starts, maybe before the client has sent its messages: the aio client
    then reports its own failed write as INTERNAL instead of the server's
    status; the blocking client reports the server's."""
    path = f"/{SERVICE}/{method}"
    with grpc.insecure_channel(address) as channel:
        if method == "ClientStream":
            channel.stream_unary(path)(iter(bodies), metadata=metadata, timeout=10)
        else:
            for _ in channel.stream_stream(path)(iter(bodies), metadata=metadata, timeout=10):
                pass


def _reason(error: grpc.aio.AioRpcError) -> str:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(details, bytes), "no rich status details"
    status = status_pb2.Status.FromString(details)
    for item in status.details:
        info = error_details_pb2.ErrorInfo()
        if item.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo")


def _bodies(method: str, last: bytes) -> list[bytes]:
    """A valid message then `last`, for shapes that stream requests; else `last`."""
    return [_request("first"), last] if method in STREAMING_REQUESTS else [last]


@pytest.mark.parametrize("method", SHAPES)
async def test_valid_requests_arrive_decoded(served: Served, method: str) -> None:
    assert await _call(served, method, _bodies(method, _request("ok")), served.operator) is None
    names = ["first", "ok"] if method in STREAMING_REQUESTS else ["ok"]
    assert served.shapes.seen == [(method, name) for name in names]


@pytest.mark.parametrize("method", SHAPES)
@pytest.mark.parametrize("body", [UNDECODABLE, BAD_UTF8, NESTED_GROUPS, b"x" * (LIMIT + 1)])
async def test_unauthenticated_callers_learn_nothing_about_the_body(
    served: Served, method: str, body: bytes
) -> None:
    error = await _call(served, method, [body])
    assert error is not None
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _reason(error) == "MISSING_CREDENTIAL"
    assert served.shapes.seen == []


@pytest.mark.parametrize("method", SHAPES)
@pytest.mark.parametrize("body", [UNDECODABLE, BAD_UTF8, NESTED_GROUPS])
async def test_an_undecodable_body_is_a_fixed_invalid_argument(
    served: Served, method: str, body: bytes
) -> None:
    with captured() as logs:
        error = await _call(served, method, _bodies(method, body), served.operator)
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == FIXED_MESSAGE
    assert _reason(error) == "UNDECODABLE_REQUEST"
    # The messages before the bad one were decoded and handled; nothing after.
    expected = [(method, "first")] if method in STREAMING_REQUESTS else []
    assert served.shapes.seen == expected
    assert [entry for entry in logs if entry["log_level"] in ("error", "critical")] == []
    refused = [entry for entry in logs if entry["event"] == "rpc.refused"]
    assert [(entry["log_level"], entry["reason"]) for entry in refused] == [
        ("info", "UNDECODABLE_REQUEST")
    ]


@pytest.mark.parametrize("method", SHAPES)
async def test_a_body_over_the_method_limit_is_refused_before_decoding(
    served: Served, method: str
) -> None:
    # Valid protobuf, one byte over the limit: refused by its size, not parsed.
    body = _request_of(LIMIT + 1)
    error = await _call(served, method, _bodies(method, body), served.operator)
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(error) == "REQUEST_TOO_LARGE"
    assert f"{LIMIT + 1:,} bytes" in (error.details() or "")
    expected = [(method, "first")] if method in STREAMING_REQUESTS else []
    assert served.shapes.seen == expected
    # Exactly at the limit is fine.
    assert await _call(served, method, [_request_of(LIMIT)], served.operator) is None


async def test_each_method_has_its_own_limit_and_the_transport_the_largest(
    served: Served,
) -> None:
    large = _request_of(LARGEST)
    assert await _call(served, "Large", [large], served.operator) is None
    error = await _call(served, "Unary", [large], served.operator)
    assert error is not None
    assert _reason(error) == "REQUEST_TOO_LARGE"
    # Over the largest limit of all, the transport refuses before any of ours runs.
    error = await _call(served, "Large", [b"x" * (LARGEST + 1)], served.operator)
    assert error is not None
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [name for name, _ in served.shapes.seen] == ["Large"]


@pytest.mark.parametrize("body", [UNDECODABLE, BAD_UTF8, NESTED_GROUPS])
async def test_open_methods_answer_an_undecodable_body_with_invalid_argument(
    served: Served, body: bytes
) -> None:
    error = await _call(served, "Open", [body])
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == FIXED_MESSAGE
    assert await _call(served, "Open", [_request("open")]) is None
    assert served.shapes.seen == [("Open", "open")]


def test_the_fixed_message_names_no_type_class_or_file() -> None:
    for word in ("class", "DecodeError", "HealthCheckRequest", "parsing", ".py", "ppos."):
        assert word not in FIXED_MESSAGE
