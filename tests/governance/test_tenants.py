"""Tenants: provisioning (idempotent), lifecycle, versions, listing, bad input."""

from __future__ import annotations

import json
from typing import Any

import grpc

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from tests.governance.conftest import Governed
from tests.governance.support import (
    count,
    details,
    eventually,
    refused,
    settled,
    snapshot,
)


def provision_request(tenant_id: str = "acme", request_id: str = "req-acme-1") -> Any:
    return pb.ProvisionTenantRequest(
        request_id=request_id,
        tenant_id=tenant_id,
        spec=res.TenantSpec(display_name="Acme Print", default_region="eu-west-1"),
        queues=[
            pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=8, priority=5)),
            pb.QueueTemplate(
                queue_id="rush", spec=res.QueueSpec(region="us-east-1", capacity=2, priority=9)
            ),
        ],
        labels={"tier": "gold"},
    )


async def test_provision_creates_tenant_queues_and_sends_queue_policies(gov: Governed) -> None:
    reply = await gov.operator.ProvisionTenant(provision_request())
    assert not reply.replayed
    assert reply.tenant.tenant_id == "acme"
    assert reply.tenant.status.phase == res.TENANT_PHASE_ACTIVE
    assert reply.tenant.meta.labels["tier"] == "gold"
    assert [q.queue_id for q in reply.queues] == ["main", "rush"]
    main, rush = reply.queues
    assert main.spec.region == "eu-west-1"  # the tenant's default region
    assert rush.spec.region == "us-east-1"
    assert main.spec.state == res.QUEUE_STATE_ACTIVE
    # Each queue's policy reaches its own region's gateway, exactly once.
    eu, us = gov.gateway("eu-west-1"), gov.gateway("us-east-1")
    await eventually(
        lambda: (len(eu.applied()), len(us.applied())),
        lambda n: n == (1, 1),
    )
    assert eu.state.queues[("acme", "main")] == {
        "capacity": 8,
        "state": "QUEUE_STATE_ACTIVE",
        "generation": 1,
    }
    assert us.state.queues[("acme", "rush")]["capacity"] == 2
    # Status follows the gateway's acknowledgement.
    queue = await eventually(
        lambda: gov.operator.GetQueue(pb.GetQueueRequest(tenant_id="acme", queue_id="main")),
        lambda r: r.queue.status.applied_generation == 1,
    )
    assert queue.queue.status.applied_capacity == 8
    assert queue.queue.status.applied_state == res.QUEUE_STATE_ACTIVE
    # Audited: the tenant and both queues, with the request id of the call.
    audit = await gov.operator.ListAuditEntries(pb.ListAuditEntriesRequest(resource_kind="tenant"))
    assert [(e.resource_id, e.before_json) for e in audit.entries] == [("acme", "")]
    entry = audit.entries[0]
    assert entry.method == "/ppos.controlplane.governance.v1.GovernanceService/ProvisionTenant"
    assert (entry.actor.kind, entry.actor.name) == ("operator", "break-glass")
    assert json.loads(entry.after_json)["display_name"] == "Acme Print"
    assert entry.request_id


async def test_provisioning_is_idempotent_on_request_id(gov: Governed) -> None:
    first = await gov.operator.ProvisionTenant(provision_request())
    await eventually(lambda: len(gov.gateway().applied()), lambda n: n == 1)
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    again = await gov.operator.ProvisionTenant(provision_request())
    assert again.replayed
    assert again.tenant == first.tenant
    assert list(again.queues) == list(first.queues)
    assert snapshot(gov.runtime) == before, "a replay changes nothing"
    # Same request id, different body: refused, nothing changed.
    other = provision_request()
    other.spec.display_name = "Acme Printing Ltd"
    error = await refused(gov.operator.ProvisionTenant(other))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(error)["reason"] == "REQUEST_ID_REUSED"
    assert snapshot(gov.runtime) == before
    # Same tenant id under a new request id: ALREADY_EXISTS for the tenant.
    error = await refused(gov.operator.ProvisionTenant(provision_request(request_id="req-2")))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert snapshot(gov.runtime) == before


