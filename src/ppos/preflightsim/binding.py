"""What a regional system checks beyond the token itself: that it was minted for
the request that carries it (`rqh`), and that a command's token is spent once.

The interceptor sees metadata only, so a call admitted by its token runs
through a handler rebuilt here: it takes the request's bytes, compares their
SHA-256 with the token's `rqh`, and (for gateway commands) records the token's
`jti` in this process's ledger before it decodes the request and runs the
real behaviour. Written against the contract, not the control plane's code.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ppos.preflightsim.preflight_jwt import PreflightClaims
from ppos.preflightsim.replies import Refusal, end_with, invalid_argument, unauthenticated


def sha256_b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


class SpentTokens:
    """The jtis of the command tokens this process accepted, until they expire."""

    def __init__(self, leeway_seconds: int = 6, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, int] = {}
        self._leeway = leeway_seconds
        self._clock = clock

    def first_use(self, jti: str, expires_at: int) -> bool:
        with self._lock:
            if jti in self._spent:
                return False
            now = self._clock()
            if len(self._spent) % 1024 == 1023:  # bounded by the tokens of one lifetime
                self._spent = {j: e for j, e in self._spent.items() if e + self._leeway >= now}
            self._spent[jti] = expires_at
            return True


def _refuse(context: Any, refusal: Refusal) -> None:
    end_with(context, refusal.to_grpc_status())


def bound_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    claims: PreflightClaims,
    spent: SpentTokens | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` run only for the request `claims` were minted for; with `spent`,
    only once per token. Request streams are not bound (the contract has none)."""
    decode = handler.request_deserializer

    def check(raw: bytes) -> tuple[Any, Refusal | None]:
        if not claims.request_sha256:
            return None, unauthenticated(
                "PREFLIGHT_JWT rejected: not bound to a request", reason="PREFLIGHT_JWT_UNBOUND"
            )
        if sha256_b64url(raw) != claims.request_sha256:
            return None, unauthenticated(
                "PREFLIGHT_JWT rejected: minted for another request",
                reason="PREFLIGHT_JWT_REQUEST_MISMATCH",
            )
        if spent is not None and not spent.first_use(claims.jti, claims.expires_at):
            return None, unauthenticated(
                "PREFLIGHT_JWT rejected: already used", reason="PREFLIGHT_JWT_REPLAYED"
            )
        try:
            return (decode(raw) if decode is not None else raw), None
        except Exception:  # noqa: BLE001 - whatever the parser objects to, the body is bad
            return None, invalid_argument("request", "does not decode as this method's request")

    common: dict[str, Any] = {
        "request_deserializer": None,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_call(raw: bytes, context: Any) -> Any:
            request, refusal = check(raw)
            if refusal is not None:
                _refuse(context, refusal)
                return None
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_call, **common)
    if handler.unary_stream is not None:
        streaming: Any = handler.unary_stream
        if not inspect.isasyncgenfunction(streaming):  # a context.write() writer

            async def writer_call(raw: bytes, context: Any) -> None:
                request, refusal = check(raw)
                if refusal is not None:
                    _refuse(context, refusal)
                    return
                await streaming(request, context)

            return grpc.unary_stream_rpc_method_handler(writer_call, **common)

        async def stream_call(raw: bytes, context: Any) -> AsyncIterator[Any]:
            request, refusal = check(raw)
            if refusal is not None:
                _refuse(context, refusal)
                return
            async for item in streaming(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(stream_call, **common)
    return handler
