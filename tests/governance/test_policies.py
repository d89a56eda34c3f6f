"""Governance policies: what may be configured, versions, scopes, and what is refused."""

from __future__ import annotations

import grpc

from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res
from ppos.preflight.v1 import job_pb2
from tests.governance.conftest import Governed
from tests.governance.support import details, refused, settled, snapshot

FRE = job_pb2.GOVERNANCE_STATE_FAILED_RUNTIME_ENVIRONMENT
FINDINGS = job_pb2.GOVERNANCE_STATE_COMPLETED_WITH_FINDINGS
DEGRADED = job_pb2.GOVERNANCE_STATE_DEGRADED


def action(kind: int, **parameters: str) -> res.PolicyAction:
    return res.PolicyAction(kind=kind, parameters=parameters)


def recovery_spec(**changes: object) -> res.GovernancePolicySpec:
    spec = res.GovernancePolicySpec(
        trigger_state=FRE,
        actions=[
            action(res.POLICY_ACTION_KIND_REIMAGE_NODE),
            action(res.POLICY_ACTION_KIND_RETRY_JOB),
        ],
        enabled=True,
        node_failure_threshold=3,
        node_failure_window_seconds=600,
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


async def test_policy_lifecycle_with_versions(gov: Governed) -> None:
    created = await gov.operator.SetGovernancePolicy(
        pb.SetGovernancePolicyRequest(policy_id="env-recovery", spec=recovery_spec())
    )
    policy = created.policy
    assert policy.meta.resource_version == "1"
    assert [a.kind for a in policy.spec.actions] == [
        res.POLICY_ACTION_KIND_REIMAGE_NODE,
        res.POLICY_ACTION_KIND_RETRY_JOB,
    ]
    # Creating again without a version is refused: say which version you replace.
    error = await refused(
        gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(policy_id="env-recovery", spec=recovery_spec())
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    replaced = await gov.operator.SetGovernancePolicy(
        pb.SetGovernancePolicyRequest(
            policy_id="env-recovery",
            spec=recovery_spec(enabled=False),
            expected_resource_version="1",
        )
    )
    assert not replaced.policy.spec.enabled
    assert replaced.policy.meta.generation == 2
    error = await refused(
        gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="env-recovery", spec=recovery_spec(), expected_resource_version="1"
            )
        )
    )
    assert details(error)["reason"] == "STALE_RESOURCE_VERSION"
    # One policy per scope and state.
    error = await refused(
        gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(policy_id="another", spec=recovery_spec())
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(error)["reason"] == "POLICY_SCOPE_TAKEN"
    listed = await gov.operator.ListGovernancePolicies(pb.ListGovernancePoliciesRequest())
    assert [p.policy_id for p in listed.policies] == ["env-recovery"]
    deleted = await gov.operator.DeleteGovernancePolicy(
        pb.DeleteGovernancePolicyRequest(
            policy_id="env-recovery",
            expected_resource_version=replaced.policy.meta.resource_version,
        )
    )
    assert deleted.policy.policy_id == "env-recovery"
    audit = await gov.operator.ListAuditEntries(
        pb.ListAuditEntriesRequest(resource_kind="policy", resource_id="env-recovery")
    )
    assert [(bool(e.before_json), bool(e.after_json)) for e in audit.entries] == [
        (False, True),
        (True, True),
        (True, False),
    ]


async def test_policies_that_cannot_work_are_refused_field_by_field(gov: Governed) -> None:
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    cases = {
        "unknown action kind": (
            res.GovernancePolicySpec(trigger_state=FRE, actions=[action(99)]),
            "spec.actions[0].kind",
        ),
        "unset action kind": (
            res.GovernancePolicySpec(trigger_state=FRE, actions=[action(0)]),
            "spec.actions[0].kind",
        ),
        "findings are never retried": (
            res.GovernancePolicySpec(
                trigger_state=FINDINGS, actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB)]
            ),
            "spec.actions[0].kind",
        ),
        "no trigger": (
            res.GovernancePolicySpec(actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB)]),
            "spec.trigger_state",
        ),
        "COMPLETED triggers nothing": (
            res.GovernancePolicySpec(
                trigger_state=job_pb2.GOVERNANCE_STATE_COMPLETED,
                actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB)],
            ),
            "spec.trigger_state",
        ),
        "no actions": (res.GovernancePolicySpec(trigger_state=FRE), "spec.actions"),
        "unknown parameter": (
            res.GovernancePolicySpec(
                trigger_state=FRE, actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB, force="yes")]
            ),
            "spec.actions[0].parameters['force']",
        ),
        "capacity factor out of range": (
            res.GovernancePolicySpec(
                trigger_state=DEGRADED,
                actions=[
                    action(res.POLICY_ACTION_KIND_LOWER_QUEUE_CAPACITY, capacity_factor="1.5")
                ],
            ),
            "spec.actions[0].parameters['capacity_factor']",
        ),
        "threshold without re-image": (
            res.GovernancePolicySpec(
                trigger_state=FRE,
                actions=[action(res.POLICY_ACTION_KIND_RETRY_JOB)],
                node_failure_threshold=3,
                node_failure_window_seconds=60,
            ),
            "spec.node_failure_threshold",
        ),
        "reroute needs one target": (
            res.GovernancePolicySpec(
                trigger_state=DEGRADED, actions=[action(res.POLICY_ACTION_KIND_REROUTE_JOB)]
            ),
            "spec.actions[0].parameters",
        ),
        "bad digest": (
            res.GovernancePolicySpec(
                trigger_state=FRE,
                actions=[action(res.POLICY_ACTION_KIND_REIMAGE_NODE, image="w:1", digest="md5:x")],
            ),
            "spec.actions[0].parameters['digest']",
        ),
    }
    for name, (spec, field) in cases.items():
        error = await refused(
            gov.operator.SetGovernancePolicy(
                pb.SetGovernancePolicyRequest(policy_id="bad-policy", spec=spec)
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert field in details(error)["fields"], (name, details(error)["fields"])
    assert snapshot(gov.runtime) == before
    # References that do not exist: partners, tenants, regions.
    error = await refused(
        gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="bad-policy",
                spec=res.GovernancePolicySpec(
                    tenant_id="ghost",
                    trigger_state=FINDINGS,
                    actions=[action(res.POLICY_ACTION_KIND_ROUTE_TO_REVIEW, partner_id="nobody")],
                ),
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert {t for t, _, _ in details(error)["preconditions"]} == {
        "UNKNOWN_TENANT",
        "UNKNOWN_PARTNER",
    }
    await gov.operator.CreatePartner(
        pb.CreatePartnerRequest(partner_id="plain-shop", region="eu-west-1")
    )
    await settled(gov.runtime)
    before = snapshot(gov.runtime)
    error = await refused(
        gov.operator.SetGovernancePolicy(
            pb.SetGovernancePolicyRequest(
                policy_id="bad-policy",
                spec=res.GovernancePolicySpec(
                    trigger_state=FINDINGS,
                    actions=[
                        action(res.POLICY_ACTION_KIND_ROUTE_TO_REVIEW, partner_id="plain-shop")
                    ],
                ),
            )
        )
    )
    assert details(error)["reason"] == "PARTNER_REFUSES_REVIEW"
    assert snapshot(gov.runtime) == before
