"""Rebuild a gRPC method handler with a wrapper around its behaviour.

Works for all four call shapes of grpc.aio, for behaviours written as
coroutines, async generators or context.write() loops. A streaming behaviour
that is a coroutine function (it writes with context.write()) is wrapped as a
coroutine through `wrap_unary`, so an open stream holds no generator frames
of ours.

Requests decoded by the wrapper: given `max_request_bytes`, the rebuilt
handler takes the request's bytes (grpc.aio runs no deserializer, so nothing
is parsed before the wrapper has looked at the call) and the behaviour gets
them decoded when the wrapper calls it, that is after whatever the wrapper
checks first (the edge: who is calling). A request over the limit, or one
that does not decode, raises INVALID_ARGUMENT with a fixed message naming no
type (`REQUEST_TOO_LARGE`, `UNDECODABLE_REQUEST`). A request stream is
decoded message by message as the behaviour reads it, under the same rule;
behaviours read request streams from their iterator (`context.read()` would
hand back bytes). Given `check_request` too, a single request message is
passed to it once decoded and before the behaviour runs; it raises to refuse
the call (the edge: fields that need a higher role).

Replies may come encoded: a unary behaviour may return its reply's bytes
(`Encoded`), which the rebuilt handler sends as they are. The hottest reads
keep their replies' encodings with the rows they were made from
(`storage.read_memo`), so a reply is a join of kept bytes instead of messages
copied in and serialised again.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from ppos.controlplane.core.errors import InvalidArgument

# Wraps one invocation: (call the real behaviour) -> result or async iterator.
Behaviour = Callable[[Any, Any], Any]


class Encoded:
    """A reply already encoded in the wire format of the method's response message."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _sending_encoded(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """`serializer`, except that a reply already `Encoded` is sent as it is."""
    if serializer is None or getattr(serializer, "sends_encoded", False):
        return serializer

    def serialize(reply: Any) -> bytes:
        return reply.data if reply.__class__ is Encoded else serializer(reply)

    serialize.sends_encoded = True  # type: ignore[attr-defined]
    return serialize


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
        self, invoke: Callable[[Any], AsyncIterator[Any]], context: Any, request: Any = None
    ) -> AsyncIterator[Any]:  # pragma: no cover - interface
        """`request`: the call's request as the wrapper received it (bytes when
        the handler decodes, see the module)."""
        raise NotImplementedError


Decode = Callable[[Any], Any]


def request_too_large(size: int, limit: int) -> InvalidArgument:
    return InvalidArgument.single(
        "request",
        f"is {size:,} bytes; this method takes at most {limit:,}",
        reason="REQUEST_TOO_LARGE",
    )


def undecodable_request() -> InvalidArgument:
    return InvalidArgument.single(
        "request",
        "is not a valid encoding of this method's request message",
        reason="UNDECODABLE_REQUEST",
    )


def request_decoder(
    deserializer: Callable[[bytes], Any] | None, max_bytes: int
) -> Callable[[bytes], Any]:
    """One request's bytes to its message, or INVALID_ARGUMENT (see the module)."""

    def decode(raw: bytes) -> Any:
        if len(raw) > max_bytes:
            raise request_too_large(len(raw), max_bytes)
        if deserializer is None:  # a handler of raw bytes (tests, benchmarks)
            return raw
        try:
            return deserializer(raw)
        except Exception:  # noqa: BLE001 - whatever the parser objects to, the body is bad
            raise undecodable_request() from None

    return decode


def _checked(
    decode: Callable[[bytes], Any], check: Callable[[Any], None]
) -> Callable[[bytes], Any]:
    """`decode`, then `check` of the message it made (which raises to refuse it)."""

    def decode_and_check(raw: bytes) -> Any:
        request = decode(raw)
        check(request)
        return request

    return decode_and_check


async def _decode_each(
    raw_messages: AsyncIterator[bytes], decode: Callable[[bytes], Any]
) -> AsyncIterator[Any]:
    async for raw in raw_messages:
        yield decode(raw)


def _stream_decoder(decode: Callable[[bytes], Any]) -> Decode:
    def decode_stream(raw_messages: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        return _decode_each(raw_messages, decode)

    return decode_stream


def _decoding(behaviour: Behaviour, decode: Decode | None) -> Behaviour:
    """`behaviour` called with its request decoded: a plain function returning what
    `behaviour` returns (its coroutine or generator), so it adds no frame to a call."""
    if decode is None:
        return behaviour

    def decoded(request: Any, context: Any) -> Any:
        return behaviour(decode(request), context)

    return decoded


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
            lambda ctx: _drain(behaviour(request, ctx)), context, request
        ):
            yield item

    return wrapped


def _streaming(
    behaviour: Behaviour, wrapper: CallWrapper, decode: Decode | None
) -> Callable[[Any, Any], Any]:
    # grpc.aio tells a context.write() stream from a generator by the function, so
    # a writer stays a coroutine: no async-generator layers of ours per open stream.
    if inspect.iscoroutinefunction(behaviour):
        return _as_coroutine(_decoding(behaviour, decode), wrapper)
    return _as_generator(_decoding(behaviour, decode), wrapper)


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    wrapper: CallWrapper,
    *,
    max_request_bytes: int | None = None,
    check_request: Callable[[Any], None] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with every invocation run inside `wrapper`; with
    `max_request_bytes`, taking request bytes that the wrapper's call of the
    behaviour decodes, and then checks with `check_request` if given (see the
    module; a handler without it decodes as before, at no extra cost)."""
    decode: Decode | None = None
    deserializer = handler.request_deserializer
    if check_request is not None and (max_request_bytes is None or handler.request_streaming):
        raise ValueError("check_request needs a decoded request of one message")
    if max_request_bytes is not None:
        decode = request_decoder(deserializer, max_request_bytes)
        if check_request is not None:
            decode = _checked(decode, check_request)
        if handler.request_streaming:
            decode = _stream_decoder(decode)
        deserializer = None
    common = {
        "request_deserializer": deserializer,
        "response_serializer": _sending_encoded(handler.response_serializer),
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _as_coroutine(_decoding(handler.unary_unary, decode), wrapper), **common
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _as_coroutine(_decoding(handler.stream_unary, decode), wrapper), **common
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, wrapper, decode), **common
        )
    stream_stream: Any = handler.stream_stream  # the one shape left
    return grpc.stream_stream_rpc_method_handler(
        _streaming(stream_stream, wrapper, decode), **common
    )


def end_with(context: Any, status: grpc.Status) -> None:
    """Make `status` the call's status once its behaviour returns.

    Instead of `context.abort()`: abort keeps its AbortError on the call's
    state, and that error's traceback holds the frames it passed through (the
    request, the context, which holds the call's state again): a cycle that
    keeps the request's bytes until the cyclic collector runs."""
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata(status.trailing_metadata)


def refusing_handler(
    handler: grpc.RpcMethodHandler[Any, Any], status: grpc.Status
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape that ends with `status` and runs nothing else
    (it does not decode the request either)."""
    common = {"request_deserializer": None, "response_serializer": handler.response_serializer}

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
