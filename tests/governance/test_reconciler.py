"""The reconciler: synced governance states become decisions and commands, at most once.

Synced jobs come from a stand-in RegistrySyncService (tests/governance/sync_double.py)
over the real contract and PREFLIGHT_JWT check, so each test sets exactly the
states, nodes, times and outages it needs; nodes come from the real node registry.
The whole path with the real sync and simulated region is in test_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from ppos.controlplane.common.v1.resource_pb2 import JobRef
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.registrysync.v1 import registry_sync_service_pb2 as rs_pb
from ppos.controlplane.security.peers import SERVICE_AUDIENCE, gateway_audience
from ppos.controlplane.services.governance.peers import job_view
from ppos.controlplane.storage.leases import LeadershipLost
from ppos.preflight.v1 import job_pb2
from tests.governance.conftest import Governed, StartGoverned, public_verifier
from tests.governance.support import bearer_claims, count, eventually, settled, snapshot
from tests.governance.sync_double import RunningDouble, job_record, start_sync_double
from tests.support.nodes import DIGEST, IMAGE, enroll_node

FRE = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
FINDINGS = job_pb2.GOVERNANCE_STATE_COMPLETED_WITH_FINDINGS
DEGRADED = job_pb2.GOVERNANCE_STATE_DEGRADED
RETRY = "/ppos.preflight.v1.PreflightGatewayService/RetryJob"


class Recon:
    def __init__(self, gov: Governed, sync: RunningDouble) -> None:
        self.gov = gov
        self.sync = sync

    async def policy(self, policy_id: str, spec: res.GovernancePolicySpec) -> None:
        await self.gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(policy_id=policy_id, spec=spec)
        )

    async def decisions(self, **filters: str) -> list[res.Decision]:
        reply = await self.gov.operator.ListDecisions(pb.ListDecisionsRequest(**filters))
        return list(reversed(reply.decisions))  # oldest first

    async def commands(self, decision_id: str) -> list[res.OutboxCommand]:
        reply = await self.gov.operator.ListCommands(
            pb.ListCommandsRequest(decision_id=decision_id)
        )
        return sorted(reply.commands, key=lambda c: c.method)

    def cursor(self) -> int:
        """How far the reconciler has read (0 before its first step)."""
        value = self.gov.runtime.db.read_sync(
            lambda s: s.execute(
                text("SELECT max(last_sync_sequence) FROM governance_reconciler_cursor")
            ).scalar()
        )
        return int(value or 0)


@pytest.fixture
async def recon(start_governed: StartGoverned, tmp_path: Path) -> Recon:
    sync = await start_sync_double(public_verifier(tmp_path / "data" / "keys"))
    gov = await start_governed(
        {
            "PPOS_SERVICES": "governance,noderegistry",
            "PPOS_PEER_REGISTRYSYNC": sync.address,
        }
    )
    yield Recon(gov, sync)  # type: ignore[misc]
    await sync.server.stop(0)


def action(kind: int, **parameters: str) -> res.PolicyAction:
    return res.PolicyAction(kind=kind, parameters=parameters)


RECOVERY = res.GovernancePolicySpec(
    trigger_state=FRE,
    actions=[action(res.POLICY_ACTION_KIND_REIMAGE_NODE), action(res.POLICY_ACTION_KIND_RETRY_JOB)],
    enabled=True,
    node_failure_threshold=3,
    node_failure_window_seconds=3600,
)


async def test_a_runtime_failure_reimages_its_node_and_retries_the_job_once(recon: Recon) -> None:
    gov = recon.gov
    node = await enroll_node(gov.plane.channel, gov.plane.operator)
    await recon.policy("env-recovery", RECOVERY)
    record = job_record("job_1779116602472_1d246", FRE, revision=2, node_id=node.node_id)
    recon.sync.double.add(record)
    [decision] = await eventually(recon.decisions, lambda d: len(d) == 1)
    assert (decision.job.region, decision.job.job_id, decision.job.revision) == (
        "eu-west-1",
        "job_1779116602472_1d246",
        2,
    )
    assert decision.canonical_payload_sha256 == hashlib.sha256(record.canonical_payload).digest()
    assert decision.governance_state == FRE
    assert decision.policy_id == "env-recovery"
    assert decision.node_id == node.node_id
    assert [a.kind for a in decision.actions] == [
        res.POLICY_ACTION_KIND_REIMAGE_NODE,
        res.POLICY_ACTION_KIND_RETRY_JOB,
    ]
    assert all(a.command_id for a in decision.actions)
    assert "job_1779116602472_1d246 revision 2" in decision.rationale
    reimage, retry = await recon.commands(decision.decision_id)
    assert reimage.target == "noderegistry"
    assert reimage.method.endswith(".NodeRegistryService/ReimageNode")
    sent = json.loads(reimage.request_json)
    assert sent["node_id"] == node.node_id
    assert sent["target"] == {"image": IMAGE, "digest": DIGEST}, "the node's own pinned version"
    assert (reimage.issued_by.kind, reimage.issued_by.name) == ("policy", "env-recovery")
    assert retry.target == "gateway:eu-west-1"
    assert retry.method == RETRY
    # The gateway is asked exactly once, with a token minted for it, acting for the policy.
    sim = gov.gateway()
    await eventually(lambda: len(sim.applied("RetryJob")), lambda n: n == 1)
    call = sim.applied("RetryJob")[0]
    assert call.request["job_id"] == "job_1779116602472_1d246"
    assert call.request["failed_revision"] == "2"
    assert call.request["avoid_node_id"] == node.node_id
    claims = bearer_claims(call.metadata)
    assert claims["aud"] == gateway_audience("eu-west-1")
    assert claims["act"] == {"sub": "policy:env-recovery"}
    # Synced jobs were read over the sync service's contract, with its own audience.
    name, metadata = recon.sync.double.calls[0]
    assert name == "ListSyncedJobs"
    assert bearer_claims(list(metadata))["aud"] == SERVICE_AUDIENCE["registrysync"]
    audit = await gov.operator.ListAuditEntries(
        pb.ListAuditEntriesRequest(resource_kind="decision")
    )
    [entry] = audit.entries
    assert entry.method == "policy:env-recovery"
    assert (entry.actor.kind, entry.actor.name) == ("policy", "env-recovery")
    assert json.loads(entry.after_json)["payload_sha256"] == decision.canonical_payload_sha256.hex()


async def test_the_same_revision_is_never_acted_on_twice(recon: Recon) -> None:
    gov = recon.gov
    await recon.policy(
        "retry-only",
        res.GovernancePolicySpec(
            trigger_state=FRE, actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB)], enabled=True
        ),
    )
    synced = recon.sync.double.add(job_record("job_1", FRE, node_id="node_x"))
    await eventually(recon.decisions, lambda d: len(d) == 1)
    await settled(gov.runtime)
    # A replay (the cursor rewound, as after a restore) and a direct second attempt.
    gov.runtime.db.write_sync(
        lambda s: s.execute(text("UPDATE governance_reconciler_cursor SET last_sync_sequence = 0"))
    )
    assert await gov.module.reconciler.decide(job_view(synced)) == ""
    await eventually(recon.cursor, lambda c: c == 1)
    # A new revision (a new attempt) is a new decision.
    recon.sync.double.add(job_record("job_1", FRE, revision=2, node_id="node_x"))
    decisions = await eventually(recon.decisions, lambda d: len(d) == 2)
    assert [d.job.revision for d in decisions] == [1, 2]
    await settled(gov.runtime)
    retried = [c.request["failed_revision"] for c in gov.gateway().applied("RetryJob")]
    assert retried == ["1", "2"]
    assert count(gov.runtime, "outbox_commands") == 2


async def test_a_node_that_keeps_failing_is_cordoned_not_reimaged_forever(recon: Recon) -> None:
    gov = recon.gov
    node = await enroll_node(gov.plane.channel, gov.plane.operator)
    await recon.policy("env-recovery", RECOVERY)
    for index in range(4):
        recon.sync.double.add(
            job_record(f"job_{index}", FRE, node_id=node.node_id, at=1_790_000_000.0 + 60 * index)
        )
    decisions = await eventually(recon.decisions, lambda d: len(d) == 4)
    kinds = [[res.PolicyActionKind.Name(a.kind)[19:] for a in d.actions] for d in decisions]
    assert kinds == [
        ["REIMAGE_NODE", "RETRY_JOB"],
        ["REIMAGE_NODE", "RETRY_JOB"],
        ["CORDON_NODE", "RETRY_JOB"],
        ["RETRY_JOB"],
    ]
    assert "failed 3 times within 3600s" in decisions[2].rationale
    assert "already cordoned by decision " + decisions[2].decision_id in decisions[3].rationale
    # Outside the window the count starts again.
    recon.sync.double.add(
        job_record("job_late", FRE, node_id=node.node_id, at=1_790_000_000.0 + 7200)
    )
    decisions = await eventually(recon.decisions, lambda d: len(d) == 5)
    assert res.POLICY_ACTION_KIND_REIMAGE_NODE in [a.kind for a in decisions[4].actions]


async def test_findings_are_routed_never_retried(recon: Recon) -> None:
    gov = recon.gov
    await gov.operator.CreatePartner(
        pb.CreatePartnerRequest(partner_id="review-hub", region="eu-west-1", accepts_review=True)
    )
    await recon.policy(
        "findings-review",
        res.GovernancePolicySpec(
            trigger_state=FINDINGS,
            actions=[action(res.POLICY_ACTION_KIND_ROUTE_TO_REVIEW, partner_id="review-hub")],
            enabled=True,
        ),
    )
    await recon.policy(
        "retry-only",
        res.GovernancePolicySpec(
            trigger_state=FRE, actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB)], enabled=True
        ),
    )
    recon.sync.double.add(job_record("fix_1779116602946", FINDINGS))
    [decision] = await eventually(recon.decisions, lambda d: len(d) == 1)
    assert decision.policy_id == "findings-review"
    sim = gov.gateway()
    await eventually(lambda: len(sim.applied("RouteJobToReview")), lambda n: n == 1)
    await settled(gov.runtime)
    assert sim.applied("RetryJob") == []
    assert sim.applied("RouteJobToReview")[0].request["partner_id"] == "review-hub"


async def test_a_tenant_policy_wins_and_a_disabled_one_opts_out(recon: Recon) -> None:
    gov = recon.gov
    for tenant in ("acme", "beta"):
        await gov.operator.ProvisionTenant(
            pb.ProvisionTenantRequest(request_id=f"p-{tenant}", tenant_id=tenant)
        )
    retry = [action(res.POLICY_ACTION_KIND_RETRY_JOB)]
    await recon.policy(
        "global-retry", res.GovernancePolicySpec(trigger_state=FRE, actions=retry, enabled=True)
    )
    await recon.policy(
        "beta-hands-off",
        res.GovernancePolicySpec(tenant_id="beta", trigger_state=FRE, actions=retry, enabled=False),
    )
    recon.sync.double.add(job_record("job_beta", FRE, tenant_id="beta"))
    recon.sync.double.add(job_record("job_acme", FRE, tenant_id="acme"))
    await eventually(recon.cursor, lambda c: c == 2)
    decisions = await recon.decisions()
    assert [(d.job.job_id, d.policy_id) for d in decisions] == [("job_acme", "global-retry")]


async def test_degraded_work_lowers_the_queue_capacity(recon: Recon) -> None:
    gov = recon.gov
    await gov.operator.ProvisionTenant(
        pb.ProvisionTenantRequest(
            request_id="p-acme",
            tenant_id="acme",
            spec=res.TenantSpec(default_region="eu-west-1"),
            queues=[pb.QueueTemplate(queue_id="main", spec=res.QueueSpec(capacity=10))],
        )
    )
    await recon.policy(
        "degraded-shrink",
        res.GovernancePolicySpec(
            trigger_state=DEGRADED,
            actions=[
                action(
                    res.POLICY_ACTION_KIND_LOWER_QUEUE_CAPACITY,
                    capacity_factor="0.5",
                    min_capacity="4",
                )
            ],
            enabled=True,
        ),
    )
    recon.sync.double.add(job_record("job_slow_1", DEGRADED))
    recon.sync.double.add(job_record("job_slow_2", DEGRADED))
    first, _second = await eventually(recon.decisions, lambda d: len(d) == 2)
    [lowered] = first.actions
    assert lowered.kind == res.POLICY_ACTION_KIND_LOWER_QUEUE_CAPACITY
    assert lowered.description == (
        "lower queue acme/main capacity from 10 to 5 "
        "(running jobs finish; waiting jobs start once fewer than 5 run)"
    )
    [command] = await recon.commands(first.decision_id)
    assert command.command_id == lowered.command_id
    assert json.loads(command.request_json)["capacity"] == 5
    queue = (
        await gov.operator.GetQueue(pb.GetQueueRequest(tenant_id="acme", queue_id="main"))
    ).queue
    assert queue.spec.capacity == 4, "10 -> 5 -> floor of 4"
    assert queue.meta.generation == 3
    sim = gov.gateway()
    await eventually(
        lambda: sim.state.queues.get(("acme", "main"), {}).get("capacity"), lambda c: c == 4
    )
    audit = await gov.operator.ListAuditEntries(
        pb.ListAuditEntriesRequest(resource_kind="queue", resource_id="acme/main")
    )
    assert [(e.actor.kind, e.method) for e in audit.entries][1:] == [
        ("policy", "policy:degraded-shrink"),
        ("policy", "policy:degraded-shrink"),
    ]


async def test_a_dry_run_shows_decisions_and_changes_nothing(recon: Recon) -> None:
    gov = recon.gov
    node = await enroll_node(gov.plane.channel, gov.plane.operator)
    disabled = res.GovernancePolicySpec()
    disabled.CopyFrom(RECOVERY)
    disabled.enabled = False
    await recon.policy("env-recovery", disabled)
    for index in range(3):
        recon.sync.double.add(job_record(f"job_{index}", FRE, node_id=node.node_id))
    await eventually(recon.cursor, lambda c: c == 3)
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    calls = len(gov.gateway().calls)
    stored = await gov.operator.DryRunGovernancePolicy(
        pb.DryRunGovernancePolicyRequest(policy_id="env-recovery", limit=2)
    )
    assert [d.job.job_id for d in stored.decisions] == ["job_1", "job_2"], "the latest two"
    for decision in stored.decisions:
        assert decision.rationale.startswith("dry run:")
        assert [a.kind for a in decision.actions] == [
            res.POLICY_ACTION_KIND_REIMAGE_NODE,
            res.POLICY_ACTION_KIND_RETRY_JOB,
        ]
        assert not any(a.command_id for a in decision.actions)
        assert not decision.decision_id
    unsaved = res.GovernancePolicySpec(
        trigger_state=FRE, actions=[action(res.POLICY_ACTION_KIND_CORDON_NODE)]
    )
    one = await gov.operator.DryRunGovernancePolicy(
        pb.DryRunGovernancePolicyRequest(
            spec=unsaved,
            jobs=[JobRef(region="eu-west-1", job_id="job_0", revision=1)],
        )
    )
    [shown] = one.decisions
    assert [a.kind for a in shown.actions] == [res.POLICY_ACTION_KIND_CORDON_NODE]
    assert "the reconciler would apply policy env-recovery" in shown.rationale
    assert snapshot(gov.runtime) == before
    assert len(gov.gateway().calls) == calls


async def test_an_unreachable_sync_service_holds_the_reconciler(recon: Recon) -> None:
    gov = recon.gov
    await recon.policy(
        "retry-only",
        res.GovernancePolicySpec(
            trigger_state=FRE, actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB)], enabled=True
        ),
    )
    recon.sync.double.available = False
    recon.sync.double.add(job_record("job_held", FRE))
    reconciler = gov.module.reconciler
    await eventually(lambda: reconciler.last_error, lambda e: e.startswith("UNAVAILABLE"))
    assert await recon.decisions() == []
    assert recon.cursor() == 0
    recon.sync.double.available = True
    await eventually(recon.decisions, lambda d: len(d) == 1)
    await eventually(lambda: reconciler.last_error, lambda e: e == "")  # its round ends


def _fenced(loop: str) -> float:
    return REGISTRY.get_sample_value("ppos_fenced_writes_total", {"loop": loop}) or 0.0


async def test_a_replaced_leader_writes_nothing_and_the_lead_is_taken_again(
    recon: Recon,
) -> None:
    gov = recon.gov
    await recon.policy(
        "retry-only",
        res.GovernancePolicySpec(
            trigger_state=FRE, actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB)], enabled=True
        ),
    )
    recon.sync.double.add(job_record("job_1", FRE))
    await eventually(recon.decisions, lambda d: len(d) == 1)
    refused_before = _fenced("governance-reconciler")
    # Another replica took the lead while this one was frozen: a new generation.
    gov.runtime.db.write_sync(
        lambda s: s.execute(
            text(
                "UPDATE leader_leases SET generation = generation + 1 "
                "WHERE name = 'governance-reconciler'"
            )
        )
    )
    stale = job_view(rs_pb.SyncedJob(record=job_record("job_2", FRE), sync_sequence=2))
    with pytest.raises(LeadershipLost):
        await gov.module.reconciler.decide(stale)
    assert count(gov.runtime, "governance_decisions", "job_id = 'job_2'") == 0
    assert (
        count(
            gov.runtime,
            "outbox_commands",
            "decision_id NOT IN (SELECT decision_id FROM governance_decisions)",
        )
        == 0
    )
    assert _fenced("governance-reconciler") == refused_before + 1
    # This replica steps down; holding the lock again it takes a new generation.
    recon.sync.double.add(job_record("job_2", FRE))
    decisions = await eventually(recon.decisions, lambda d: len(d) == 2)
    assert [d.job.job_id for d in decisions] == ["job_1", "job_2"]
