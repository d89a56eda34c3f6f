"""How the simulated external systems check callers: a PREFLIGHT_JWT on every call.

Public keys come from the control plane's JWKS (a file, or its JwksService),
refreshed when an unknown `kid` shows up (after a key rotation), at most once
per `refresh_interval`. Anything but a valid token minted for this audience
and this method is refused with UNAUTHENTICATED. Every call's metadata can be
recorded (to prove what the control plane sends, e.g. never its control token).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from ppos.controlplane.auth.v1 import jwks_service_pb2, jwks_service_pb2_grpc
from ppos.controlplane.core.errors import Unauthenticated
from ppos.controlplane.core.handlers import refusing_handler
from ppos.controlplane.security.keys import JwksKeySource, PublicKey
from ppos.controlplane.security.tokens import TokenRejected, TokenVerifier

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class RefreshingJwks:
    """A public key source that re-reads the JWKS when it meets an unknown kid."""

    def __init__(
        self,
        load: Callable[[], dict[str, Any]],
        *,
        refresh_interval: float = 5.0,
    ) -> None:
        self._load = load
        self._interval = refresh_interval
        self._lock = threading.Lock()
        self._source = JwksKeySource(load())
        self._loaded_at = time.monotonic()

    def public_key(self, kid: str) -> PublicKey | None:
        key = self._source.public_key(kid)
        if key is not None:
            return key
        with self._lock:
            if time.monotonic() - self._loaded_at >= self._interval:
                self._source = JwksKeySource(self._load())
                self._loaded_at = time.monotonic()
        return self._source.public_key(kid)


def jwks_from_file(path: Path) -> Callable[[], dict[str, Any]]:
    def load() -> dict[str, Any]:
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    return load


def jwks_from_service(address: str, timeout: float = 5.0) -> Callable[[], dict[str, Any]]:
    """Fetch the set from the control plane's JwksService (a blocking call)."""

    def load() -> dict[str, Any]:
        with grpc.insecure_channel(address) as channel:
            stub = jwks_service_pb2_grpc.JwksServiceStub(channel)
            reply = stub.GetJwks(jwks_service_pb2.GetJwksRequest(), timeout=timeout)
        data: dict[str, Any] = json.loads(reply.jwks_json)
        return data

    return load


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
        with self._lock, self._path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")


class RequirePreflightJwt(grpc.aio.ServerInterceptor):
    """Refuses every call without a valid PREFLIGHT_JWT for `audience` and the method."""

    def __init__(
        self, verifier: TokenVerifier, audience: str, metadata_log: MetadataLog | None = None
    ) -> None:
        self._verifier = verifier
        self._audience = audience
        self._log = metadata_log or MetadataLog(None)

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
        values = [v for k, v in metadata or () if k == "authorization"]
        problem = None
        if len(values) != 1 or not str(values[0]).startswith("Bearer "):
            problem = "PREFLIGHT_JWT required: authorization: Bearer <token>"
        else:
            token = str(values[0])[len("Bearer ") :]
            try:
                # Signature checks are CPU-bound but short (tens of microseconds).
                self._verifier.verify_preflight(token, audience=self._audience, method=method)
            except TokenRejected as exc:
                problem = f"PREFLIGHT_JWT rejected: {exc.detail}"
        if problem is None:
            return handler
        status = Unauthenticated(problem, reason="PREFLIGHT_JWT_REQUIRED").to_grpc_status()
        return refusing_handler(handler, status)
