"""Field roles, read from the contract: a request field that needs a higher role
than its method when it is set. A rule that names a field the request does not
have, or one that cannot be named, stops the table from loading; the rule read
is the one the edge asks of each decoded request, of operators only.

The served path (a viewer's VerifyMirror with against_source refused before the
registries are read) is in tests/registry_sync/test_verify_source.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor

from ppos.controlplane.auth.v1 import access_pb2
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rs_pb
from ppos.controlplane.security.access import (
    AccessRuleError,
    AccessTable,
    FieldRule,
    MethodRule,
    rules_of,
)
from ppos.controlplane.security.authentication import EdgeAuthenticator, FieldRoleRequired
from ppos.controlplane.security.control_token import ControlToken
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.principal import OperatorRole, Principal, PrincipalKind
from ppos.controlplane.security.tokens import TokenVerifier

SYNC = "ppos.controlplane.registrysync.v1.RegistrySyncService"
VERIFY_MIRROR = f"/{SYNC}/VerifyMirror"
BOOL = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
OPERATOR = access_pb2.OPERATOR_ROLE_OPERATOR


def _service(
    *fields: tuple[str, int], entries: list[tuple[str, int]], streaming: bool = False
) -> ServiceDescriptor:
    """A one-method service in a pool of its own whose request has `fields`
    (name, label) and whose access option names `entries` (field, role)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, access_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="ppos/test/fieldroles/v1/test.proto",
        package="ppos.test.fieldroles.v1",
        syntax="proto3",
        dependency=["ppos/controlplane/auth/v1/access.proto"],
    )
    request = file.message_type.add(name="DoRequest")
    for number, (name, label) in enumerate(fields, start=1):
        request.field.add(name=name, number=number, label=label, type=BOOL)
    file.message_type.add(name="DoResponse")
    method = file.service.add(name="TestService").method.add(
        name="Do",
        input_type=".ppos.test.fieldroles.v1.DoRequest",
        output_type=".ppos.test.fieldroles.v1.DoResponse",
        client_streaming=streaming,
    )
    access = method.options.Extensions[access_pb2.access]
    access.allow.append(access_pb2.PRINCIPAL_KIND_OPERATOR)
    access.min_role = access_pb2.OPERATOR_ROLE_VIEWER
    for field, role in entries:
        access.field_roles.add(field=field, min_role=role)
    pool.Add(file)
    return pool.FindServiceByName("ppos.test.fieldroles.v1.TestService")


def test_verify_mirror_against_source_needs_the_operator_role() -> None:
    rule = AccessTable.from_services([SYNC]).rule(VERIFY_MIRROR)
    assert rule.min_role == OperatorRole.VIEWER
    assert rule.field_roles == (FieldRule("against_source", OperatorRole.OPERATOR),)
    table = AccessTable.from_services([SYNC])
    others = [table.rule(m) for m in table.methods() if m != VERIFY_MIRROR]
    assert all(other.field_roles == () for other in others)


def test_a_field_role_is_read_from_the_option() -> None:
    (rule,) = rules_of(_service(("costly", OPTIONAL), entries=[("costly", OPERATOR)]))
    assert rule.field_roles == (FieldRule("costly", OperatorRole.OPERATOR),)
    (rule,) = rules_of(_service(("costly", OPTIONAL), entries=[("costly", 0)]))
    assert rule.field_roles == (FieldRule("costly", OperatorRole.ADMIN),), "unset: admin"


@pytest.mark.parametrize(
    ("fields", "entries", "streaming", "complaint"),
    [
        ([("costly", OPTIONAL)], [("costy", OPERATOR)], False, "does not have"),
        ([("costly", OPTIONAL)], [("", OPERATOR)], False, "does not have"),
        ([("costly", REPEATED)], [("costly", OPERATOR)], False, "a repeated field"),
        ([("costly", OPTIONAL)], [("costly", OPERATOR)] * 2, False, "twice"),
        ([("costly", OPTIONAL)], [("costly", OPERATOR)], True, "stream of requests"),
    ],
    ids=["misspelt", "unnamed", "repeated", "twice", "request-stream"],
)
def test_a_field_role_the_edge_cannot_enforce_fails_to_load(
    fields: list[tuple[str, int]],
    entries: list[tuple[str, int]],
    streaming: bool,
    complaint: str,
) -> None:
    service = _service(*fields, entries=entries, streaming=streaming)
    with pytest.raises(AccessRuleError, match=complaint) as raised:
        rules_of(service)
    assert "ppos.test.fieldroles.v1.TestService.Do" in str(raised.value)


@pytest.mark.parametrize("role", list(OperatorRole))
def test_only_an_operator_below_the_fields_role_is_refused(
    role: OperatorRole, tmp_path: Path
) -> None:
    rule = AccessTable.from_services([SYNC]).rule(VERIFY_MIRROR)
    ring = KeyRing.from_directory(tmp_path / "keys")
    edge = EdgeAuthenticator(ControlToken("x" * 40), TokenVerifier(ring, issuer="test"))
    operator = Principal(PrincipalKind.OPERATOR, "op", role=role)
    edge.authorize_request(operator, rule, rs_pb.VerifyMirrorRequest(check_payloads=True))
    costly = rs_pb.VerifyMirrorRequest(regions=["eu-west-1"], against_source=True)
    if role >= OperatorRole.OPERATOR:
        edge.authorize_request(operator, rule, costly)
    else:
        with pytest.raises(FieldRoleRequired) as raised:
            edge.authorize_request(operator, rule, costly)
        refusal = raised.value
        assert refusal.reason == "ROLE_REQUIRED"
        assert refusal.metadata == {
            "required_role": "operator",
            "role": "viewer",
            "field": "against_source",
        }
        assert refusal.message == (
            "VerifyMirror with against_source needs the operator role; this credential has viewer"
        )
    # Peers (and nodes) carry no role: field roles, like min_role, are not theirs.
    edge.authorize_request(Principal(PrincipalKind.PEER, "governance"), rule, costly)


def test_a_message_or_optional_field_is_set_when_present() -> None:
    present = FieldRule("divergence", OperatorRole.ADMIN, presence=True)
    assert not present.is_set(rs_pb.MirrorVerification())
    assert present.is_set(rs_pb.MirrorVerification(divergence=rs_pb.MirrorDivergence()))
    valued = FieldRule("region", OperatorRole.ADMIN)
    assert not valued.is_set(rs_pb.MirrorVerification(region=""))
    assert valued.is_set(rs_pb.MirrorVerification(region="eu-west-1"))
    rule = MethodRule("/x/Y", "x", frozenset({PrincipalKind.OPERATOR}))
    assert rule.field_roles == ()
