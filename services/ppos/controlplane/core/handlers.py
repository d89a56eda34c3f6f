"""Rebuild a gRPC method handler with a wrapper around its behaviour.

Works for all four call shapes of grpc.aio, for behaviours written as
coroutines, async generators or context.write() loops. A streaming behaviour
that is a coroutine function (it writes with context.write()) is wrapped as a
coroutine through `wrap_unary`, so an open stream holds no generator frames
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
    """Runs a unary or streaming behaviour inside `wrap_unary` / `around_stream`."""

    def wrap_unary(
        self, behaviour: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:  # pragma: no cover - interface
        """A coroutine function running `await behaviour(request, context)` inside
        this wrapper (or refusing to). A closure of its own, so a call is one
        coroutine, and grpc.aio's per-call `inspect.iscoroutinefunction` of the
        handler is answered by a plain function (a partial costs it 1 µs more)."""
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


def _as_coroutine(behaviour: Behaviour, wrapper: CallWrapper) -> Callable[[Any, Any], Any]:
    """`behaviour` (a coroutine function: unary replies, or streams written with
    context.write()) run inside `wrapper`, still a coroutine function."""
    return wrapper.wrap_unary(behaviour)


def _as_generator(behaviour: Behaviour, wrapper: CallWrapper) -> Callable[[Any, Any], Any]:
    """A streaming `behaviour` that yields, run inside `wrapper.around_stream`."""

    async def wrapped(request: Any, context: Any) -> AsyncIterator[Any]:
        async for item in wrapper.around_stream(
            lambda ctx: _drain(behaviour(request, ctx)), context
        ):
            yield item

    return wrapped


def _streaming(behaviour: Behaviour, wrapper: CallWrapper) -> Callable[[Any, Any], Any]:
    # grpc.aio tells a context.write() stream from a generator by the function, so
    # a writer stays a coroutine: no async-generator layers of ours per open stream.
    if inspect.iscoroutinefunction(behaviour):
        return _as_coroutine(behaviour, wrapper)
    return _as_generator(behaviour, wrapper)


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], wrapper: CallWrapper
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with every invocation run inside `wrapper`."""
    common = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _as_coroutine(handler.unary_unary, wrapper), **common
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _as_coroutine(handler.stream_unary, wrapper), **common
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, wrapper), **common
        )
    stream_stream: Any = handler.stream_stream  # the one shape left
    return grpc.stream_stream_rpc_method_handler(_streaming(stream_stream, wrapper), **common)


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
