"""Every RPC the fuzzer drives, read from the descriptor pool with its access rule."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2

from ppos.controlplane.auth.v1 import jwks_service_pb2
from ppos.controlplane.governance.v1 import governance_service_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2
from ppos.controlplane.security.access import OPEN_METHODS, rules_of
from ppos.controlplane.security.principal import PrincipalKind

SERVICES: tuple[ServiceDescriptor, ...] = (
    governance_service_pb2.DESCRIPTOR.services_by_name["GovernanceService"],
    node_registry_service_pb2.DESCRIPTOR.services_by_name["NodeRegistryService"],
    registry_sync_service_pb2.DESCRIPTOR.services_by_name["RegistrySyncService"],
    jwks_service_pb2.DESCRIPTOR.services_by_name["JwksService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)


@dataclass(frozen=True)
class Method:
    path: str  # /package.Service/Method
    name: str
    input: Descriptor
    output: Descriptor
    streaming: bool
    allow: frozenset[PrincipalKind]
    mutating: bool


def methods() -> list[Method]:
    found = []
    for service in SERVICES:
        rules = {rule.method: rule for rule in rules_of(service)}
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            if path in OPEN_METHODS:
                allow, mutating = frozenset({PrincipalKind.ANONYMOUS}), False
            else:
                allow, mutating = rules[path].allow, rules[path].mutating
            found.append(
                Method(
                    path,
                    method.name,
                    method.input_type,
                    method.output_type,
                    method.server_streaming,
                    allow,
                    mutating,
                )
            )
    return found
