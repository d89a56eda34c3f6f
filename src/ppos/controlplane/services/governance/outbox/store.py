"""The outbox store: the queries of outbox commands for operators."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import NotFound
from ppos.controlplane.services.governance.models import OutboxRow
from ppos.controlplane.services.governance.paging import Page


def command_page(
    session: Session, page: Page, *, states: list[str], target: str, decision_id: str
) -> list[OutboxRow]:
    """One page of commands (size + 1 when more follow), newest first."""
    query = select(OutboxRow)
    if states:
        query = query.where(OutboxRow.state.in_(states))
    if target:
        query = query.where(OutboxRow.target == target)
    if decision_id:
        query = query.where(OutboxRow.decision_id == decision_id)
    query = page.window(query, OutboxRow.created_at, OutboxRow.command_id, newest_first=True)
    return list(session.scalars(query))


def command(session: Session, command_id: str, *, lock: bool = False) -> OutboxRow:
    """The command (NOT_FOUND if there is none), locked for update when `lock`."""
    row = session.get(OutboxRow, command_id, with_for_update=lock or None)
    if row is None:
        raise NotFound("command", command_id)
    return row
