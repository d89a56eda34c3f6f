"""The reconciler's position in the synced jobs (a RegistrySync sequence), kept in the database."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.services.governance.models import ReconcilerCursorRow

CURSOR = "synced-jobs"


def read_cursor(session: Session) -> int:
    row = session.get(ReconcilerCursorRow, CURSOR)
    return row.last_sync_sequence if row is not None else 0


def advance_cursor(session: Session, sequence: int) -> None:
    row = session.get(ReconcilerCursorRow, CURSOR, with_for_update=True)
    if row is None:
        session.add(
            ReconcilerCursorRow(name=CURSOR, last_sync_sequence=sequence, updated_at=utcnow())
        )
    elif sequence > row.last_sync_sequence:
        row.last_sync_sequence = sequence
        row.updated_at = utcnow()
