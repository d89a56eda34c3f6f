"""CancelAdminJob's unit of work: a pending job ends now, a running one is asked to stop."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.services.governance.admin_jobs import store
from ppos.controlplane.services.governance.common import record_change
from ppos.controlplane.services.governance.enums import TERMINAL_ADMIN_JOB_STATES
from ppos.controlplane.services.governance.models import AdminJobRow
from ppos.controlplane.services.governance.snapshots import admin_job_snapshot


def cancel_admin_job(session: Session, admin_job_id: str, reason: str) -> AdminJobRow:
    row = store.admin_job(session, admin_job_id, lock=True)
    if row.state in TERMINAL_ADMIN_JOB_STATES:
        raise FailedPrecondition(
            f"admin job {row.admin_job_id} already ended ({row.state})",
            reason="ADMIN_JOB_ENDED",
        )
    if row.state == "CANCELLING":
        return row
    before = admin_job_snapshot(row)
    now = utcnow()
    row.cancel_reason = reason
    if row.state == "PENDING":
        row.state = "CANCELLED"
        row.progress_message = f"cancelled before it started ({reason})"
        row.finished_at = now
    else:
        row.state = "CANCELLING"
    row.resource_version += 1
    row.updated_at = now
    record_change(
        session,
        "admin_job",
        row.admin_job_id,
        before,
        admin_job_snapshot(row),
        reason=reason,
    )
    return row
