"""JwksService: the public keys that verify what this control plane signs."""

from __future__ import annotations

import grpc

from ppos.controlplane.auth.v1 import jwks_service_pb2 as pb
from ppos.controlplane.auth.v1 import jwks_service_pb2_grpc as pb_grpc
from ppos.controlplane.security.keys import KeyRing

JWKS_MAX_AGE_SECONDS = 300


class JwksServicer(pb_grpc.JwksServiceServicer):
    def __init__(self, keyring: KeyRing) -> None:
        self._keyring = keyring

    async def GetJwks(
        self, request: pb.GetJwksRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(
            jwks_json=self._keyring.jwks_json(),
            active_kid=self._keyring.active.kid,
            max_age_seconds=JWKS_MAX_AGE_SECONDS,
        )


class JwksModule:
    name = "jwks"
    service_names: tuple[str, ...] = ("ppos.controlplane.auth.v1.JwksService",)

    def __init__(self, keyring: KeyRing) -> None:
        self._keyring = keyring

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_JwksServiceServicer_to_server(JwksServicer(self._keyring), server)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
