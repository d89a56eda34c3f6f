"""StartAdminJob's unit of work: one job per conflict scope at a time, idempotent."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition, PreconditionViolation
from ppos.controlplane.core.ids import new_id
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.governance.admin_jobs.kinds import conflict_scope
from ppos.controlplane.services.governance.common import record_change
from ppos.controlplane.services.governance.enums import TERMINAL_ADMIN_JOB_STATES
from ppos.controlplane.services.governance.idempotency import IdempotentCall
from ppos.controlplane.services.governance.models import AdminJobRow
from ppos.controlplane.services.governance.snapshots import admin_job_snapshot


def start_admin_job(
    session: Session,
    call: IdempotentCall,
    kind: str,
    parameters: dict[str, str],
    actor: Principal,
    request_id: str,
) -> tuple[AdminJobRow, bool]:
    """The job, and whether it was created (False: the earlier call's job)."""
    prior = call.earlier(session)
    if prior is not None:
        row = session.get(AdminJobRow, prior.resource_id)
        if row is not None:
            return row, False
    refuse_conflicts(session, conflict_scope(kind, parameters))
    row = new_admin_job_row(kind, parameters, actor, request_id)
    session.add(row)
    session.flush()
    record_change(
        session,
        "admin_job",
        row.admin_job_id,
        None,
        admin_job_snapshot(row),
        reason=parameters.get("reason", ""),
    )
    call.remember(session, row.admin_job_id)
    return row, True


def refuse_conflicts(session: Session, scope: str) -> None:
    """FAILED_PRECONDITION when an unfinished job works on the same scope."""
    active = session.scalars(
        select(AdminJobRow).where(AdminJobRow.state.not_in(TERMINAL_ADMIN_JOB_STATES))
    ).all()
    for other in active:
        if conflict_scope(other.kind, dict(other.parameters)) == scope:
            raise FailedPrecondition(
                f"admin job {other.admin_job_id} ({other.kind}, {other.state}) already "
                f"works on {scope}; wait for it or cancel it first",
                [
                    PreconditionViolation(
                        "ADMIN_JOB_CONFLICT", f"admin_job/{other.admin_job_id}", scope
                    )
                ],
                reason="ADMIN_JOB_CONFLICT",
                metadata={"admin_job_id": other.admin_job_id},
            )


def new_admin_job_row(
    kind: str, parameters: dict[str, str], actor: Principal, request_id: str
) -> AdminJobRow:
    now = utcnow()
    return AdminJobRow(
        admin_job_id=new_id("job"),
        kind=kind,
        parameters=parameters,
        state="PENDING",
        progress_done=0,
        progress_total=0,
        progress_message="waiting for a runner",
        checkpoint="",
        result_json="",
        error="",
        cancel_reason="",
        started_by_kind=actor.kind.value,
        started_by_name=actor.name,
        request_id=request_id,
        lease_owner="",
        lease_expires_at=None,
        runs=0,
        resource_version=1,
        created_at=now,
        updated_at=now,
        finished_at=None,
    )
