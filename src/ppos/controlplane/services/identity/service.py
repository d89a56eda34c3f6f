"""IdentityService: the caller's principal as the edge resolved it.

The edge has already proven the credential and set the principal before this
runs; the reply only describes it (never the credential), so there is nothing
to store and nothing to validate.
"""

from __future__ import annotations

import grpc

from ppos.controlplane.auth.v1 import access_pb2
from ppos.controlplane.auth.v1 import identity_service_pb2 as pb
from ppos.controlplane.auth.v1 import identity_service_pb2_grpc as pb_grpc
from ppos.controlplane.core.context import PrincipalKind, current_principal

_KINDS = {
    PrincipalKind.OPERATOR: access_pb2.PRINCIPAL_KIND_OPERATOR,
    PrincipalKind.NODE: access_pb2.PRINCIPAL_KIND_NODE,
}


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    async def WhoAmI(
        self, request: pb.WhoAmIRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.WhoAmIResponse:
        principal = current_principal.get()
        return pb.WhoAmIResponse(
            kind=_KINDS.get(principal.kind, access_pb2.PRINCIPAL_KIND_UNSPECIFIED),
            name=principal.name,
            actor=principal.display,
            # OperatorRole's values are the contract's OPERATOR_ROLE_* numbers.
            role=access_pb2.OperatorRole.ValueType(principal.role or 0),
        )


class IdentityModule:
    name = "identity"
    service_names: tuple[str, ...] = ("ppos.controlplane.auth.v1.IdentityService",)

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(), server)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
