"""Outbound calls: every one carries a freshly minted PREFLIGHT_JWT and nothing else.

The client interceptor drops any credential already in the call's metadata
(defence in depth: the control token never reaches a handler, so it cannot be
here) and adds `authorization: Bearer <PREFLIGHT_JWT>` minted for this call:
the channel's audience, the called method, the current request id, and the
principal this call is made for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from ppos.controlplane.core.ids import ulid
from ppos.controlplane.security.edge import CREDENTIAL_KEYS
from ppos.controlplane.security.principal import (
    PrincipalKind,
    current_principal,
    current_request_id,
)
from ppos.controlplane.security.tokens import TokenMinter


class PreflightJwtInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    def __init__(self, minter: TokenMinter, *, audience: str, subject: str) -> None:
        self._minter = minter
        self._audience = audience
        self._subject = subject

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        request_id = current_request_id.get() or "req_" + ulid()
        principal = current_principal.get()
        acting_for = "" if principal.kind is PrincipalKind.ANONYMOUS else principal.display
        token = self._minter.mint_preflight(
            subject=self._subject,
            audience=self._audience,
            method=method,
            request_id=request_id,
            acting_for=acting_for,
        )
        kept: Sequence[Any] = [
            (key, value)
            for key, value in (details.metadata or ())
            if key.lower() not in CREDENTIAL_KEYS and key.lower() != "x-request-id"
        ]
        metadata = grpc.aio.Metadata(
            *kept, ("authorization", f"Bearer {token}"), ("x-request-id", request_id)
        )
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_token(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_token(client_call_details), request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._with_token(client_call_details), request_iterator)

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._with_token(client_call_details), request_iterator)


CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


def open_channel(
    address: str, minter: TokenMinter, *, audience: str, subject: str
) -> grpc.aio.Channel:
    """An aio channel to `address` whose every call carries a fresh PREFLIGHT_JWT."""
    interceptor = PreflightJwtInterceptor(minter, audience=audience, subject=subject)
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=[interceptor])
