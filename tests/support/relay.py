"""A tiny service pair outside our contracts, for tests and benchmarks of the
edge and of outbound calls: Relay (operator) calls Echo (peer) on a target
through the real outbound interceptor; Slow and Ticks exercise shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from ppos.controlplane.runtime.modules import Runtime
from ppos.controlplane.security.access import MethodRule
from ppos.controlplane.security.outbound import open_channel
from ppos.controlplane.security.peers import caller_identity
from ppos.controlplane.security.principal import (
    PrincipalKind,
    current_principal,
    current_request_id,
)

RELAY_SERVICE = "ppos.test.v1.RelayService"
ECHO_SERVICE = "ppos.test.v1.EchoService"
RELAY = f"/{RELAY_SERVICE}/Relay"
SLOW = f"/{RELAY_SERVICE}/Slow"
TICKS = f"/{RELAY_SERVICE}/Ticks"
ECHO = f"/{ECHO_SERVICE}/Echo"

RULES = (
    MethodRule(RELAY, RELAY_SERVICE, frozenset({PrincipalKind.OPERATOR})),
    MethodRule(SLOW, RELAY_SERVICE, frozenset({PrincipalKind.OPERATOR})),
    MethodRule(TICKS, RELAY_SERVICE, frozenset({PrincipalKind.OPERATOR})),
    MethodRule(ECHO, ECHO_SERVICE, frozenset({PrincipalKind.PEER})),
)


class RelayModule:
    """Hosted like any service module; `target` is where Relay sends its Echo call."""

    name = "relay"
    service_names: tuple[str, ...] = ()

    def __init__(self, runtime: Runtime, *, target: str = "", slow_seconds: float = 0.5) -> None:
        self._runtime = runtime
        self._target = target
        self._slow = slow_seconds
        self._channel: grpc.aio.Channel | None = None

    def _echo(self) -> Any:
        if self._channel is None:
            target = self._target or self._runtime.peers.address("noderegistry")
            self._channel = open_channel(
                target,
                self._runtime.minter,
                audience=ECHO_SERVICE,
                subject=caller_identity("relay"),
                tls=self._runtime.peers.tls,
            )
        return self._channel.unary_unary(ECHO)

    def register(self, server: grpc.aio.Server) -> None:
        module = self

        async def relay(request: bytes, context: Any) -> bytes:
            try:
                reply: bytes = await module._echo()(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                # The inner call's status, not an INTERNAL that hides it (a test
                # that fails then says why).
                await context.abort(exc.code(), f"Echo failed: {exc.details()}")
            return reply

        async def echo(request: bytes, context: Any) -> bytes:
            principal = current_principal.get()
            assert principal.kind is PrincipalKind.PEER
            return (
                f"{principal.name}|{principal.acting_for}|{current_request_id.get()}|".encode()
                + (request)
            )

        async def slow(request: bytes, context: Any) -> bytes:
            await asyncio.sleep(module._slow)
            return b"done"

        async def ticks(request: bytes, context: Any) -> Any:
            count = 0
            while not module._runtime.shutdown.is_set():
                yield str(count).encode()
                count += 1
                try:
                    await asyncio.wait_for(module._runtime.shutdown.wait(), 0.05)
                except TimeoutError:
                    continue
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down; reconnect")

        handlers = {
            "Relay": grpc.unary_unary_rpc_method_handler(relay),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
        }
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(RELAY_SERVICE, handlers),
                grpc.method_handlers_generic_handler(
                    ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
                ),
            )
        )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
