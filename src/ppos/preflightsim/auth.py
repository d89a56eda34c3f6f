"""How the simulated external systems check callers: a PREFLIGHT_JWT on every call.

The registry's audience is `ppos.preflight.v1.PreflightRegistryService/<region>`,
the gateway's `ppos.preflight.v1.PreflightGatewayService/<region>`: names of
the contract, not of the control plane. Anything but a valid token minted for
this audience and this method is refused with UNAUTHENTICATED before the
handler runs; so is a token minted for another request, or a command's token
presented twice (see binding.py). Every call's metadata can be recorded (to prove what the control
plane sends, e.g. never its control token).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from ppos.preflight.v1 import gateway_service_pb2, registry_service_pb2
from ppos.preflightsim.binding import SpentTokens, bound_handler
from ppos.preflightsim.logs import private_opener
from ppos.preflightsim.preflight_jwt import PreflightClaims, PreflightJwtVerifier, TokenRefused
from ppos.preflightsim.replies import refusing_handler, unauthenticated

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
REGISTRY_SERVICE = registry_service_pb2.DESCRIPTOR.services_by_name["PreflightRegistryService"]
GATEWAY_SERVICE = gateway_service_pb2.DESCRIPTOR.services_by_name["PreflightGatewayService"]
# Gateway methods that change something: their tokens are spent on first use.
COMMANDS = frozenset(m.name for m in GATEWAY_SERVICE.methods) - {"GetCommandOutcome"}


def registry_audience(region: str) -> str:
    return f"{REGISTRY_SERVICE.full_name}/{region}"


def gateway_audience(region: str) -> str:
    return f"{GATEWAY_SERVICE.full_name}/{region}"


class MetadataLog:
    """Optional JSON-lines record of (method, metadata) of every call received."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def record(self, method: str, metadata: Any) -> None:
        if self._path is None:
            return
        entry = {
            "method": method,
            "metadata": [
                [k, v if isinstance(v, str) else v.decode("latin-1")] for k, v in metadata or ()
            ],
        }
        with self._lock, open(self._path, "a", opener=private_opener) as handle:
            handle.write(json.dumps(entry) + "\n")


class RequirePreflightJwt(grpc.aio.ServerInterceptor):
    """Refuses every call without a valid PREFLIGHT_JWT for `audience` and the method."""

    def __init__(
        self,
        verifier: PreflightJwtVerifier,
        audience: str,
        metadata_log: MetadataLog | None = None,
    ) -> None:
        self._verifier = verifier
        self._audience = audience
        self._log = metadata_log or MetadataLog(None)
        self._spent = SpentTokens()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        self._log.record(method, metadata)
        claims, problem = await self._verified(metadata, method)
        if claims is not None:
            spent = self._spent if method.rsplit("/", 1)[-1] in COMMANDS else None
            return bound_handler(handler, claims, spent)
        status = unauthenticated(problem, reason="PREFLIGHT_JWT_REQUIRED").to_grpc_status()
        return refusing_handler(handler, status)

    async def _verified(self, metadata: Any, method: str) -> tuple[PreflightClaims | None, str]:
        """The token's claims, or why the call is refused."""
        values = [v for k, v in metadata or () if k == "authorization"]
        if len(values) != 1 or not str(values[0]).startswith("Bearer "):
            return None, "PREFLIGHT_JWT required: authorization: Bearer <token>"
        token = str(values[0])[len("Bearer ") :]
        try:
            if self._verifier.knows_key_of(token):
                # Signature checks are CPU-bound but short (tens of microseconds).
                claims = self._verifier.verify(token, audience=self._audience, method=method)
            else:  # a kid not loaded yet: the JWKS is read again, off the event loop
                claims = await asyncio.to_thread(
                    self._verifier.verify, token, audience=self._audience, method=method
                )
        except TokenRefused as exc:
            return None, f"PREFLIGHT_JWT rejected: {exc.detail}"
        return claims, ""
