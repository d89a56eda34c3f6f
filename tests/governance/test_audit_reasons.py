"""Every change that takes a reason writes it into its audit entry: tenants,
queues (a queue created held too), routes, outbox retries and admin jobs
(governance), cordon, drain, re-image and command cancels (node registry).
Changes without one leave it empty."""

from __future__ import annotations

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as node_pb
from tests.governance.conftest import Governed, StartGoverned
from tests.governance.support import eventually
from tests.node_registry.helpers import NEW_DIGEST, NEW_IMAGE, ready_node, registry

# No admin job runner: a started job stays PENDING until cancelled.
NO_RUNNER = {"PPOS_GOVERNANCE_BACKGROUND": "dispatcher"}


async def audit_entries(gov: Governed) -> list[res.AuditEntry]:
    entries: list[res.AuditEntry] = []
    after = 0
    while True:
        page = await gov.operator.ListAuditEntries(
            pb.ListAuditEntriesRequest(after_audit_id=after, page_size=200)
        )
        entries += page.entries
        if not page.has_more:
            return entries
        after = page.entries[-1].audit_id


def reasons(entries: list[res.AuditEntry]) -> set[tuple[str, str, str]]:
    """(method, resource, reason) of the entries that carry a reason."""
    return {
        (e.method.rsplit("/", 1)[-1], f"{e.resource_kind}/{e.resource_id}", e.reason)
        for e in entries
        if e.reason
    }


async def _queue_version(gov: Governed, queue_id: str) -> str:
    reply = await gov.operator.GetQueue(pb.GetQueueRequest(tenant_id="acme", queue_id=queue_id))
    return str(reply.queue.meta.resource_version)


