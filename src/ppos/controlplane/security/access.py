"""Who may call which method, and with how large a request, read from the
contracts themselves.

Every RPC of our services carries a `(ppos.controlplane.auth.v1.access)`
option; the table below is built from the descriptor pool, so a method
without a rule is refused, and the rule a reviewer reads in the .proto is the
rule the edge enforces: the principal kinds allowed, the least role a named
operator needs (`min_role`, ADMIN when unset), and the largest request the
method accepts (`max_request_bytes`, DEFAULT_MAX_REQUEST_BYTES unless the
option names more).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor

from ppos.controlplane.auth.v1 import access_pb2
from ppos.controlplane.security.principal import OperatorRole, PrincipalKind

_KIND_BY_PROTO = {
    access_pb2.PRINCIPAL_KIND_ANONYMOUS: PrincipalKind.ANONYMOUS,
    access_pb2.PRINCIPAL_KIND_OPERATOR: PrincipalKind.OPERATOR,
    access_pb2.PRINCIPAL_KIND_NODE: PrincipalKind.NODE,
    access_pb2.PRINCIPAL_KIND_ENROLLING_NODE: PrincipalKind.ENROLLING_NODE,
    access_pb2.PRINCIPAL_KIND_PEER: PrincipalKind.PEER,
}

_ROLE_BY_PROTO = {
    access_pb2.OPERATOR_ROLE_VIEWER: OperatorRole.VIEWER,
    access_pb2.OPERATOR_ROLE_OPERATOR: OperatorRole.OPERATOR,
    access_pb2.OPERATOR_ROLE_ADMIN: OperatorRole.ADMIN,
}

# The largest request a method accepts unless its access option says more: a
# request of ours is a few ids, a spec and some labels, a few KiB at most.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024

# Standard services that stay open: health and reflection.
OPEN_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.health.v1.Health/List",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


@dataclass(frozen=True)
class MethodRule:
    """Principal kinds allowed on one method, the least role an operator needs,
    and the largest request it takes (in bytes, checked before the request is
    decoded); `service` is the callee's audience."""

    method: str
    service: str
    allow: frozenset[PrincipalKind]
    mutating: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    min_role: OperatorRole = OperatorRole.ADMIN

    @cached_property
    def open(self) -> bool:  # asked on every call: worked out once per rule
        return self.allow == frozenset({PrincipalKind.ANONYMOUS})


DENY = MethodRule("", "", frozenset())


class AccessTable:
    """Method rules by full method name (`/package.Service/Method`)."""

    def __init__(self, rules: Iterable[MethodRule] = ()) -> None:
        self._rules = {rule.method: rule for rule in rules}
        for method in OPEN_METHODS:
            service = method.split("/")[1]
            self._rules.setdefault(
                method, MethodRule(method, service, frozenset({PrincipalKind.ANONYMOUS}))
            )

    @classmethod
    def from_services(cls, service_names: Iterable[str]) -> AccessTable:
        pool = descriptor_pool.Default()
        rules = []
        for name in service_names:
            rules.extend(rules_of(pool.FindServiceByName(name)))
        return cls(rules)

    def add(self, rule: MethodRule) -> None:
        self._rules[rule.method] = rule

    def rule(self, method: str) -> MethodRule:
        return self._rules.get(method, DENY)

    def methods(self) -> list[str]:
        return sorted(self._rules)

    def largest_request_bytes(self) -> int:
        """The largest request any method takes: the most the transport need accept."""
        return max(
            (rule.max_request_bytes for rule in self._rules.values()),
            default=DEFAULT_MAX_REQUEST_BYTES,
        )


def rules_of(service: ServiceDescriptor) -> list[MethodRule]:
    rules = []
    for method in service.methods:
        options = method.GetOptions()
        access = options.Extensions[access_pb2.access]
        allow = frozenset(_KIND_BY_PROTO[k] for k in access.allow if k in _KIND_BY_PROTO)
        rules.append(
            MethodRule(
                f"/{service.full_name}/{method.name}",
                service.full_name,
                allow,
                access.mutating,
                access.max_request_bytes or DEFAULT_MAX_REQUEST_BYTES,
                _ROLE_BY_PROTO.get(access.min_role, OperatorRole.ADMIN),
            )
        )
    return rules
