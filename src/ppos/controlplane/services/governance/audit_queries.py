"""The audit log queries behind ListAuditEntries and WatchAuditEntries."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ppos.controlplane.storage.audit import AuditEntry

# Entries one watch read takes at most.
WATCH_BATCH = 500


def newest_id(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(AuditEntry.audit_id), 0))) or 0)


def entries_after(after: int, session: Session) -> list[AuditEntry]:
    """The next watch batch after `after`, in id order."""
    query = (
        select(AuditEntry)
        .where(AuditEntry.audit_id > after)
        .order_by(AuditEntry.audit_id)
        .limit(WATCH_BATCH)
    )
    return list(session.scalars(query))


def entries_page(
    session: Session, after: int, resource_kind: str, resource_id: str, size: int
) -> list[AuditEntry]:
    """Up to size + 1 entries after `after` (one more says more follow), in id order."""
    query = select(AuditEntry).where(AuditEntry.audit_id > after)
    if resource_kind:
        query = query.where(AuditEntry.resource_kind == resource_kind)
    if resource_id:
        query = query.where(AuditEntry.resource_id == resource_id)
    return list(session.scalars(query.order_by(AuditEntry.audit_id).limit(size + 1)))