async def test_governance_changes_carry_their_reason(start_governed: StartGoverned) -> None:
    gov = await start_governed(NO_RUNNER)
    op = gov.operator
    gov.gateway().faults.refuse_next = 1  # the tenant's first command fails: retried below
    await op.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id="prov-acme",
            tenant_id="acme",
            spec=res.TenantSpec(display_name="Acme", default_region="eu-west-1"),
            queues=[
                pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=10)),
                pb.QueueTemplate(queue_id="proofs", spec=res.QueueSpec(capacity=5)),
            ],
        )
    )
    await op.CreatePartner(pb.CreatePartnerRequest(partner_id="printer-a", region="eu-west-1"))
    routes = {}
    for route_id, queue_id in (("acme-main", "main"), ("acme-proofs", "proofs")):
        created = await op.CreatePartnerRoute(
            pb.CreatePartnerRouteRequest(
                route_id=route_id,
                spec=res.PartnerRouteSpec(
                    tenant_id="acme", queue_id=queue_id, partner_id="printer-a"
                ),
            )
        )
        routes[route_id] = created.route.meta.resource_version

    failed = await eventually(
        lambda: op.ListCommands(pb.ListCommandsRequest(states=[res.COMMAND_STATE_FAILED])),
        lambda reply: len(reply.commands) == 1,
    )
    command_id = failed.commands[0].command_id
    await op.RetryCommand(pb.RetryCommandRequest(command_id=command_id, reason="gateway fixed"))
    await op.ResizeQueue(
        pb.ResizeQueueRequest(
            tenant_id="acme",
            queue_id="main",
            capacity=20,
            reason="peak season",
            expected_resource_version=await _queue_version(gov, "main"),
        )
    )
    await op.PauseQueue(
        pb.PauseQueueRequest(tenant_id="acme", queue_id="main", reason="engine upgrade")
    )
    await op.DrainQueue(
        pb.DrainQueueRequest(tenant_id="acme", queue_id="proofs", reason="moving region")
    )
    await op.DeletePartnerRoute(
        pb.DeletePartnerRouteRequest(
            route_id="acme-main", reason="cleanup", expected_resource_version=routes["acme-main"]
        )
    )
    await op.CreateQueue(
        pb.CreateQueueRequest(
            tenant_id="acme",
            queue_id="held",
            spec=res.QueueSpec(
                capacity=2, state=res.QUEUE_STATE_PAUSED, reason="awaiting contract"
            ),
        )
    )
    await op.SuspendTenant(pb.SuspendTenantRequest(tenant_id="acme", reason="unpaid invoice"))
    await op.RetireTenant(pb.RetireTenantRequest(tenant_id="acme", reason="contract ended"))
    job = await op.StartAdminJob(
        pb.StartAdminJobRequest(
            kind=res.ADMIN_JOB_KIND_REGION_DRAIN,
            parameters={"region": "eu-west-1", "reason": "datacentre maintenance"},
        )
    )
    job_id = job.job.admin_job_id
    await op.CancelAdminJob(pb.CancelAdminJobRequest(admin_job_id=job_id, reason="wrong region"))

    entries = await audit_entries(gov)
    assert reasons(entries) == {
        ("RetryCommand", f"command/{command_id}", "gateway fixed"),
        ("ResizeQueue", "queue/acme/main", "peak season"),
        ("PauseQueue", "queue/acme/main", "engine upgrade"),
        ("DrainQueue", "queue/acme/proofs", "moving region"),
        ("DeletePartnerRoute", "route/acme-main", "cleanup"),
        ("CreateQueue", "queue/acme/held", "awaiting contract"),
        ("SuspendTenant", "tenant/acme", "unpaid invoice"),
        # The queues and routes a suspension or retirement changes carry its reason.
        ("SuspendTenant", "queue/acme/main", "unpaid invoice"),
        ("SuspendTenant", "queue/acme/proofs", "unpaid invoice"),
        ("SuspendTenant", "queue/acme/held", "unpaid invoice"),
        ("RetireTenant", "tenant/acme", "contract ended"),
        ("RetireTenant", "queue/acme/main", "contract ended"),
        ("RetireTenant", "queue/acme/proofs", "contract ended"),
        ("RetireTenant", "queue/acme/held", "contract ended"),
        ("RetireTenant", "route/acme-proofs", "contract ended"),
        ("StartAdminJob", f"admin_job/{job_id}", "datacentre maintenance"),
        ("CancelAdminJob", f"admin_job/{job_id}", "wrong region"),
    }
    unreasoned = {e.method.rsplit("/", 1)[-1] for e in entries if not e.reason}
    assert {"ProvisionTenant", "CreatePartner", "CreatePartnerRoute"} <= unreasoned


async def test_node_changes_carry_their_reason(gov: Governed) -> None:
    plane = gov.plane
    stub = registry(plane)
    agent = await ready_node(plane)
    node = agent.node_id
    await stub.CordonNode(
        node_pb.CordonNodeRequest(node_id=node, reason="disk failing"), metadata=plane.operator
    )
    await stub.UncordonNode(node_pb.UncordonNodeRequest(node_id=node), metadata=plane.operator)
    issued = await stub.ReimageNode(
        node_pb.ReimageNodeRequest(
            node_id=node,
            target=node_pb2.ContainerVersion(image=NEW_IMAGE, digest=NEW_DIGEST),
            reason="engine 7.5",
        ),
        metadata=plane.operator,
    )
    command_id = issued.command.command_id
    await stub.CancelNodeCommand(
        node_pb.CancelNodeCommandRequest(command_id=command_id, reason="wrong digest"),
        metadata=plane.operator,
    )
    await stub.DrainNode(
        node_pb.DrainNodeRequest(node_id=node, reason="kernel patch"), metadata=plane.operator
    )

    entries = await audit_entries(gov)
    assert reasons(entries) == {
        ("CordonNode", f"node/{node}", "disk failing"),
        ("ReimageNode", f"node_command/{command_id}", "engine 7.5"),
        ("CancelNodeCommand", f"node_command/{command_id}", "wrong digest"),
        ("DrainNode", f"node/{node}", "kernel patch"),
    }
    uncordoned = [e for e in entries if e.method.endswith("/UncordonNode")]
    assert len(uncordoned) == 1
    assert uncordoned[0].reason == ""
