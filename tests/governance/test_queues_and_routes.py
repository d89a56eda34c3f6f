"""Queues (capacity, admission state) and partner routes (references, cycles, versions)."""

from __future__ import annotations

import grpc

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from tests.governance.conftest import Governed
from tests.governance.support import count, details, eventually, refused, settled, snapshot


async def _tenant(gov: Governed, tenant_id: str = "acme") -> None:
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id=f"prov-{tenant_id}",
            tenant_id=tenant_id,
            spec=res.TenantSpec(display_name=tenant_id, default_region="eu-west-1"),
            queues=[pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=10))],
        )
    )


async def _partners(gov: Governed, *ids: str) -> None:
    for partner_id in ids:
        await gov.operator.CreatePartner(
            pb.CreatePartnerRequest(
                partner_id=partner_id,
                display_name=partner_id.title(),
                region="eu-west-1",
                accepts_review=partner_id.startswith("review"),
            )
        )


async def test_queue_capacity_and_state_reach_the_gateway_in_order(gov: Governed) -> None:
    await _tenant(gov)
    queue = (
        await gov.operator.CreateQueue(
            pb.CreateQueueRequest(
                tenant_id="acme",
                queue_id="proofs",
                spec=res.QueueSpec(region="us-east-1", capacity=4, priority=3),
                request_id="cq-1",
            )
        )
    ).queue
    assert queue.spec.region == "us-east-1"
    # The same request id and body returns the same queue; nothing new is made.
    again = await gov.operator.CreateQueue(
        pb.CreateQueueRequest(
            tenant_id="acme",
            queue_id="proofs",
            spec=res.QueueSpec(region="us-east-1", capacity=4, priority=3),
            request_id="cq-1",
        )
    )
    assert again.queue == queue
    resized = await gov.operator.ResizeQueue(
        pb.ResizeQueueRequest(
            tenant_id="acme",
            queue_id="proofs",
            capacity=16,
            reason="peak season",
            expected_resource_version=queue.meta.resource_version,
        )
    )
    assert resized.queue.spec.capacity == 16
    paused = await gov.operator.PauseQueue(
        pb.PauseQueueRequest(tenant_id="acme", queue_id="proofs", reason="engine upgrade")
    )
    drained = await gov.operator.DrainQueue(
        pb.DrainQueueRequest(tenant_id="acme", queue_id="proofs", reason="moving region")
    )
    assert paused.queue.spec.state == res.QUEUE_STATE_PAUSED
    assert drained.queue.spec.state == res.QUEUE_STATE_DRAINING
    assert drained.queue.meta.generation == 4
    us = gov.gateway("us-east-1")
    await settled(gov.runtime)
    # Whatever order deliveries took, the gateway holds the newest generation.
    assert us.state.queues[("acme", "proofs")] == {
        "capacity": 16,
        "state": "QUEUE_STATE_DRAINING",
        "generation": 4,
    }
    applied = await gov.operator.GetQueue(pb.GetQueueRequest(tenant_id="acme", queue_id="proofs"))
    assert applied.queue.status.applied_generation == 4
    assert applied.queue.status.applied_state == res.QUEUE_STATE_DRAINING
    assert applied.queue.status.conditions[0].status == 1  # Applied: TRUE
    resumed = await gov.operator.ResumeQueue(
        pb.ResumeQueueRequest(
            tenant_id="acme",
            queue_id="proofs",
            expected_resource_version=drained.queue.meta.resource_version,
        )
    )
    assert resumed.queue.spec.state == res.QUEUE_STATE_ACTIVE
    await eventually(
        lambda: us.state.queues[("acme", "proofs")]["state"], lambda s: s == "QUEUE_STATE_ACTIVE"
    )
    audit = await gov.operator.ListAuditEntries(
        pb.ListAuditEntriesRequest(resource_kind="queue", resource_id="acme/proofs")
    )
    assert [e.method.rsplit("/", 1)[-1] for e in audit.entries] == [
        "CreateQueue",
        "ResizeQueue",
        "PauseQueue",
        "DrainQueue",
        "ResumeQueue",
    ]


