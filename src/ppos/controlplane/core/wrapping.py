"""One way to put something around every method a server hosts.

`WrappingServer(server, wrap)` is what handlers are registered on: each
method handler passes through `wrap(handler, full_method_name)` once, when it
is registered (or first looked up, for generic handlers), and the wrapped
handler is what the real server runs. The edge and the RPC metrics are both
such wraps, stacked by wrapping a WrappingServer in another.

Why not a grpc.aio ServerInterceptor: it runs a chain and builds a handler
per call; measured here, an empty one alone cost about a quarter of the
throughput of a two-hop call.

Handlers registered by name (`add_registered_method_handlers`, what generated
code calls) reach the real server as one generic handler per service, found
by a dict lookup per call: grpc.aio keeps one pending request future per
registered method and, for every call it accepts, waits on all of them
(`asyncio.wait`, which adds and removes a callback on each), so with our 70
methods each call cost about as much as the read it served. Unknown methods
are answered UNIMPLEMENTED either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import grpc

# A string: grpc.RpcMethodHandler is generic only in its type stubs.
HandlerWrap: TypeAlias = (
    "Callable[[grpc.RpcMethodHandler[Any, Any], str], grpc.RpcMethodHandler[Any, Any]]"
)


class _WrappingGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose handlers are wrapped, each once and cached.

    Only methods that exist are cached: a caller naming made-up methods finds
    nothing here that grows."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: HandlerWrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._cache: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        wrapped = self._cache.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            wrapped = self._cache[method] = self._wrap(handler, method)
        return wrapped


class WrappingServer(grpc.aio.Server):
    """Registers handlers on `server`, each passed through `wrap` first.

    Only registration goes through it: ports and the lifecycle belong to
    whoever built the real server (the composition root)."""

    def __init__(self, server: grpc.aio.Server, wrap: HandlerWrap) -> None:
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]
    ) -> None:
        self._server.add_generic_rpc_handlers(
            [_WrappingGenericHandler(handler, self._wrap) for handler in generic_rpc_handlers]
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        wrapped = {
            name: self._wrap(handler, f"/{service_name}/{name}")
            for name, handler in method_handlers.items()
        }
        if isinstance(self._server, WrappingServer):
            self._server.add_registered_method_handlers(service_name, wrapped)
        else:  # the real server: as a generic handler (see the module)
            self._server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service_name, wrapped),)
            )

    def add_insecure_port(self, address: str) -> int:
        raise RuntimeError("only handlers are registered here; the server owns its ports")

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        raise RuntimeError("only handlers are registered here; the server owns its ports")

    async def start(self) -> None:
        raise RuntimeError("the composition root starts the server")

    async def stop(self, grace: float | None) -> None:
        raise RuntimeError("the composition root stops the server")

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        raise RuntimeError("the composition root owns the server's lifecycle")
