"""RetryCommand's unit of work: a FAILED command goes back to PENDING, by hand."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import FailedPrecondition
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.services.governance.common import record_change
from ppos.controlplane.services.governance.models import OutboxRow
from ppos.controlplane.services.governance.outbox import store
from ppos.controlplane.services.governance.snapshots import command_snapshot


def retry_failed_command(session: Session, command_id: str, reason: str) -> OutboxRow:
    row = store.command(session, command_id, lock=True)
    if row.state != "FAILED":
        raise FailedPrecondition(
            f"command {row.command_id} is {row.state}; only FAILED commands are retried "
            "by hand (the dispatcher retries the others itself)",
            reason="COMMAND_NOT_FAILED",
        )
    before = command_snapshot(row)
    now = utcnow()
    row.state = "PENDING"
    row.next_attempt_at = now
    row.last_error = f"retry requested: {reason}; before: {row.last_error}"[:2000]
    row.updated_at = now
    record_change(session, "command", row.command_id, before, command_snapshot(row), reason=reason)
    return row
