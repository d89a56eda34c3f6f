"""Who may call which method, and with how large a request, read from the
contracts themselves.

Every RPC of our services carries a `(ppos.controlplane.auth.v1.access)`
option; the table below is built from the descriptor pool, so a method
without a rule is refused, and the rule a reviewer reads in the .proto is the
rule the edge enforces: the principal kinds allowed, the least role a named
operator needs (`min_role`, ADMIN when unset), the request fields that need
more when they are set (`field_roles`), and the largest request the method
accepts (`max_request_bytes`, DEFAULT_MAX_REQUEST_BYTES unless the option
names more).

A field role naming a field the request does not have, or one that cannot be
named, stops the server from starting (AccessRuleError): a rule that matched
nothing would let every role set the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

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


class AccessRuleError(ValueError):
    """An access option the server cannot enforce as written (raised at start-up)."""


@dataclass(frozen=True)
class FieldRule:
    """A request field an operator needs `min_role` to set (access.proto's
    FieldAccess). `presence`: the field is set when present (a message or an
    `optional` field); otherwise when it holds other than its default, which
    for every proto3 scalar is the one falsy value."""

    field: str
    min_role: OperatorRole
    presence: bool = False

    def is_set(self, request: Message) -> bool:
        if self.presence:
            return request.HasField(self.field)
        return bool(getattr(request, self.field))


@dataclass(frozen=True)
class MethodRule:
    """Principal kinds allowed on one method, the least role an operator needs
    (and the fields that need more, checked once the request is decoded), and
    the largest request it takes (in bytes, checked before the request is
    decoded); `service` is the callee's audience."""

    method: str
    service: str
    allow: frozenset[PrincipalKind]
    mutating: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    min_role: OperatorRole = OperatorRole.ADMIN
    field_roles: tuple[FieldRule, ...] = ()

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
                field_rules(method, access.field_roles),
            )
        )
    return rules


def field_rules(
    method: MethodDescriptor, entries: Iterable[access_pb2.FieldAccess]
) -> tuple[FieldRule, ...]:
    """The option's `field_roles`, each checked against the method's request
    message: a field it does not have, a repeated or map field, one named twice,
    or any field of a request stream is an AccessRuleError."""
    rules: list[FieldRule] = []
    fields = method.input_type.fields_by_name
    for entry in entries:
        where = f"{method.full_name}: field_roles names {entry.field!r}"
        if method.client_streaming:
            raise AccessRuleError(f"{where}, but the method takes a stream of requests")
        field = fields.get(entry.field)
        if field is None:
            raise AccessRuleError(f"{where}, which {method.input_type.full_name} does not have")
        if field.is_repeated:  # maps too: what would "set" mean for one entry of many
            raise AccessRuleError(f"{where}, a repeated field; only singular fields can be")
        if any(rule.field == entry.field for rule in rules):
            raise AccessRuleError(f"{where} twice")
        role = _ROLE_BY_PROTO.get(entry.min_role, OperatorRole.ADMIN)
        rules.append(FieldRule(entry.field, role, field.has_presence))
    return tuple(rules)
