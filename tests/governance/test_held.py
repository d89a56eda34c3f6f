"""HELD: the queues of a gateway, or routed to a partner, that cannot be reached, and
their return by themselves.

The simulated gateway of one region is stopped and started again on its
address; the other region's gateway keeps answering. A partner is unreachable
when the simulated gateway answers PARTNER_UNREACHABLE for commands naming it.
Nothing but the queues' shown state changes meanwhile: their commands wait in
the outbox (held, never failed) and each transition is one audit entry per queue.
"""

from __future__ import annotations

import grpc

from ppos.controlplane.common.v1.resource_pb2 import Condition
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from tests.governance.conftest import Governed, StartGoverned
from tests.governance.support import count, eventually, refused, settled, start_gateway


async def _queue(gov: Governed, queue_id: str = "main") -> res.Queue:
    reply = await gov.operator.GetQueue(pb.GetQueueRequest(tenant_id="acme", queue_id=queue_id))
    return reply.queue


def _held_condition(queue: res.Queue) -> Condition:
    [held] = [c for c in queue.status.conditions if c.type == "Held"]
    return held


def _transitions(gov: Governed, method: str, queue: str = "acme/main") -> int:
    return count(gov.runtime, "audit_log", "method = :m AND resource_id = :q", m=method, q=queue)


async def test_an_unreachable_gateway_shows_its_queues_held_until_it_answers_again(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed()
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id="prov-acme",
            tenant_id="acme",
            spec=res.TenantSpec(default_region="eu-west-1"),
            queues=[
                pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=8)),
                pb.QueueTemplate(
                    queue_id="east", spec=res.QueueSpec(capacity=4, region="us-east-1")
                ),
            ],
        )
    )
    await settled(gov.runtime)
    main = await _queue(gov)
    assert main.status.state == res.QUEUE_STATE_ACTIVE
    assert _held_condition(main).status == 2  # FALSE: reachable

    gateway = gov.gateways["eu-west-1"]
    port = gateway.port
    await gateway.stop()
    resized = await gov.operator.ResizeQueue(
        pb.ResizeQueueRequest(
            tenant_id="acme",
            queue_id="main",
            capacity=4,
            reason="night shift",
            expected_resource_version=main.meta.resource_version,
        )
    )
    assert resized.queue.spec.capacity == 4
    held = await eventually(lambda: _queue(gov), lambda q: q.status.state == res.QUEUE_STATE_HELD)
    assert held.spec.state == res.QUEUE_STATE_ACTIVE, "the operator's intent is unchanged"
    condition = _held_condition(held)
    assert condition.status == 1  # TRUE
    assert condition.reason == "GatewayUnreachable"
    assert "UNAVAILABLE" in condition.message
    east = await _queue(gov, "east")
    assert east.status.state == res.QUEUE_STATE_ACTIVE, "another region's gateway answers"
    created = await gov.operator.CreateQueue(
        pb.CreateQueueRequest(tenant_id="acme", queue_id="late", spec=res.QueueSpec(capacity=2))
    )
    assert created.queue.status.state == res.QUEUE_STATE_HELD, "a new queue of the region too"
    listed = await gov.operator.ListQueues(pb.ListQueuesRequest(states=[res.QUEUE_STATE_HELD]))
    assert [q.queue_id for q in listed.queues] == ["late", "main"]
    # Commands wait (retried, never failed) and the audit says it once per queue.
    await eventually(
        lambda: count(gov.runtime, "outbox_commands", "attempts >= 3 AND state <> 'ACKNOWLEDGED'"),
        lambda n: n == 2,  # the resize and the new queue's policy
        within=20,
    )
    assert count(gov.runtime, "outbox_commands", "state = 'FAILED'") == 0
    assert _transitions(gov, "gateway:unreachable") == 1
    entries = await gov.operator.ListAuditEntries(
        pb.ListAuditEntriesRequest(resource_kind="queue", resource_id="acme/main")
    )
    [entry] = [e for e in entries.entries if e.method == "gateway:unreachable"]
    assert '"HELD"' in entry.after_json
    assert '"ACTIVE"' in entry.before_json

    back = await start_gateway("eu-west-1", gov.verifier, port=port)
    gov.gateways["eu-west-1"] = back
    # The first answer releases the region; each waiting command then goes through.
    await eventually(
        lambda: _queue(gov), lambda q: q.status.state == res.QUEUE_STATE_ACTIVE, within=20
    )
    await eventually(lambda: _queue(gov), lambda q: q.status.applied_capacity == 4, within=20)
    await settled(gov.runtime)
    applied = back.sim.applied("ApplyQueuePolicy")
    assert sorted((c.request["queue_id"], c.request["capacity"]) for c in applied) == [
        ("late", 2),
        ("main", 4),
    ]
    assert _transitions(gov, "gateway:reachable") == 1
    assert _transitions(gov, "gateway:unreachable") == 1
    assert _transitions(gov, "gateway:reachable", "acme/late") == 1
    assert _transitions(gov, "gateway:reachable", "acme/east") == 0, "never held"
    assert (await _queue(gov, "late")).status.state == res.QUEUE_STATE_ACTIVE


