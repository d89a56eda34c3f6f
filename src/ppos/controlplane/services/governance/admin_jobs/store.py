"""The admin job store: the queries of admin jobs for operators."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import NotFound
from ppos.controlplane.services.governance.models import AdminJobRow
from ppos.controlplane.services.governance.paging import Page


def admin_job_page(
    session: Session, page: Page, *, kinds: list[str], states: list[str]
) -> list[AdminJobRow]:
    """One page of admin jobs (size + 1 when more follow), newest first."""
    query = select(AdminJobRow)
    if kinds:
        query = query.where(AdminJobRow.kind.in_(kinds))
    if states:
        query = query.where(AdminJobRow.state.in_(states))
    query = page.window(query, AdminJobRow.created_at, AdminJobRow.admin_job_id, newest_first=True)
    return list(session.scalars(query))


def admin_job(session: Session, admin_job_id: str, *, lock: bool = False) -> AdminJobRow:
    """The admin job (NOT_FOUND if there is none), locked for update when `lock`."""
    row = session.get(AdminJobRow, admin_job_id, with_for_update=lock or None)
    if row is None:
        raise NotFound("admin job", admin_job_id)
    return row
