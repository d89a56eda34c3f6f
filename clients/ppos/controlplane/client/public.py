"""The services every process serves: the public key set and gRPC health (no
token needed), and who the edge takes the caller to be."""

from __future__ import annotations

import json
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from ppos.controlplane.auth.v1 import access_pb2
from ppos.controlplane.auth.v1 import identity_service_pb2 as identity_pb
from ppos.controlplane.auth.v1 import identity_service_pb2_grpc as identity_grpc
from ppos.controlplane.auth.v1 import jwks_service_pb2 as pb
from ppos.controlplane.auth.v1 import jwks_service_pb2_grpc as pb_grpc
from ppos.controlplane.client.connection import Connection, Stream

SERVICE = "ppos.controlplane.auth.v1.JwksService"


class JwksClient:
    """The public keys that verify every PREFLIGHT_JWT and node credential."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._stub = pb_grpc.JwksServiceStub(connection.channel)

    def get(self) -> pb.GetJwksResponse:
        return self._conn.unary(
            self._stub.GetJwks, pb.GetJwksRequest(), name="GetJwks", authenticated=False
        )

    def keys(self) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = json.loads(self.get().jwks_json).get("keys", [])
        return keys


class IdentityClient:
    """Who the edge takes this client's credential to be (`pposctl whoami`)."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._stub = identity_grpc.IdentityServiceStub(connection.channel)

    def who_am_i(self) -> identity_pb.WhoAmIResponse:
        return self._conn.unary(self._stub.WhoAmI, identity_pb.WhoAmIRequest(), name="WhoAmI")

    def role(self) -> str:
        """`viewer`, `operator` or `admin` ("" for a credential that is not an operator's)."""
        return self.role_of(self.who_am_i())

    @staticmethod
    def role_of(reply: identity_pb.WhoAmIResponse) -> str:
        if reply.role == access_pb2.OPERATOR_ROLE_UNSPECIFIED:
            return ""
        return access_pb2.OperatorRole.Name(reply.role).removeprefix("OPERATOR_ROLE_").lower()


class HealthClient:
    """Standard gRPC health, per service (`""` is the whole server)."""

    SERVING = health_pb2.HealthCheckResponse.SERVING
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        channel = connection.channel
        self._check: grpc.UnaryUnaryMultiCallable[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ] = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        self._watch: grpc.UnaryStreamMultiCallable[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ] = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    def check(self, service: str = "", *, timeout: float | None = None) -> str:
        """`SERVING`, `NOT_SERVING`, ... (NotFoundError for a service not hosted)."""
        reply = self._conn.unary(
            self._check,
            health_pb2.HealthCheckRequest(service=service),
            name="Check",
            authenticated=False,
            timeout=timeout,
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def watch(self, service: str = "") -> Stream[health_pb2.HealthCheckResponse]:
        return self._conn.stream(
            self._watch,
            health_pb2.HealthCheckRequest(service=service),
            name="Watch",
            authenticated=False,
        )
