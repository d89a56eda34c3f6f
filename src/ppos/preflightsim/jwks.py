"""The public keys the simulator trusts: the control plane's JWKS, reloaded on rotation.

The set comes from a file (the control plane's published jwks.json) or from
its JwksService. A token naming a kid the set does not hold is what a key
rotation looks like from outside, so the set is loaded again then, at most
once per `refresh_interval` (a stream of forged kids costs one reload per
interval, not one per token). A reload that fails keeps the keys in force.
Keys are PyJWT's: only EC P-256 keys, usable with ES256, are taken.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt

from ppos.controlplane.auth.v1 import jwks_service_pb2, jwks_service_pb2_grpc
from ppos.preflightsim.logs import get_logger

ALGORITHM = "ES256"
_log = get_logger("ppos.preflightsim.jwks")

JwksLoader = Callable[[], dict[str, Any]]


def jwks_from_file(path: Path) -> JwksLoader:
    def load() -> dict[str, Any]:
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    return load


def jwks_from_service(
    address: str,
    timeout: float = 5.0,
    credentials: Callable[[], grpc.ChannelCredentials] | None = None,
) -> JwksLoader:
    """Fetch the set from the control plane's JwksService (a blocking call);
    over TLS with `credentials` (read again at each fetch: renewed files apply)."""

    def open_channel() -> grpc.Channel:
        if credentials is None:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, credentials())

    def load() -> dict[str, Any]:
        with open_channel() as channel:
            stub = jwks_service_pb2_grpc.JwksServiceStub(channel)
            reply = stub.GetJwks(jwks_service_pb2.GetJwksRequest(), timeout=timeout)
        data: dict[str, Any] = json.loads(reply.jwks_json)
        return data

    return load


def es256_keys(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """The ES256 verification keys of a JWKS document, by kid; anything else is left out."""
    keys: dict[str, jwt.PyJWK] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("kty") != "EC" or entry.get("crv") != "P-256":
            continue
        if entry.get("alg", ALGORITHM) != ALGORITHM or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError):
            continue  # not a point on the curve, or not a key at all
    return keys


class RefreshingJwks:
    """ES256 public keys by kid, loaded again when an unknown kid shows up."""

    def __init__(
        self,
        load: JwksLoader,
        *,
        refresh_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._interval = refresh_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._keys = es256_keys(load())  # at start a failure is the caller's to report
        self._loaded_at = clock()
        self.reloads = 0

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this kid among those loaded (no I/O)."""
        return self._keys.get(kid)

    def key_or_reload(self, kid: str) -> jwt.PyJWK | None:
        """The key with this kid, loading the set again first when it is unknown and
        the last load is `refresh_interval` old (blocking I/O then)."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        with self._lock:
            if kid not in self._keys and self._clock() - self._loaded_at >= self._interval:
                self._reload()
        return self._keys.get(kid)

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def _reload(self) -> None:
        self._loaded_at = self._clock()
        try:
            fresh = es256_keys(self._load())
        except (OSError, ValueError, grpc.RpcError) as exc:
            _log.warning("preflightsim.jwks_reload_failed", error=str(exc))
            return
        self._keys = fresh
        self.reloads += 1
        _log.info("preflightsim.jwks_reloaded", kids=sorted(fresh))
