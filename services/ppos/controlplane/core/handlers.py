"""Rebuild a gRPC method handler with a wrapper around its behaviour.

Works for all four call shapes of grpc.aio, for behaviours written as
coroutines, async generators or context.write() loops. A streaming behaviour
that is a coroutine function (it writes with context.write()) is wrapped as a
coroutine through `around_unary`, so an open stream holds no generator frames
of ours.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

# Wraps one invocation: (call the real behaviour) -> result or async iterator.
Behaviour = Callable[[Any, Any], Any]


class CallWrapper:
    """Runs a unary or streaming behaviour inside `around_unary` / `around_stream`."""

    async def around_unary(
        self, invoke: Callable[[Any], Awaitable[Any]], context: Any
    ) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def around_stream(
        self, invoke: Callable[[Any], AsyncIterator[Any]], context: Any
    ) -> AsyncIterator[Any]:  # pragma: no cover - interface
        raise NotImplementedError


async def _drain(result: Any) -> AsyncIterator[Any]:
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result  # a behaviour that streams with context.write()
    else:
        for item in result:
            yield item


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], wrapper: CallWrapper
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with every invocation run inside `wrapper`."""
    common = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    behaviour: Any
    if handler.unary_unary is not None:
        behaviour = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            return await wrapper.around_unary(lambda ctx: behaviour(request, ctx), context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **common)
    if handler.stream_unary is not None:
        behaviour = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            return await wrapper.around_unary(lambda ctx: behaviour(requests, ctx), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **common)
    if handler.unary_stream is not None:
        behaviour = handler.unary_stream
        if inspect.iscoroutinefunction(behaviour):
            # Streams with context.write(): stays a coroutine (grpc.aio tells the two
            # apart by the function), no async-generator layers per open stream.
            async def unary_stream_writer(request: Any, context: Any) -> None:
                await wrapper.around_unary(lambda ctx: behaviour(request, ctx), context)

            return grpc.unary_stream_rpc_method_handler(unary_stream_writer, **common)

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            async for item in wrapper.around_stream(
                lambda ctx: _drain(behaviour(request, ctx)), context
            ):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **common)
    behaviour = handler.stream_stream
    if inspect.iscoroutinefunction(behaviour):

        async def stream_stream_writer(requests: Any, context: Any) -> None:
            await wrapper.around_unary(lambda ctx: behaviour(requests, ctx), context)

        return grpc.stream_stream_rpc_method_handler(stream_stream_writer, **common)

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        async for item in wrapper.around_stream(
            lambda ctx: _drain(behaviour(requests, ctx)), context
        ):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **common)


def refusing_handler(
    handler: grpc.RpcMethodHandler[Any, Any], status: grpc.Status
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape that aborts with `status` and runs nothing else."""
    common = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def refuse_stream(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(status.code, status.details, status.trailing_metadata)
        yield  # pragma: no cover - abort raises

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **common)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **common)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **common)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **common)
