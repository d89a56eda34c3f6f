"""SetGovernancePolicy's unit of work: create or replace one policy.

One policy per scope (a tenant, or global) and governance state; replacing
names the current version.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import AlreadyExists, NotFound
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.core.versions import check_version
from ppos.controlplane.governance.v1 import governance_service_pb2 as pb
from ppos.controlplane.governance.v1 import resources_pb2 as res_pb
from ppos.controlplane.services.governance.common import bump, record_change
from ppos.controlplane.services.governance.convert import policy_to_proto
from ppos.controlplane.services.governance.models import PolicyRow
from ppos.controlplane.services.governance.policy import backfill
from ppos.controlplane.services.governance.policy.specs import ParsedPolicy
from ppos.controlplane.services.governance.resources import lookups
from ppos.controlplane.services.governance.snapshots import policy_snapshot


def set_policy(
    session: Session,
    request: pb.SetGovernancePolicyRequest,
    parsed: ParsedPolicy,
    regions: list[str],
) -> PolicyRow:
    row = _current(session, request)
    check_policy_references(session, parsed, regions)
    _refuse_taken_scope(session, parsed, request.policy_id)
    now = utcnow()
    before = policy_snapshot(row) if row is not None else None
    if row is None:
        row = PolicyRow(
            policy_id=request.policy_id,
            resource_version=1,
            generation=1,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    else:
        bump(row, spec=True)
    row.tenant_scope = parsed.tenant_scope
    row.trigger_state = parsed.trigger_state
    row.actions = parsed.actions
    row.enabled = parsed.enabled
    row.node_failure_threshold = parsed.node_failure_threshold
    row.node_failure_window_seconds = parsed.node_failure_window_seconds
    session.flush()
    record_change(session, "policy", row.policy_id, before, policy_snapshot(row))
    backfill.start(session, row)  # enabled or changed: evaluate the jobs synced before
    return row


def _current(session: Session, request: pb.SetGovernancePolicyRequest) -> PolicyRow | None:
    """The policy being replaced (None: a new one), at the version the caller names."""
    row = session.get(PolicyRow, request.policy_id, with_for_update=True)
    if row is None and request.expected_resource_version:
        raise NotFound("governance policy", request.policy_id)
    if row is not None:
        if not request.expected_resource_version:
            raise AlreadyExists(
                "governance policy",
                request.policy_id,
                f"governance policy {request.policy_id!r} exists: pass its "
                "meta.resource_version as expected_resource_version to replace it",
            )
        check_version(
            "governance policy",
            row.policy_id,
            request.expected_resource_version,
            row.resource_version,
            required=True,
        )
    return row


def _refuse_taken_scope(session: Session, parsed: ParsedPolicy, policy_id: str) -> None:
    holder = session.scalars(
        select(PolicyRow).where(
            PolicyRow.tenant_scope == parsed.tenant_scope,
            PolicyRow.trigger_state == parsed.trigger_state,
            PolicyRow.policy_id != policy_id,
        )
    ).first()
    if holder is not None:
        scope = f"tenant {parsed.tenant_scope!r}" if parsed.tenant_scope else "global"
        raise AlreadyExists(
            "governance policy",
            holder.policy_id,
            f"the {scope} policy for {parsed.trigger_state} is {holder.policy_id!r}; "
            "one policy per scope and state: replace that one instead",
            reason="POLICY_SCOPE_TAKEN",
        )


def check_policy_references(
    session: Session, parsed: ParsedPolicy, regions: list[str], field: str = "spec"
) -> None:
    refs = lookups.References(session)
    refs.tenant(f"{field}.tenant_id", parsed.tenant_scope)
    for index, action in enumerate(parsed.actions):
        params = action["parameters"]
        path = f"{field}.actions[{index}].parameters"
        if action["kind"] == "REROUTE_JOB":
            refs.partner(f"{path}['target_partner_id']", params.get("target_partner_id", ""))
            refs.region(f"{path}['target_region']", params.get("target_region", ""), regions)
        if action["kind"] == "ROUTE_TO_REVIEW":
            refs.partner(f"{path}['partner_id']", params.get("partner_id", ""), review=True)
    refs.raise_if_any()


def delete_policy(
    session: Session, request: pb.DeleteGovernancePolicyRequest
) -> res_pb.GovernancePolicy:
    """The policy as it was (the reply), after its removal and audit entry."""
    row = lookups.policy(session, request.policy_id)
    check_version(
        "governance policy",
        row.policy_id,
        request.expected_resource_version,
        row.resource_version,
        required=True,
    )
    shown = policy_to_proto(row)
    record_change(session, "policy", row.policy_id, policy_snapshot(row), None)
    backfill.stop(session, row.policy_id)
    session.delete(row)
    return shown
