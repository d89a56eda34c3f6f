"""The simulator's error replies: a gRPC status with google.rpc details.

What a real registry or gateway built on gRPC's rich error model sends: an
ErrorInfo with a machine-readable reason in the simulator's own domain, a
BadRequest naming the field at fault, a RetryInfo saying when to try again
(the control plane's sync honours it). Callers see the code and message;
the details travel base64 in `grpc-status-details-bin`.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "preflightsim.ppos.printprice"


class Refusal(Exception):
    """A call the simulator refuses on purpose, with the status to reply."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str,
        details: tuple[Message, ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.details = details

    def to_grpc_status(self) -> grpc.Status:
        packed = []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        for detail in (info, *self.details):
            item = any_pb2.Any()
            item.Pack(detail)
            packed.append(item)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return rpc_status.to_status(status)


def invalid_argument(field: str, description: str, *, reason: str = "INVALID_ARGUMENT") -> Refusal:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field=field, description=description)
    return Refusal(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid request: {field}: {description}",
        reason=reason,
        details=(bad,),
    )


def unavailable(message: str, *, retry_after_seconds: float) -> Refusal:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(retry_after_seconds * 1e9))
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    return Refusal(grpc.StatusCode.UNAVAILABLE, message, reason="UNAVAILABLE", details=(retry,))


def unauthenticated(message: str, *, reason: str) -> Refusal:
    return Refusal(grpc.StatusCode.UNAUTHENTICATED, message, reason=reason)


def end_with(context: Any, status: grpc.Status) -> None:
    """End the call with `status` once its behaviour returns: set_code rather than
    abort, so nothing of the call is kept in an exception."""
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def refusing_handler(
    handler: grpc.RpcMethodHandler[Any, Any], status: grpc.Status
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that ends the call with `status`
    and runs nothing else (it does not even decode the request)."""
    common: dict[str, Any] = {
        "request_deserializer": None,
        "response_serializer": handler.response_serializer,
    }

    # A coroutine for every shape: grpc.aio runs a streaming one as a writer.
    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        end_with(context, status)

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **common)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **common)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **common)
    return grpc.stream_stream_rpc_method_handler(refuse, **common)
