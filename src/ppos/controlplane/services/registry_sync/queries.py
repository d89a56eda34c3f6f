"""Read-side queries of the sync's tables (Session functions, read transactions)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from ppos.controlplane.core.errors import NotFound
from ppos.controlplane.services.registry_sync.models import (
    QuarantinedRecordRow,
    SweepRegionRow,
    SweepRow,
    SyncedJobRow,
    SyncRegionRow,
)
from ppos.controlplane.storage.leases import LeaderLeaseRow, database_now

# A page of jobs or quarantined records stops once it holds this many payload bytes
# (below the 4 MiB a default gRPC client accepts, unless one record is larger).
PAGE_BYTE_BUDGET = 3 * 1024 * 1024


def region_rows(session: Session, regions: Sequence[str]) -> dict[str, SyncRegionRow]:
    rows = session.scalars(select(SyncRegionRow).where(SyncRegionRow.region.in_(list(regions))))
    return {row.region: row for row in rows}


def recent_job_counts(session: Session, region: str, since: dt.datetime) -> dict[str, int]:
    """The region's jobs stored since `since`, by governance state: one range of
    ix_synced_jobs_region_synced_state, read from the index alone on PostgreSQL."""
    rows = session.execute(
        select(SyncedJobRow.governance_state, func.count())
        .where(SyncedJobRow.region == region, SyncedJobRow.synced_at >= since)
        .group_by(SyncedJobRow.governance_state)
    )
    return {state: int(count) for state, count in rows}


def leader_lease(session: Session, name: str) -> tuple[LeaderLeaseRow | None, dt.datetime]:
    """The loop's lease row (None before any lead) and the clock its expiry is read by."""
    row = session.get(LeaderLeaseRow, name)
    return row, database_now(session)


def synced_job(session: Session, region: str, job_id: str, revision: int) -> SyncedJobRow:
    query = select(SyncedJobRow).where(SyncedJobRow.region == region, SyncedJobRow.job_id == job_id)
    if revision:
        query = query.where(SyncedJobRow.revision == revision)
    else:
        query = query.order_by(SyncedJobRow.revision.desc()).limit(1)
    row = session.scalars(query).first()
    if row is None:
        name = f"{region}/{job_id}" + (f"@{revision}" if revision else "")
        raise NotFound("synced job", name)
    return row


def synced_jobs(
    session: Session,
    *,
    region: str,
    governance_states: Sequence[str],
    job_id: str,
    after_sequence: int,
    limit: int,
    with_payload: bool,
) -> tuple[list[tuple[SyncedJobRow, bytes | None]], bool]:
    """Rows after `after_sequence` in sync order (payloads within the byte budget), has_more."""
    query = (
        select(SyncedJobRow)
        .options(defer(SyncedJobRow.canonical_payload))
        .where(SyncedJobRow.sync_sequence > after_sequence)
        .order_by(SyncedJobRow.sync_sequence)
        .limit(limit + 1)
    )
    if region:
        query = query.where(SyncedJobRow.region == region)
    if governance_states:
        query = query.where(SyncedJobRow.governance_state.in_(list(governance_states)))
    if job_id:
        query = query.where(SyncedJobRow.job_id == job_id)
    rows = list(session.scalars(query))
    has_more = len(rows) > limit
    rows = rows[:limit]
    if not with_payload:
        return [(row, None) for row in rows], has_more
    kept: list[SyncedJobRow] = []
    total = 0
    for row in rows:
        if kept and total + row.payload_size > PAGE_BYTE_BUDGET:
            has_more = True
            break
        kept.append(row)
        total += row.payload_size
    payloads = dict(
        session.execute(
            select(SyncedJobRow.sync_sequence, SyncedJobRow.canonical_payload).where(
                SyncedJobRow.sync_sequence.in_([row.sync_sequence for row in kept])
            )
        ).all()
    )
    return [(row, bytes(payloads[row.sync_sequence])) for row in kept], has_more


def payload_of(session: Session, sync_sequence: int) -> bytes:
    value = session.scalar(
        select(SyncedJobRow.canonical_payload).where(SyncedJobRow.sync_sequence == sync_sequence)
    )
    return bytes(value) if value is not None else b""


def quarantined(
    session: Session, *, region: str, after_id: int, limit: int
) -> tuple[list[QuarantinedRecordRow], bool]:
    query = (
        select(QuarantinedRecordRow)
        .where(QuarantinedRecordRow.quarantine_id > after_id)
        .order_by(QuarantinedRecordRow.quarantine_id)
        .limit(limit + 1)
    )
    if region:
        query = query.where(QuarantinedRecordRow.region == region)
    rows = list(session.scalars(query))
    has_more = len(rows) > limit
    kept: list[QuarantinedRecordRow] = []
    total = 0
    for row in rows[:limit]:
        size = len(row.raw_record)
        if kept and total + size > PAGE_BYTE_BUDGET:
            return kept, True
        kept.append(row)
        total += size
    return kept, has_more


def sweeps_page(
    session: Session, *, states: Sequence[str], before_id: str, limit: int
) -> tuple[list[tuple[SweepRow, list[SweepRegionRow]]], bool]:
    """Sweeps newest first (ids are time-ordered), strictly before `before_id` when given."""
    query = select(SweepRow).order_by(SweepRow.sweep_id.desc()).limit(limit + 1)
    if states:
        query = query.where(SweepRow.state.in_(list(states)))
    if before_id:
        query = query.where(SweepRow.sweep_id < before_id)
    rows = list(session.scalars(query))
    has_more = len(rows) > limit
    rows = rows[:limit]
    parts: dict[str, list[SweepRegionRow]] = {row.sweep_id: [] for row in rows}
    if rows:
        for part in session.scalars(
            select(SweepRegionRow)
            .where(SweepRegionRow.sweep_id.in_(list(parts)))
            .order_by(SweepRegionRow.region)
        ):
            parts[part.sweep_id].append(part)
    return [(row, parts[row.sweep_id]) for row in rows], has_more
