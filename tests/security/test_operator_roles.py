"""Who may call what, from the contract: every RPC of the services called
by a viewer, an operator, an admin, a node and nobody, each answer checked
against the method's access option, and nothing changed by a refusal."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2, status_pb2

from ppos.controlplane.auth.v1 import access_pb2, identity_service_pb2  # noqa: F401 - registers
from ppos.controlplane.governance.v1 import governance_service_pb2  # noqa: F401 - registers
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2  # noqa: F401
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2  # noqa: F401
from ppos.controlplane.security.access import AccessTable, MethodRule
from ppos.controlplane.security.principal import OperatorRole, PrincipalKind
from tests.support.dbstate import row_counts
from tests.support.nodes import enroll_node
from tests.support.operators import add_operator
from tests.support.servers import RunningPlane

SERVICES = (
    "ppos.controlplane.governance.v1.GovernanceService",
    "ppos.controlplane.noderegistry.v1.NodeRegistryService",
    "ppos.controlplane.registrysync.v1.RegistrySyncService",
    "ppos.controlplane.auth.v1.IdentityService",
)
ROLES = {"viewer": OperatorRole.VIEWER, "operator": OperatorRole.OPERATOR}
ROLES["admin"] = OperatorRole.ADMIN
REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


@dataclass(frozen=True)
class Case:
    rule: MethodRule
    streaming: bool


def contract() -> list[Case]:
    pool = descriptor_pool.Default()
    table = AccessTable.from_services(SERVICES)
    cases = []
    for name in SERVICES:
        for method in pool.FindServiceByName(name).methods:
            rule = table.rule(f"/{name}/{method.name}")
            cases.append(Case(rule, method.server_streaming))
    return cases


def expected(rule: MethodRule, caller: str) -> grpc.StatusCode | None:
    """The refusal the edge owes `caller` on `rule`, or None when it is admitted."""
    if caller == "none":
        return grpc.StatusCode.UNAUTHENTICATED
    if caller == "node":
        return None if PrincipalKind.NODE in rule.allow else grpc.StatusCode.PERMISSION_DENIED
    if PrincipalKind.OPERATOR not in rule.allow:
        return grpc.StatusCode.PERMISSION_DENIED
    return None if ROLES[caller] >= rule.min_role else grpc.StatusCode.PERMISSION_DENIED


def reason_of(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(details, bytes), "no rich status details"
    for item in status_pb2.Status.FromString(details).details:
        info = error_details_pb2.ErrorInfo()
        if item.Unpack(info):
            return info.reason, dict(info.metadata)
    raise AssertionError("no ErrorInfo")


async def answer(
    channel: grpc.aio.Channel, case: Case, metadata: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, grpc.aio.AioRpcError | None]:
    """The status of the method called with an empty request (a stream's first
    message counts as OK; a stream admitted but silent ends at its deadline)."""
    try:
        if case.streaming:
            call = channel.unary_stream(case.rule.method)(b"", metadata=metadata, timeout=1.5)
            async for _ in call:
                call.cancel()
                break
        else:
            await channel.unary_unary(case.rule.method)(b"", metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc
    return grpc.StatusCode.OK, None


def test_every_operator_method_names_its_role_and_reads_are_for_viewers() -> None:
    pool = descriptor_pool.Default()
    for name in SERVICES:
        for method in pool.FindServiceByName(name).methods:
            access = method.GetOptions().Extensions[access_pb2.access]
            if access_pb2.PRINCIPAL_KIND_OPERATOR not in access.allow:
                continue
            assert access.min_role != access_pb2.OPERATOR_ROLE_UNSPECIFIED, method.full_name
            reads = access.min_role == access_pb2.OPERATOR_ROLE_VIEWER
            assert reads != access.mutating, f"{method.full_name}: viewers read, never change"


async def test_role_matrix_from_the_contract(plane: RunningPlane) -> None:
    callers: dict[str, tuple[tuple[str, str], ...]] = {"none": ()}
    for role in ROLES:
        callers[role] = (await add_operator(plane, f"{role}-1", role)).metadata
    callers["node"] = (await enroll_node(plane.channel, plane.operator)).metadata
    cases = contract()
    assert len(cases) > 50
    wrong: list[str] = []

    # Every refusal first: the database must be exactly as it was after them.
    before = await asyncio.to_thread(row_counts, plane.database_url)
    admitted: list[tuple[Case, str]] = []
    for case in cases:
        for caller, metadata in callers.items():
            refusal = expected(case.rule, caller)
            if refusal is None:
                admitted.append((case, caller))
                continue
            code, error = await answer(plane.channel, case, metadata)
            if code != refusal:
                wrong.append(f"{case.rule.method} as {caller}: {code.name}, not {refusal.name}")
            elif caller in ROLES and PrincipalKind.OPERATOR in case.rule.allow:
                assert error is not None
                reason, info = reason_of(error)
                needed = case.rule.min_role.label
                if reason != "ROLE_REQUIRED" or info.get("required_role") != needed:
                    wrong.append(f"{case.rule.method} as {caller}: {reason} {info}")
    assert await asyncio.to_thread(row_counts, plane.database_url) == before

    # Then what is admitted reaches validation or the handler (renewal last: it
    # revokes the node credential the other node calls use).
    admitted.sort(key=lambda item: item[0].rule.method.endswith("/RenewNodeCredential"))
    for case, caller in admitted:
        code, _ = await answer(plane.channel, case, callers[caller])
        if code in REFUSED:
            wrong.append(f"{case.rule.method} as {caller}: refused with {code.name}")
    assert wrong == [], "\n".join(wrong)
    assert len(admitted) > 100


async def test_the_control_token_is_an_admin(plane: RunningPlane) -> None:
    """Break-glass: every method operators may call admits it (its audit name is
    checked below)."""
    for case in contract():
        if PrincipalKind.OPERATOR in case.rule.allow and not case.streaming:
            code, _ = await answer(plane.channel, case, plane.operator)
            assert code not in REFUSED, case.rule.method


@pytest.mark.parametrize("header", ["mallory", "break-glass", "admin-1"])
async def test_the_audit_actor_is_the_credentials_name_whatever_x_operator_says(
    plane: RunningPlane, header: str
) -> None:
    from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
    from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as pb_grpc

    alice = await add_operator(plane, "alice", "admin")
    stub = pb_grpc.GovernanceServiceStub(plane.channel)
    await stub.CreatePartner(
        pb.CreatePartnerRequest(partner_id="shop-a", display_name="A", region="eu-west-1"),
        metadata=(*alice.metadata, ("x-operator", header)),
    )
    await stub.CreatePartner(
        pb.CreatePartnerRequest(partner_id="shop-b", display_name="B", region="eu-west-1"),
        metadata=(*plane.operator, ("x-operator", header)),
    )
    entries = (
        await stub.ListAuditEntries(
            pb.ListAuditEntriesRequest(resource_kind="partner"), metadata=alice.metadata
        )
    ).entries
    actors = {entry.resource_id: (entry.actor.kind, entry.actor.name) for entry in entries}
    assert actors == {"shop-a": ("operator", "alice"), "shop-b": ("operator", "break-glass")}