async def test_bad_provisioning_names_every_field_and_changes_nothing(gov: Governed) -> None:
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    request = pb.ProvisionTenantRequest(
        request_id="",
        tenant_id="Acme!",
        spec=res.TenantSpec(display_name="x" * 300, default_region="EU"),
        queues=[
            pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=0)),
            pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=10_000_000)),
            pb.QueueTemplate(queue_id="neg", spec=res.QueueSpec(capacity=-5)),
        ],
        routes=[res.PartnerRouteSpec(partner_id="p", queue_id="nope")],
    )
    error = await refused(gov.operator.ProvisionTenant(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = details(error)["fields"]
    for field in (
        "request_id",
        "tenant_id",
        "spec.display_name",
        "spec.default_region",
        "queues[0].spec.capacity",
        "queues[1].queue_id",
        "queues[1].spec.capacity",
        "queues[2].spec.capacity",
        "routes[0].partner_id",
        "routes[0].queue_id",
    ):
        assert field in fields, (field, fields)
    assert "between 1 and 100000" in fields["queues[1].spec.capacity"]
    assert snapshot(gov.runtime) == before


async def test_unknown_references_and_regions_are_refused(gov: Governed) -> None:
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    request = provision_request()
    request.spec.default_partner_id = "no-such-partner"
    request.queues[1].spec.region = "ap-south-9"
    error = await refused(gov.operator.ProvisionTenant(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = {(t, s) for t, s, _ in details(error)["preconditions"]}
    assert ("UNKNOWN_PARTNER", "partner/no-such-partner") in found
    assert ("REGION_NOT_CONFIGURED", "region/ap-south-9") in found
    assert snapshot(gov.runtime) == before
    error = await refused(gov.operator.GetTenant(pb.GetTenantRequest(tenant_id="ghost")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_update_checks_the_resource_version(gov: Governed) -> None:
    tenant = (await gov.operator.ProvisionTenant(provision_request())).tenant
    version = tenant.meta.resource_version
    spec = res.TenantSpec(display_name="Acme 2", default_region="eu-west-1")
    error = await refused(
        gov.operator.UpdateTenant(pb.UpdateTenantRequest(tenant_id="acme", spec=spec))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected_resource_version" in details(error)["fields"]
    updated = await gov.operator.UpdateTenant(
        pb.UpdateTenantRequest(tenant_id="acme", spec=spec, expected_resource_version=version)
    )
    assert updated.tenant.spec.display_name == "Acme 2"
    assert updated.tenant.meta.resource_version != version
    assert updated.tenant.meta.generation == tenant.meta.generation + 1
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    stale = pb.UpdateTenantRequest(
        tenant_id="acme",
        spec=res.TenantSpec(display_name="Lost update"),
        expected_resource_version=version,
    )
    error = await refused(gov.operator.UpdateTenant(stale))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["reason"] == "STALE_RESOURCE_VERSION"
    assert details(error)["metadata"]["current_resource_version"] == (
        updated.tenant.meta.resource_version
    )
    assert snapshot(gov.runtime) == before


async def test_suspend_holds_queues_resume_releases_retire_drains(gov: Governed) -> None:
    await gov.operator.ProvisionTenant(provision_request())
    eu = gov.gateway("eu-west-1")
    await eventually(lambda: len(eu.applied()), lambda n: n == 1)
    error = await refused(gov.operator.SuspendTenant(pb.SuspendTenantRequest(tenant_id="acme")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in details(error)["fields"]
    suspended = await gov.operator.SuspendTenant(
        pb.SuspendTenantRequest(tenant_id="acme", reason="invoice overdue")
    )
    assert suspended.tenant.status.phase == res.TENANT_PHASE_SUSPENDED
    assert suspended.tenant.status.reason == "invoice overdue"
    await eventually(
        lambda: eu.state.queues[("acme", "main")]["state"],
        lambda s: s == "QUEUE_STATE_PAUSED",
    )
    # Suspending again is a no-op: nothing new is sent.
    sent = count(gov.runtime, "outbox_commands")
    again = await gov.operator.SuspendTenant(
        pb.SuspendTenantRequest(tenant_id="acme", reason="still overdue")
    )
    assert again.tenant.meta.resource_version == suspended.tenant.meta.resource_version
    assert count(gov.runtime, "outbox_commands") == sent
    resumed = await gov.operator.ResumeTenant(pb.ResumeTenantRequest(tenant_id="acme"))
    assert resumed.tenant.status.phase == res.TENANT_PHASE_ACTIVE
    await eventually(
        lambda: eu.state.queues[("acme", "main")]["state"],
        lambda s: s == "QUEUE_STATE_ACTIVE",
    )
    retired = await gov.operator.RetireTenant(
        pb.RetireTenantRequest(tenant_id="acme", reason="contract ended")
    )
    assert retired.tenant.status.phase == res.TENANT_PHASE_RETIRED
    await eventually(
        lambda: eu.state.queues[("acme", "main")]["state"],
        lambda s: s == "QUEUE_STATE_DRAINING",
    )
    # A retired tenant changes no more.
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    error = await refused(gov.operator.ResumeTenant(pb.ResumeTenantRequest(tenant_id="acme")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["reason"] == "TENANT_RETIRED"
    error = await refused(
        gov.operator.PauseQueue(pb.PauseQueueRequest(tenant_id="acme", queue_id="main", reason="x"))
    )
    assert details(error)["reason"] == "TENANT_RETIRED"
    assert snapshot(gov.runtime) == before


async def test_list_filters_and_pages(gov: Governed) -> None:
    for index in range(5):
        request = provision_request(tenant_id=f"tenant-{index}", request_id=f"r-{index}")
        request.labels["tier"] = "gold" if index % 2 == 0 else "silver"
        await gov.operator.ProvisionTenant(request)
    await gov.operator.SuspendTenant(
        pb.SuspendTenantRequest(tenant_id="tenant-4", reason="testing filters")
    )
    seen, token = [], ""
    while True:
        page = await gov.operator.ListTenants(
            pb.ListTenantsRequest(page_size=2, page_token=token, label_selector="tier=gold")
        )
        seen += [t.tenant_id for t in page.tenants]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["tenant-0", "tenant-2", "tenant-4"]
    active = await gov.operator.ListTenants(
        pb.ListTenantsRequest(phases=[res.TENANT_PHASE_ACTIVE], label_selector="tier!=silver")
    )
    assert [t.tenant_id for t in active.tenants] == ["tenant-0", "tenant-2"]
    # A token is bound to its filters.
    page = await gov.operator.ListTenants(pb.ListTenantsRequest(page_size=1))
    error = await refused(
        gov.operator.ListTenants(
            pb.ListTenantsRequest(page_size=1, page_token=page.next_page_token, phases=[2])
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in details(error)["fields"]
    queues = await gov.operator.ListQueues(pb.ListQueuesRequest(region="us-east-1", page_size=3))
    assert [(q.tenant_id, q.queue_id) for q in queues.queues] == [
        ("tenant-0", "rush"),
        ("tenant-1", "rush"),
        ("tenant-2", "rush"),
    ]
    assert queues.next_page_token


async def test_provisioning_with_routes_sends_them_and_refuses_cycles(gov: Governed) -> None:
    for partner in ("shop-a", "shop-b"):
        await gov.operator.CreatePartner(
            pb.CreatePartnerRequest(partner_id=partner, region="eu-west-1")
        )
    request = provision_request()
    request.routes.append(
        res.PartnerRouteSpec(queue_id="rush", partner_id="shop-a", fallback_partner_id="shop-b")
    )
    request.routes.append(res.PartnerRouteSpec(partner_id="shop-b", priority=2))
    reply = await gov.operator.ProvisionTenant(request)
    rush, wide = reply.routes
    assert (rush.spec.tenant_id, rush.spec.queue_id, rush.spec.partner_id) == (
        "acme",
        "rush",
        "shop-a",
    )
    us, eu = gov.gateway("us-east-1"), gov.gateway("eu-west-1")
    await settled(gov.runtime)
    # The queue's route goes to the queue's region; the tenant-wide one to every region
    # the tenant works in.
    assert set(us.state.routes) == {rush.route_id, wide.route_id}
    assert set(eu.state.routes) == {wide.route_id}
    before = snapshot(gov.runtime)
    cyclic = provision_request(tenant_id="beta", request_id="req-beta")
    cyclic.routes.append(res.PartnerRouteSpec(partner_id="shop-a", fallback_partner_id="shop-b"))
    cyclic.routes.append(res.PartnerRouteSpec(partner_id="shop-b", fallback_partner_id="shop-a"))
    error = await refused(gov.operator.ProvisionTenant(cyclic))
    assert details(error)["reason"] == "ROUTING_CYCLE"
    assert snapshot(gov.runtime) == before
    homeless = pb.ProvisionTenantRequest(
        request_id="req-gamma",
        tenant_id="gamma",
        routes=[res.PartnerRouteSpec(partner_id="shop-a")],
    )
    error = await refused(gov.operator.ProvisionTenant(homeless))
    assert details(error)["reason"] == "ROUTE_HAS_NO_REGION"
    assert snapshot(gov.runtime) == before