async def test_bad_queue_changes_are_refused_and_change_nothing(gov: Governed) -> None:
    await _tenant(gov)
    await settled(gov.runtime)
    queue = (
        await gov.operator.GetQueue(pb.GetQueueRequest(tenant_id="acme", queue_id="main"))
    ).queue
    before = snapshot(gov.runtime)
    version = queue.meta.resource_version
    cases = [
        (
            pb.ResizeQueueRequest(
                tenant_id="acme",
                queue_id="main",
                capacity=-3,
                reason="x",
                expected_resource_version=version,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "capacity",
        ),
        (
            pb.ResizeQueueRequest(
                tenant_id="acme",
                queue_id="main",
                capacity=2_000_000_000,
                reason="x",
                expected_resource_version=version,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "capacity",
        ),
        (
            pb.ResizeQueueRequest(
                tenant_id="acme", queue_id="main", capacity=5, expected_resource_version=version
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reason",
        ),
        (
            pb.ResizeQueueRequest(
                tenant_id="acme",
                queue_id="main",
                capacity=5,
                reason="x",
                expected_resource_version="999",
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "STALE_RESOURCE_VERSION",
        ),
        (
            pb.ResizeQueueRequest(
                tenant_id="ghost",
                queue_id="main",
                capacity=5,
                reason="x",
                expected_resource_version="1",
            ),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
        ),
    ]
    for request, code, where in cases:
        error = await refused(gov.operator.ResizeQueue(request))
        assert error.code() == code, (request, error.details())
        found = details(error)
        assert where in found["fields"] or found["reason"] == where, found
    error = await refused(
        gov.operator.CreateQueue(
            pb.CreateQueueRequest(
                tenant_id="acme",
                queue_id="far",
                spec=res.QueueSpec(region="ap-south-9", capacity=1),
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["reason"] == "REGION_NOT_CONFIGURED"
    error = await refused(
        gov.operator.CreateQueue(
            pb.CreateQueueRequest(
                tenant_id="nobody", queue_id="queue1", spec=res.QueueSpec(capacity=1)
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await refused(
        gov.operator.CreateQueue(
            pb.CreateQueueRequest(tenant_id="acme", queue_id="main", spec=res.QueueSpec(capacity=1))
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert snapshot(gov.runtime) == before


async def test_routes_reach_the_gateways_and_refuse_unknown_partners(gov: Governed) -> None:
    await _tenant(gov)
    await _partners(gov, "printer-a", "printer-b", "review-hub")
    before_bad = count(gov.runtime, "partner_routes")
    error = await refused(
        gov.operator.CreatePartnerRoute(
            pb.CreatePartnerRouteRequest(
                route_id="to-ghost",
                spec=res.PartnerRouteSpec(
                    tenant_id="acme", partner_id="ghost-shop", fallback_partner_id="nobody"
                ),
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    problems = {(t, s) for t, s, _ in details(error)["preconditions"]}
    assert problems == {
        ("UNKNOWN_PARTNER", "partner/ghost-shop"),
        ("UNKNOWN_PARTNER", "partner/nobody"),
    }
    assert count(gov.runtime, "partner_routes") == before_bad
    route = (
        await gov.operator.CreatePartnerRoute(
            pb.CreatePartnerRouteRequest(
                route_id="acme-main",
                spec=res.PartnerRouteSpec(
                    tenant_id="acme",
                    queue_id="main",
                    partner_id="printer-a",
                    priority=1,
                    fallback_partner_id="printer-b",
                    condition=res.RouteCondition(governance_states=[2]),
                ),
            )
        )
    ).route
    eu = gov.gateway("eu-west-1")
    await eventually(lambda: eu.state.routes.get("acme-main", {}).get("partner_id"), bool)
    assert eu.state.routes["acme-main"]["partner_id"] == "printer-a"
    updated = await gov.operator.UpdatePartnerRoute(
        pb.UpdatePartnerRouteRequest(
            route_id="acme-main",
            spec=res.PartnerRouteSpec(tenant_id="acme", queue_id="main", partner_id="review-hub"),
            expected_resource_version=route.meta.resource_version,
        )
    )
    assert updated.route.meta.generation == 2
    await eventually(
        lambda: eu.state.routes["acme-main"]["partner_id"], lambda p: p == "review-hub"
    )
    error = await refused(
        gov.operator.DeletePartnerRoute(
            pb.DeletePartnerRouteRequest(
                route_id="acme-main",
                reason="done",
                expected_resource_version=route.meta.resource_version,
            )
        )
    )
    assert details(error)["reason"] == "STALE_RESOURCE_VERSION"
    deleted = await gov.operator.DeletePartnerRoute(
        pb.DeletePartnerRouteRequest(
            route_id="acme-main",
            reason="contract with review hub ended",
            expected_resource_version=updated.route.meta.resource_version,
        )
    )
    assert deleted.route.route_id == "acme-main"
    await eventually(lambda: eu.state.routes["acme-main"]["deleted"], bool)
    error = await refused(
        gov.operator.GetPartnerRoute(pb.GetPartnerRouteRequest(route_id="acme-main"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_fallback_cycles_are_refused_with_the_cycle_spelled_out(gov: Governed) -> None:
    await _tenant(gov)
    await _partners(gov, "shop-a", "shop-b", "shop-c")

    def spec(partner: str, fallback: str) -> res.PartnerRouteSpec:
        return res.PartnerRouteSpec(
            tenant_id="acme", partner_id=partner, fallback_partner_id=fallback
        )

    await gov.operator.CreatePartnerRoute(
        pb.CreatePartnerRouteRequest(route_id="a-to-b", spec=spec("shop-a", "shop-b"))
    )
    await gov.operator.CreatePartnerRoute(
        pb.CreatePartnerRouteRequest(route_id="b-to-c", spec=spec("shop-b", "shop-c"))
    )
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    error = await refused(
        gov.operator.CreatePartnerRoute(
            pb.CreatePartnerRouteRequest(route_id="c-to-a", spec=spec("shop-c", "shop-a"))
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = details(error)
    assert found["reason"] == "ROUTING_CYCLE"
    assert found["metadata"]["cycle"] == "shop-a -> shop-b -> shop-c -> shop-a"
    error = await refused(
        gov.operator.CreatePartnerRoute(
            pb.CreatePartnerRouteRequest(route_id="self", spec=spec("shop-a", "shop-a"))
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.fallback_partner_id" in details(error)["fields"]
    # An update that would close the cycle is refused too.
    bc = (await gov.operator.GetPartnerRoute(pb.GetPartnerRouteRequest(route_id="b-to-c"))).route
    error = await refused(
        gov.operator.UpdatePartnerRoute(
            pb.UpdatePartnerRouteRequest(
                route_id="b-to-c",
                spec=spec("shop-b", "shop-a"),
                expected_resource_version=bc.meta.resource_version,
            )
        )
    )
    assert details(error)["reason"] == "ROUTING_CYCLE"
    assert snapshot(gov.runtime) == before
    # The same fallbacks for another tenant are another graph: no cycle.
    listed = await gov.operator.ListPartnerRoutes(pb.ListPartnerRoutesRequest(tenant_id="acme"))
    assert [r.route_id for r in listed.routes] == ["a-to-b", "b-to-c"]
