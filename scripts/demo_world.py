"""What `make demo` seeds and shows: the governance world, the jobs the simulated
registries produce over time, and the status lines printed while it runs."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

from ppos.controlplane.client import ControlPlane
from ppos.controlplane.governance.v1 import governance_service_pb2 as gpb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.preflight.v1 import job_pb2
from ppos.preflightsim.records import SourceRecord
from ppos.preflightsim.samples import write_jsonl

IMAGE = "registry.printprice.example/preflight-engine:15.2.0"
DIGEST = "sha256:" + "5e" * 32
S = job_pb2  # governance states and job statuses

PARTNERS = [  # id, name, region, accepts review
    ("berlin-print", "Berlin Print GmbH", "eu-west-1", False),
    ("ohio-print", "Ohio Print Co.", "us-east-1", False),
    ("mumbai-print", "Mumbai Print Works", "ap-south-1", False),
    ("review-desk", "PrintPrice review desk", "eu-west-1", True),
]
TENANTS = {  # tenant -> default region, default partner, queues (id, region, capacity)
    "acme-print": ("eu-west-1", "berlin-print", [("offset", "eu-west-1", 8)]),
    "globex-labels": ("us-east-1", "ohio-print", [("labels", "us-east-1", 6)]),
    "initech-books": ("ap-south-1", "mumbai-print", [("books", "ap-south-1", 4)]),
}
ROUTES = [  # route id, tenant, queue, partner, priority, fallback
    ("acme-offset", "acme-print", "offset", "berlin-print", 10, "ohio-print"),
    ("globex-labels", "globex-labels", "labels", "ohio-print", 10, "berlin-print"),
    ("initech-books", "initech-books", "books", "mumbai-print", 10, ""),
]
A = res  # policy action kinds
POLICIES = {
    "env-recovery": (
        S.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT,
        [(A.POLICY_ACTION_KIND_REIMAGE_NODE, {}), (A.POLICY_ACTION_KIND_RETRY_JOB, {})],
    ),
    "degraded-capacity": (
        S.GOVERNANCE_STATE_DEGRADED,
        [
            (
                A.POLICY_ACTION_KIND_LOWER_QUEUE_CAPACITY,
                {"capacity_factor": "0.5", "min_capacity": "2"},
            )
        ],
    ),
    "partial-remainder": (
        S.GOVERNANCE_STATE_PARTIAL,
        [(A.POLICY_ACTION_KIND_REQUEST_REMAINDER, {})],
    ),
    "findings-review": (
        S.GOVERNANCE_STATE_COMPLETED_WITH_FINDINGS,
        [(A.POLICY_ACTION_KIND_ROUTE_TO_REVIEW, {"partner_id": "review-desk"})],
    ),
}


def seed(cp: ControlPlane) -> None:
    """Partners, tenants with their queues, routes and the four policies (on the
    demo's fresh database)."""
    gov = cp.governance
    for partner_id, name, region, review in PARTNERS:
        gov.create_partner(partner_id, display_name=name, region=region, accepts_review=review)
    for tenant, (region, partner, queues) in TENANTS.items():
        gov.provision_tenant(
            tenant,
            res.TenantSpec(display_name=tenant, default_region=region, default_partner_id=partner),
            queues=[
                gpb.QueueTemplate(queue_id=q, spec=res.QueueSpec(region=r, capacity=c))
                for q, r, c in queues
            ],
            request_id=f"demo-provision-{tenant}",
        )
    for route_id, tenant, queue, partner, priority, fallback in ROUTES:
        spec = res.PartnerRouteSpec(
            tenant_id=tenant,
            queue_id=queue,
            partner_id=partner,
            priority=priority,
            fallback_partner_id=fallback,
        )
        gov.create_route(route_id, spec)
    for policy_id, (state, actions) in POLICIES.items():
        spec = res.GovernancePolicySpec(
            trigger_state=state,
            actions=[res.PolicyAction(kind=k, parameters=p) for k, p in actions],
            enabled=True,
            node_failure_threshold=3 if policy_id == "env-recovery" else 0,
            node_failure_window_seconds=3600 if policy_id == "env-recovery" else 0,
        )
        gov.set_policy(policy_id, spec)


# One region's jobs, in the order its registry produces them: (job, revision,
# state, status, node index). A runtime failure comes back as revision 2 once
# the policy has re-imaged its node and retried it.
STORY = [
    ("a", 1, S.GOVERNANCE_STATE_COMPLETED, S.JOB_STATUS_COMPLETED, 1),
    ("b", 1, S.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT, S.JOB_STATUS_FAILED, 0),
    ("c", 1, S.GOVERNANCE_STATE_COMPLETED_WITH_FINDINGS, S.JOB_STATUS_COMPLETED, 2),
    ("d", 1, S.GOVERNANCE_STATE_DEGRADED, S.JOB_STATUS_COMPLETED, 1),
    ("e", 1, S.GOVERNANCE_STATE_COMPLETED, S.JOB_STATUS_COMPLETED, 2),
    ("f", 1, S.GOVERNANCE_STATE_PARTIAL, S.JOB_STATUS_COMPLETED, 3),
    ("b", 2, S.GOVERNANCE_STATE_COMPLETED, S.JOB_STATUS_COMPLETED, 1),
    ("g", 1, S.GOVERNANCE_STATE_COMPLETED_WITH_FINDINGS, S.JOB_STATUS_COMPLETED, 3),
    ("h", 1, S.GOVERNANCE_STATE_COMPLETED, S.JOB_STATUS_COMPLETED, 0),
    ("i", 1, S.GOVERNANCE_STATE_DEGRADED, S.JOB_STATUS_COMPLETED, 2),
]


def story_records(region: str, tenant: str, queue: str, nodes: list[str]) -> list[SourceRecord]:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    out = []
    for name, revision, state, status, node_index in STORY:
        job_id = f"job_{stamp}_{region.replace('-', '')}_{name}"
        node = nodes[node_index % len(nodes)]
        state_name = job_pb2.GovernanceState.Name(state).removeprefix("GOVERNANCE_STATE_")
        payload = {"jobId": job_id, "revision": revision, "state": state_name, "node": node}
        now = dt.datetime.now(dt.UTC)
        out.append(
            SourceRecord(
                job_id=job_id,
                tenant_id=tenant,
                queue_id=queue,
                revision=revision,
                status=status,
                governance_state=state,
                node_id=node,
                container_image=f"{IMAGE}@{DIGEST}",
                create_time=now,
                update_time=now,
                payload=json.dumps(payload, separators=(",", ":")).encode(),
            )
        )
    return out


def write_story(directory: Path, region: str, nodes: list[str]) -> Path:
    tenant = next(t for t, (r, _, _) in TENANTS.items() if r == region)
    queue = TENANTS[tenant][2][0][0]
    return write_jsonl(story_records(region, tenant, queue, nodes), directory / f"{region}.jsonl")


def status_lines(cp: ControlPlane) -> list[str]:
    """Nodes, sync, decisions, commands: one line each."""
    nodes = cp.nodes.list_nodes().nodes
    readiness = Counter(
        node_pb2.Readiness.Name(n.status.readiness).removeprefix("READINESS_") for n in nodes
    )
    versions = Counter(n.status.container.image.rsplit(":", 1)[-1] for n in nodes)
    sync = ", ".join(
        f"{s.region} {s.records_synced} records ({s.quarantined_count} quarantined)"
        for s in cp.sync.list_statuses()
    )
    decisions = Counter(d.policy_id for d in cp.governance.list_decisions().decisions)
    outbox = Counter(
        res.CommandState.Name(c.state).removeprefix("COMMAND_STATE_")
        for c in cp.governance.list_commands().commands
    )
    reimages = Counter(
        node_pb2.NodeCommandState.Name(c.state).removeprefix("NODE_COMMAND_STATE_")
        for c in cp.nodes.list_commands().commands
    )
    return [
        f"nodes      {len(nodes)}: {dict(sorted(readiness.items()))} versions {dict(versions)}",
        f"sync       {sync}",
        f"decisions  {dict(sorted(decisions.items())) or 'none yet'}",
        f"outbox     {dict(sorted(outbox.items())) or 'empty'}",
        f"re-images  {dict(sorted(reimages.items())) or 'none yet'}",
    ]