async def test_held_cannot_be_set_by_an_operator(gov: Governed) -> None:
    error = await refused(
        gov.operator.ProvisionTenant(
            pb.ProvisionTenantRequest(
                request_id="prov-held",
                tenant_id="acme",
                spec=res.TenantSpec(default_region="eu-west-1"),
                queues=[
                    pb.QueueTemplate(
                        queue_id="main",
                        spec=res.QueueSpec(capacity=8, state=res.QUEUE_STATE_HELD, reason="try it"),
                    )
                ],
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot be set" in (error.details() or "")
    assert count(gov.runtime, "tenants") == 0


async def test_an_unreachable_partner_holds_the_queues_routed_to_it_until_it_answers(
    start_governed: StartGoverned,
) -> None:
    gov = await start_governed()
    await gov.operator.CreatePartner(
        pb.CreatePartnerRequest(partner_id="shop-b", display_name="Shop B", region="eu-west-1")
    )
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id="prov-acme",
            tenant_id="acme",
            spec=res.TenantSpec(default_region="eu-west-1"),
            queues=[
                pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=8)),
                pb.QueueTemplate(queue_id="other", spec=res.QueueSpec(capacity=4)),
            ],
        )
    )
    await settled(gov.runtime)
    gateway = gov.gateway("eu-west-1")
    gateway.faults.unreachable_partners.add("shop-b")
    await gov.operator.CreatePartnerRoute(
        pb.CreatePartnerRouteRequest(
            route_id="acme-main-b",
            spec=res.PartnerRouteSpec(tenant_id="acme", queue_id="main", partner_id="shop-b"),
        )
    )
    held = await eventually(lambda: _queue(gov), lambda q: q.status.state == res.QUEUE_STATE_HELD)
    assert held.spec.state == res.QUEUE_STATE_ACTIVE, "the operator's intent is unchanged"
    condition = _held_condition(held)
    assert condition.reason == "PartnerUnreachable"
    assert "shop-b" in condition.message
    # The gateway itself answers: the queue not routed to the partner is ACTIVE and
    # its own commands go through.
    other = await _queue(gov, "other")
    assert other.status.state == res.QUEUE_STATE_ACTIVE
    await gov.operator.ResizeQueue(
        pb.ResizeQueueRequest(
            tenant_id="acme",
            queue_id="other",
            capacity=2,
            reason="quiet week",
            expected_resource_version=other.meta.resource_version,
        )
    )
    await eventually(lambda: _queue(gov, "other"), lambda q: q.status.applied_capacity == 2)
    listed = await gov.operator.ListQueues(pb.ListQueuesRequest(states=[res.QUEUE_STATE_HELD]))
    assert [q.queue_id for q in listed.queues] == ["main"]
    # The route's command waits (retried, never failed) and nothing was done with it.
    await eventually(
        lambda: count(gov.runtime, "outbox_commands", "attempts >= 3 AND state <> 'ACKNOWLEDGED'"),
        lambda n: n == 1,
        within=20,
    )
    assert count(gov.runtime, "outbox_commands", "state = 'FAILED'") == 0
    assert gateway.state.routes == {}
    assert count(gov.runtime, "governance_gateway_holds") == 0
    assert _transitions(gov, "partner:unreachable") == 1
    assert _transitions(gov, "partner:unreachable", "acme/other") == 0

    gateway.faults.unreachable_partners.clear()
    await eventually(
        lambda: _queue(gov), lambda q: q.status.state == res.QUEUE_STATE_ACTIVE, within=20
    )
    await settled(gov.runtime)
    assert list(gateway.state.routes) == ["acme-main-b"]
    assert len(gateway.applied("ApplyPartnerRoute")) == 1
    assert _transitions(gov, "partner:reachable") == 1
    assert _transitions(gov, "partner:unreachable") == 1
    assert count(gov.runtime, "governance_partner_holds") == 0
