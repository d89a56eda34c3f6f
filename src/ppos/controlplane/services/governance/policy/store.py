"""The policy store: the queries of policies and of the decisions they made."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppos.controlplane.services.governance.models import DecisionRow, PolicyRow
from ppos.controlplane.services.governance.paging import Page


def policy_page(session: Session, page: Page, *, tenant_id: str) -> list[PolicyRow]:
    """One page of policies (size + 1 when more follow), by policy id."""
    query = select(PolicyRow)
    if tenant_id:
        query = query.where(PolicyRow.tenant_scope == tenant_id)
    return list(session.scalars(page.window(query, PolicyRow.policy_id)))


def decision_page(
    session: Session, page: Page, *, job_id: str, policy_id: str, region: str
) -> list[DecisionRow]:
    """One page of decisions (size + 1 when more follow), newest first."""
    query = select(DecisionRow)
    if job_id:
        query = query.where(DecisionRow.job_id == job_id)
    if policy_id:
        query = query.where(DecisionRow.policy_id == policy_id)
    if region:
        query = query.where(DecisionRow.region == region)
    query = page.window(query, DecisionRow.created_at, DecisionRow.decision_id, newest_first=True)
    return list(session.scalars(query))
