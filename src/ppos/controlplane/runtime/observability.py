"""Metrics wiring: RPC metrics per method, the edge's auth-failure hook, and the
Prometheus HTTP endpoint.

RPC metrics wrap each method handler once, when it is registered, through a
WrappingServer like the edge (core/wrapping.py says why not an interceptor).
The wrapper sits outside the edge, so it sees every call the server answers,
refusals at the edge included: a count per method and status code, and a
latency histogram per method (unary calls to their response, streams to their
end). Method labels are the registered full method names, so their number is
bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
import structlog

from ppos.controlplane.core.handlers import CallWrapper, wrap_handler
from ppos.controlplane.core.metrics import AUTH_FAILURES, RPC_DURATION, RPC_REQUESTS
from ppos.controlplane.core.wrapping import WrappingServer
from ppos.controlplane.security.edge import AuthFailureHook

_log = structlog.get_logger("ppos.metrics")


# A status code's name by the code and by its number (grpc.aio's context may
# hand back either): one dict lookup a call, where a walk of the enum cost a
# NOT_FOUND GetNode about 25 µs.
_CODE_NAMES: dict[Any, str] = {
    **{code: code.name for code in grpc.StatusCode},
    **{code.value[0]: code.name for code in grpc.StatusCode},
}


def _code_name(context: Any, default: str) -> str:
    """The status the call ended with, as set by abort() or set_code()."""
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - a context without a code: keep the default
        return default
    if code is None:
        return default
    return _CODE_NAMES.get(code, default)


class _Measured(CallWrapper):
    """Counts and times one method's calls (its labelled children looked up once)."""

    __slots__ = ("_counters", "_duration", "_method")

    def __init__(self, method: str) -> None:
        self._method = method
        self._duration = RPC_DURATION.labels(method)
        self._counters: dict[str, Any] = {}

    def _record(self, code: str, started: float) -> None:
        counter = self._counters.get(code)
        if counter is None:
            counter = self._counters[code] = RPC_REQUESTS.labels(self._method, code)
        counter.inc()
        self._duration.observe(time.perf_counter() - started)

    def wrap_unary(
        self, behaviour: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        record = self._record

        async def measured(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            try:
                result = await behaviour(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = _code_name(context, "UNKNOWN")
                raise
            else:
                code = _code_name(context, "OK")
            finally:
                record(code, started)
            return result

        return measured

    async def around_stream(
        self, invoke: Callable[[Any], AsyncIterator[Any]], context: Any, request: Any = None
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            async for item in invoke(context):
                yield item
            code = _code_name(context, "OK")
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except BaseException:
            code = _code_name(context, "UNKNOWN")
            raise
        finally:
            self._record(code, started)


def metered(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` counted and timed under `method`."""
    return wrap_handler(handler, _Measured(method))


class MeteredServer(WrappingServer):
    """Registers handlers on `server` with RPC metrics around each one."""

    def __init__(self, server: grpc.aio.Server) -> None:
        super().__init__(server, metered)


def auth_failure_hook(then: AuthFailureHook | None = None) -> AuthFailureHook:
    """Counts refusals at the edge by reason, then calls `then` (if any)."""

    def hook(method: str, reason: str) -> None:
        AUTH_FAILURES.labels(reason).inc()
        if then is not None:
            then(method, reason)

    return hook


class MetricsEndpoint:
    """Prometheus exposition over HTTP (`/metrics`), in a daemon thread."""

    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - operators choose the bind
        self._port = int(port)
        self._server: WSGIServer | None = None
        self.port = 0

    def start(self) -> None:
        server, _thread = prometheus_client.start_http_server(self._port, addr=self._host)
        self._server = server
        self.port = int(server.server_address[1])
        _log.info("metrics.listening", address=f"{self._host}:{self.port}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
