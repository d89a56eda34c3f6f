"""The governance servicer delegates every RPC to exactly one handler object, and
governance is handed only what it uses."""

from __future__ import annotations

import dataclasses

import pytest

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.services.governance.audit_api import AuditHandlers
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.service import GovernanceServicer, handler_objects
from tests.governance.conftest import Governed

RPCS = set(pb.DESCRIPTOR.services_by_name["GovernanceService"].methods_by_name)


def _nothing() -> None:
    return None


async def test_every_rpc_is_served_by_the_handler_object_that_lists_it(gov: Governed) -> None:
    servicer = gov.module.servicer
    owners: dict[str, str] = {}
    for name in sorted(RPCS):
        method = getattr(servicer, name)
        owner = method.__self__
        assert name in owner.rpcs, name
        owners[name] = type(owner).__name__
    assert owners["ProvisionTenant"] == "TenantHandlers"
    assert owners["ResizeQueue"] == "QueueHandlers"
    assert owners["WatchAuditEntries"] == "AuditHandlers"
    listed = [
        name
        for handler in handler_objects(gov.module._deps, _nothing, _nothing)
        for name in handler.rpcs
    ]
    assert sorted(listed) == sorted(RPCS)  # each RPC listed once


async def test_an_rpc_served_twice_or_by_no_one_is_refused(gov: Governed) -> None:
    deps = gov.module._deps
    handlers = handler_objects(deps, _nothing, _nothing)
    without_audit = [h for h in handlers if not isinstance(h, AuditHandlers)]
    with pytest.raises(ValueError, match="no handler serves ListAuditEntries, WatchAuditEntries"):
        GovernanceServicer(without_audit)
    with pytest.raises(ValueError, match="AuditHandlers cannot serve ListAuditEntries"):
        GovernanceServicer([*handlers, AuditHandlers(deps)])


async def test_governance_is_handed_only_what_it_uses(gov: Governed) -> None:
    deps = gov.module._deps
    assert isinstance(deps, GovernanceDeps)
    assert [f.name for f in dataclasses.fields(deps)] == [
        "settings",
        "db",
        "page_tokens",
        "peers",
        "peer_call_timeout",
        "minter",
        "shutdown",
    ]
    runtime = gov.runtime
    assert deps.settings is runtime.settings.governance
    assert deps.db is runtime.db
    assert deps.shutdown is runtime.shutdown
    assert all(value is not runtime.keyring for value in vars(deps).values())
    assert all(value is not runtime.verifier for value in vars(deps).values())
    assert all(value is not runtime.secrets for value in vars(deps).values())
