"""A policy enabled or changed evaluates the jobs synced before it (its backfill).

The reconciler reads each synced job once; these tests sync jobs first, let the
reconciler pass them, then enable a policy: its decisions appear for the
earlier jobs, once each, across a restart of the plane and a later change of
the policy. The dry run's count is what enabling then acts on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.controlplane.services.governance.policy import backfill
from ppos.preflight.v1 import job_pb2
from tests.governance.conftest import Governed, StartGoverned, public_verifier
from tests.governance.support import count, eventually, settled
from tests.governance.sync_double import RunningDouble, job_record, start_sync_double

FRE = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
DEGRADED = job_pb2.GOVERNANCE_STATE_DEGRADED
RETRY = res.PolicyAction(kind=res.POLICY_ACTION_KIND_RETRY_JOB)


def cursor(gov: Governed) -> int:
    return count(gov.runtime, "governance_reconciler_cursor", "last_sync_sequence >= 4")


async def decisions(gov: Governed) -> list[res.Decision]:
    reply = await gov.operator.ListDecisions(pb.ListDecisionsRequest(policy_id="retry"))
    return list(reply.decisions)


async def start(start_governed: StartGoverned, sync: RunningDouble, page_size: str) -> Governed:
    return await start_governed(
        {
            "PPOS_SERVICES": "governance,noderegistry",
            "PPOS_PEER_REGISTRYSYNC": sync.address,
            "PPOS_RECONCILER_PAGE_SIZE": page_size,
        }
    )


async def test_enabling_a_policy_decides_the_jobs_synced_before_once_each_across_a_restart(
    start_governed: StartGoverned, tmp_path: Path
) -> None:
    sync = await start_sync_double(public_verifier(tmp_path / "data" / "keys"))
    try:
        # One page per round, so the restart below lands in the middle of the backfill.
        gov = await start(start_governed, sync, "1")
        for n in range(3):
            sync.double.add(job_record(f"job_{n}", FRE, node_id="node_x"))
        sync.double.add(job_record("job_ok", DEGRADED))  # another state: not this policy's
        await eventually(lambda: cursor(gov), lambda n: n == 1)
        spec = res.GovernancePolicySpec(trigger_state=FRE, actions=[RETRY], enabled=False)
        set_reply = await gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(policy_id="retry", spec=spec)
        )
        assert await decisions(gov) == [], "a disabled policy decides nothing"
        dry = await gov.operator.DryRunGovernancePolicy(
            pb.DryRunGovernancePolicyRequest(policy_id="retry")
        )
        assert (dry.backfill_jobs, dry.backfill_limit) == (3, backfill.LIMIT)
        spec.enabled = True
        await gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="retry",
                spec=spec,
                expected_resource_version=set_reply.policy.meta.resource_version,
            )
        )
        await eventually(lambda: decisions(gov), lambda d: len(d) >= 1)
        await gov.plane.server.stop(grace=1)  # a restart, the backfill perhaps half done
        gov = await start(start_governed, sync, "1")
        found = await eventually(lambda: decisions(gov), lambda d: len(d) == 3)
        assert sorted(d.job.job_id for d in found) == ["job_0", "job_1", "job_2"]
        await eventually(
            lambda: count(gov.runtime, "governance_policy_backfills"), lambda n: n == 0
        )
        after = await gov.operator.DryRunGovernancePolicy(
            pb.DryRunGovernancePolicyRequest(policy_id="retry")
        )
        assert after.backfill_jobs == 0, "every earlier job is decided: nothing left to act on"
        # Changing the policy backfills again; jobs it decided are not acted on twice.
        current = await gov.operator.GetGovernancePolicy(
            pb.GetGovernancePolicyRequest(policy_id="retry")
        )
        await gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="retry",
                spec=spec,
                expected_resource_version=current.policy.meta.resource_version,
            )
        )
        await eventually(
            lambda: count(gov.runtime, "audit_log", "method = 'policy:backfill'"),
            lambda n: n >= 2,
        )
        await settled(gov.runtime)
        assert len(await decisions(gov)) == 3
        assert count(gov.runtime, "governance_decisions") == 3
        assert count(gov.runtime, "outbox_commands") == 3, "one retry per earlier job"
    finally:
        await sync.server.stop(0)


async def test_a_policy_that_another_owns_or_a_disabled_one_backfills_nothing(
    start_governed: StartGoverned, tmp_path: Path
) -> None:
    sync = await start_sync_double(public_verifier(tmp_path / "data" / "keys"))
    try:
        gov = await start(start_governed, sync, "100")
        sync.double.add(job_record("job_a", FRE, tenant_id="acme"))
        sync.double.add(job_record("job_b", FRE, tenant_id="globex"))
        await eventually(
            lambda: count(gov.runtime, "governance_reconciler_cursor", "last_sync_sequence >= 2"),
            lambda n: n == 1,
        )
        # acme has its own (disabled) policy: it wins over the global one for acme's jobs.
        await gov.operator.ProvisionTenant(
            pb.ProvisionTenantRequest(
                request_id="p-acme",
                tenant_id="acme",
                spec=res.TenantSpec(display_name="Acme", default_region="eu-west-1"),
            )
        )
        await gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="acme-off",
                spec=res.GovernancePolicySpec(
                    trigger_state=FRE, actions=[RETRY], enabled=False, tenant_id="acme"
                ),
            )
        )
        await gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="retry",
                spec=res.GovernancePolicySpec(trigger_state=FRE, actions=[RETRY], enabled=True),
            )
        )
        [decision] = await eventually(lambda: decisions(gov), lambda d: len(d) == 1)
        assert decision.job.job_id == "job_b"
        await eventually(
            lambda: count(gov.runtime, "governance_policy_backfills"), lambda n: n == 0
        )
        assert count(gov.runtime, "governance_decisions") == 1
    finally:
        await sync.server.stop(0)


async def test_a_backfill_stops_at_its_limit_and_says_where(
    start_governed: StartGoverned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill, "LIMIT", 2)  # the plane runs in this process
    sync = await start_sync_double(public_verifier(tmp_path / "data" / "keys"))
    try:
        gov = await start(start_governed, sync, "100")
        for n in range(3):
            sync.double.add(job_record(f"job_{n}", FRE))
        await eventually(
            lambda: count(gov.runtime, "governance_reconciler_cursor", "last_sync_sequence >= 3"),
            lambda n: n == 1,
        )
        await gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="retry",
                spec=res.GovernancePolicySpec(trigger_state=FRE, actions=[RETRY], enabled=True),
            )
        )
        await eventually(
            lambda: count(gov.runtime, "audit_log", "method = 'policy:backfill'"),
            lambda n: n == 1,
        )
        assert sorted(d.job.job_id for d in await decisions(gov)) == ["job_0", "job_1"]
        entries = await gov.operator.ListAuditEntries(
            pb.ListAuditEntriesRequest(resource_kind="policy", resource_id="retry")
        )
        [end] = [e for e in entries.entries if e.method == "policy:backfill"]
        summary = json.loads(end.after_json)["backfill"]
        assert summary["capped"] is True
        assert summary["jobs_decided"] == 2
        assert "not evaluated" in summary["note"]
        dry = await gov.operator.DryRunGovernancePolicy(
            pb.DryRunGovernancePolicyRequest(policy_id="retry")
        )
        assert dry.backfill_jobs == 1, "the job past the limit is what a re-enable would act on"
    finally:
        await sync.server.stop(0)
