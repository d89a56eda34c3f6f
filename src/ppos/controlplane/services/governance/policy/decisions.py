"""Choosing a policy for a synced job, gathering what the plan needs, writing it down.

`write_decision` puts the decision, its outbox commands, any queue change and
their audit entries into the caller's one transaction. The decision's unique
key (region, job, revision, policy) means a second attempt to decide the same
thing fails at the database and nothing of it is written twice.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import Principal, PrincipalKind
from ppos.controlplane.services.governance.common import bump, record_change
from ppos.controlplane.services.governance.models import (
    DecisionRow,
    PolicyRow,
    QueueRow,
    TenantRow,
)
from ppos.controlplane.services.governance.outbox import commands
from ppos.controlplane.services.governance.peers import NodeFacts
from ppos.controlplane.services.governance.policy.evaluation import (
    Context,
    JobView,
    Plan,
    PolicyView,
)
from ppos.controlplane.services.governance.resources.store import push_queue
from ppos.controlplane.services.governance.snapshots import queue_snapshot


def policy_view(row: PolicyRow) -> PolicyView:
    return PolicyView(
        policy_id=row.policy_id,
        generation=row.generation,
        tenant_scope=row.tenant_scope,
        trigger_state=row.trigger_state,
        actions=list(row.actions),
        enabled=row.enabled,
        node_failure_threshold=row.node_failure_threshold,
        node_failure_window_seconds=row.node_failure_window_seconds,
    )


def applicable_policy(session: Session, tenant_id: str, state: str) -> PolicyRow | None:
    """The tenant's policy for the state if it has one (enabled or not), else the global one."""
    rows = session.scalars(
        select(PolicyRow).where(
            PolicyRow.trigger_state == state, PolicyRow.tenant_scope.in_([tenant_id, ""])
        )
    ).all()
    by_scope = {row.tenant_scope: row for row in rows}
    return by_scope.get(tenant_id) if tenant_id in by_scope else by_scope.get("")


def policy_by_id(session: Session, policy_id: str) -> PolicyRow | None:
    return session.get(PolicyRow, policy_id)


def already_decided(session: Session, job: JobView, policy_id: str) -> bool:
    found = session.scalar(
        select(DecisionRow.decision_id).where(
            DecisionRow.region == job.region,
            DecisionRow.job_id == job.job_id,
            DecisionRow.revision == job.revision,
            DecisionRow.policy_id == policy_id,
        )
    )
    return found is not None


def policy_actor(policy_id: str) -> Principal:
    return Principal(PrincipalKind.POLICY, policy_id)


def _record_time(job: JobView) -> dt.datetime:
    return dt.datetime.fromtimestamp(job.record_time_epoch, dt.UTC)


def gather_context(session: Session, job: JobView, policy: PolicyView, node: NodeFacts) -> Context:
    """Everything beyond the job and policy the plan depends on, read in `session`."""
    failures = 1
    cordoned_by = ""
    if job.node_id and policy.node_failure_threshold > 0:
        now = _record_time(job)
        since = now - dt.timedelta(seconds=policy.node_failure_window_seconds)
        earlier = session.execute(
            select(
                DecisionRow.job_id,
                DecisionRow.revision,
                DecisionRow.node_action,
                DecisionRow.decision_id,
            )
            .where(
                DecisionRow.region == job.region,
                DecisionRow.node_id == job.node_id,
                DecisionRow.governance_state == job.governance_state,
                DecisionRow.record_time > since,
                DecisionRow.record_time <= now,
            )
            .order_by(DecisionRow.record_time)
        ).all()
        attempts = {(job_id, revision) for job_id, revision, _, _ in earlier}
        attempts.discard((job.job_id, job.revision))
        failures = len(attempts) + 1
        cordons = [decision_id for _, _, action, decision_id in earlier if action == "CORDON"]
        cordoned_by = cordons[-1] if cordons else ""
    queue = session.get(QueueRow, (job.tenant_id, job.queue_id)) if job.queue_id else None
    return Context(
        node_failures=failures,
        node_cordoned_by=cordoned_by,
        node_container=(node.image, node.digest) if node.known else None,
        node_known=node.known,
        queue=(queue.capacity, queue.state) if queue is not None else None,
    )


def write_decision(
    session: Session, job: JobView, policy: PolicyView, plan: Plan, decision_id: str
) -> DecisionRow:
    """Decision + commands + queue changes + audit, in the caller's transaction."""
    actor = policy_actor(policy.policy_id)
    method = f"policy:{policy.policy_id}"
    actions = []
    queued = []
    for step in plan.steps:
        entry = {"kind": step.kind, "description": step.description, "target": step.target}
        if step.command is not None:
            queued.append((entry, step.command))
        elif step.new_capacity is not None:
            command_id = _lower_capacity(
                session, job, step.new_capacity, actor, method, decision_id
            )
            if command_id:
                entry["command_id"] = command_id
            else:
                entry["description"] += " (not needed any more: already at or below it)"
        actions.append(entry)
    decision = _decision_row(job, policy, plan, decision_id)
    # Decisions are append-only: the row is inserted once, complete, at the
    # flush below (before its commands, which refer to it).
    session.add(decision)
    for entry, command in queued:
        row = commands.enqueue(session, command, actor=actor, decision_id=decision_id)
        entry["command_id"] = row.command_id
    decision.actions = [dict(a) for a in actions]
    session.flush()
    record_change(
        session,
        "decision",
        decision_id,
        None,
        {
            "job": f"{job.region}/{job.job_id}/{job.revision}",
            "payload_sha256": job.payload_sha256.hex(),
            "policy_id": policy.policy_id,
            "policy_generation": policy.generation,
            "actions": decision.actions,
            "rationale": decision.rationale,
        },
        method=method,
        actor=actor,
    )
    return decision


def _decision_row(job: JobView, policy: PolicyView, plan: Plan, decision_id: str) -> DecisionRow:
    return DecisionRow(
        decision_id=decision_id,
        region=job.region,
        job_id=job.job_id,
        revision=job.revision,
        policy_id=policy.policy_id,
        policy_generation=policy.generation,
        tenant_id=job.tenant_id,
        queue_id=job.queue_id,
        node_id=job.node_id,
        governance_state=job.governance_state,
        payload_sha256=job.payload_sha256,
        sync_sequence=job.sync_sequence,
        record_time=_record_time(job),
        node_action=plan.node_action,
        actions=[],
        rationale=plan.rationale(job, policy),
        created_at=utcnow(),
    )


def _lower_capacity(
    session: Session,
    job: JobView,
    capacity: int,
    actor: Principal,
    method: str,
    decision_id: str,
) -> str:
    """Lower the queue (never raise it); returns the ApplyQueuePolicy command id, or ''."""
    queue = session.get(QueueRow, (job.tenant_id, job.queue_id), with_for_update=True)
    tenant = session.get(TenantRow, job.tenant_id)
    if queue is None or tenant is None or tenant.phase == "RETIRED":
        return ""
    if capacity >= queue.capacity:
        return ""  # lowered further meanwhile (by an operator or another decision)
    before = queue_snapshot(queue)
    queue.capacity = capacity
    queue.reason = f"{method}: {job.governance_state} job {job.job_id}@{job.revision}"
    bump(queue, spec=True)
    record_change(
        session,
        "queue",
        f"{queue.tenant_id}/{queue.queue_id}",
        before,
        queue_snapshot(queue),
        method=method,
        actor=actor,
    )
    return push_queue(session, queue, tenant.phase, queue.reason, actor, decision_id)
