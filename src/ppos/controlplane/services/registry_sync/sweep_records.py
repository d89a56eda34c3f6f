"""Sweeps and region attempts in the database: the truth every replica reads.

A sweep is requested (PENDING) by StartSweep on any replica or by the
scheduler; the leader claims it (RUNNING), runs each region's part and ends
it (SUCCEEDED, FAILED or CANCELLED). A sweep interrupted by a stop, a crash
or a lost lead goes back to PENDING and the next leader resumes it from the
committed cursors. Functions here take a Session and run in the caller's
transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import InvalidArgument, NotFound
from ppos.controlplane.core.ids import new_id
from ppos.controlplane.services.registry_sync.models import (
    ACTIVE_STATES,
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL_STATES,
    SweepRegionRow,
    SweepRow,
    SyncRegionRow,
)


def ensure_region(session: Session, region: str, now: dt.datetime) -> None:
    """Create the region's cursor row if it does not exist (concurrent-safe)."""
    values: dict[str, Any] = {
        "region": region,
        "cursor": "",
        "generation": 0,
        "head_cursor": "",
        "lag_changes": 0,
        "last_error": "",
        "records_synced": 0,
        "bytes_synced": 0,
        "duplicates_skipped": 0,
        "quarantined_count": 0,
        "pages_committed": 0,
        "status_version": 0,
        "updated_at": now,
    }
    dialect = session.get_bind().dialect.name
    factory = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(factory(SyncRegionRow).values(values).on_conflict_do_nothing())


def snapshot(row: SweepRow) -> dict[str, Any]:
    """What the audit log records of a sweep."""
    return {
        "sweep_id": row.sweep_id,
        "regions": list(row.regions),
        "state": row.state,
        "cancel_requested": row.cancel_requested,
        "request_id": row.request_id,
    }


def create_sweep(
    session: Session,
    regions: Sequence[str],
    *,
    started_by: str,
    request_id: str | None,
    now: dt.datetime,
) -> tuple[SweepRow, bool]:
    """The new sweep (or the one this request id already made) and whether it is new."""
    if request_id:
        existing = session.scalars(
            select(SweepRow).where(SweepRow.request_id == request_id)
        ).one_or_none()
        if existing is not None:
            if sorted(existing.regions) != sorted(regions):
                raise InvalidArgument.single(
                    "request_id",
                    f"was used for a sweep of other regions ({', '.join(existing.regions)})",
                    reason="REQUEST_ID_REUSED",
                )
            return existing, False
    row = SweepRow(
        sweep_id=new_id("swp"),
        request_id=request_id,
        regions=list(regions),
        state=PENDING,
        started_by=started_by,
        cancel_requested=False,
        error="",
        created_at=now,
        resumed=0,
    )
    session.add(row)
    session.flush()
    for region in regions:
        session.add(
            SweepRegionRow(
                sweep_id=row.sweep_id,
                region=region,
                state=PENDING,
                records_synced=0,
                bytes_synced=0,
                quarantined=0,
                duplicates_skipped=0,
                pages=0,
                error="",
            )
        )
    return row, True


def get_sweep(session: Session, sweep_id: str) -> tuple[SweepRow, list[SweepRegionRow]]:
    row = session.get(SweepRow, sweep_id)
    if row is None:
        raise NotFound("sweep", sweep_id)
    parts = list(
        session.scalars(
            select(SweepRegionRow)
            .where(SweepRegionRow.sweep_id == sweep_id)
            .order_by(SweepRegionRow.region)
        )
    )
    return row, parts


def busy_regions(session: Session) -> set[str]:
    """Regions named by a sweep that is pending or running."""
    rows = session.scalars(select(SweepRow.regions).where(SweepRow.state.in_(ACTIVE_STATES)))
    return {region for regions in rows for region in regions}


def any_pending(session: Session) -> bool:
    return (
        session.scalar(select(SweepRow.sweep_id).where(SweepRow.state == PENDING).limit(1))
        is not None
    )


def claim_pending(
    session: Session, now: dt.datetime, limit: int = 16
) -> list[tuple[str, list[str]]]:
    """Pending sweeps, oldest first, now RUNNING, with the regions to run (leader only)."""
    rows = list(
        session.scalars(
            select(SweepRow)
            .where(SweepRow.state == PENDING)
            .order_by(SweepRow.created_at, SweepRow.sweep_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    claimed = []
    for row in rows:
        row.state = RUNNING
        row.started_at = row.started_at or now
        claimed.append((row.sweep_id, pending_regions(session, row.sweep_id)))
    return claimed


def request_cancel(session: Session, sweep_id: str, now: dt.datetime) -> tuple[SweepRow, bool]:
    """Cancel: a pending sweep ends now, a running one after its current page."""
    row = session.scalars(
        select(SweepRow).where(SweepRow.sweep_id == sweep_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound("sweep", sweep_id)
    if row.state in TERMINAL_STATES or row.cancel_requested:
        return row, False
    row.cancel_requested = True
    if row.state == PENDING:
        row.state = CANCELLED
        row.ended_at = now
        session.execute(
            update(SweepRegionRow)
            .where(SweepRegionRow.sweep_id == sweep_id, SweepRegionRow.state == PENDING)
            .values(state=CANCELLED)
        )
    return row, True


def cancel_requested(session: Session, sweep_id: str) -> bool:
    return bool(
        session.scalar(select(SweepRow.cancel_requested).where(SweepRow.sweep_id == sweep_id))
    )


def start_region(session: Session, sweep_id: str, region: str, now: dt.datetime) -> tuple[str, int]:
    """Mark the region's part running; the region's committed cursor and generation."""
    ensure_region(session, region, now)
    row = session.scalars(
        select(SyncRegionRow).where(SyncRegionRow.region == region).with_for_update()
    ).one()
    row.last_attempt_at = now
    row.active_sweep_id = sweep_id
    row.status_version += 1
    row.updated_at = now
    session.execute(
        update(SweepRegionRow)
        .where(SweepRegionRow.sweep_id == sweep_id, SweepRegionRow.region == region)
        .values(state=RUNNING, error="")
    )
    return row.cursor, row.generation


def read_cursor(session: Session, region: str) -> tuple[str, int]:
    row = session.get(SyncRegionRow, region)
    if row is None:
        return "", 0
    return row.cursor, row.generation


def record_head(
    session: Session, region: str, head_cursor: str, *, at_head: bool, now: dt.datetime
) -> None:
    """The registry's head as just reported (lag 0 when the cursor is already there)."""
    values: dict[str, Any] = {
        "head_cursor": head_cursor,
        "status_version": SyncRegionRow.status_version + 1,
        "updated_at": now,
    }
    if at_head:
        values["lag_changes"] = 0
    session.execute(update(SyncRegionRow).where(SyncRegionRow.region == region).values(values))


def end_region(
    session: Session,
    sweep_id: str,
    region: str,
    state: str,
    error: str,
    now: dt.datetime,
) -> None:
    """End the region's part: SUCCEEDED, FAILED, CANCELLED, or PENDING (to resume later)."""
    row = session.scalars(
        select(SyncRegionRow).where(SyncRegionRow.region == region).with_for_update()
    ).one_or_none()
    if row is not None:
        if row.active_sweep_id == sweep_id:
            row.active_sweep_id = None
        if state == SUCCEEDED:
            row.last_success_at = now
            row.last_error = ""
        elif state == FAILED:
            row.last_error = error[:4000]
        row.status_version += 1
        row.updated_at = now
    session.execute(
        update(SweepRegionRow)
        .where(SweepRegionRow.sweep_id == sweep_id, SweepRegionRow.region == region)
        .values(state=state, error=error[:4000])
    )


def recover_orphans(session: Session, now: dt.datetime) -> list[str]:
    """On taking the lead: sweeps left RUNNING by a leader that is gone go back to PENDING."""
    orphans = list(session.scalars(select(SweepRow).where(SweepRow.state == RUNNING)))
    for row in orphans:
        row.state = PENDING
        row.resumed += 1
    ids = [row.sweep_id for row in orphans]
    if ids:
        session.execute(
            update(SweepRegionRow)
            .where(SweepRegionRow.sweep_id.in_(ids), SweepRegionRow.state == RUNNING)
            .values(state=PENDING)
        )
    session.execute(
        update(SyncRegionRow)
        .where(SyncRegionRow.active_sweep_id.is_not(None))
        .values(
            active_sweep_id=None,
            status_version=SyncRegionRow.status_version + 1,
            updated_at=now,
        )
    )
    return ids


def due_regions(
    session: Session, regions: Sequence[str], interval: float, now: dt.datetime
) -> list[str]:
    """Configured regions not attempted for `interval` and not in an active sweep."""
    busy = busy_regions(session)
    attempts = dict(
        session.execute(
            select(SyncRegionRow.region, SyncRegionRow.last_attempt_at).where(
                SyncRegionRow.region.in_(list(regions))
            )
        ).all()
    )
    due = []
    for region in regions:
        last = attempts.get(region)
        if region in busy:
            continue
        if last is None or (now - last).total_seconds() >= interval:
            due.append(region)
    return due


def prune(session: Session, before: dt.datetime) -> int:
    """Delete finished sweeps that ended before `before` (their region parts go with them)."""
    ids = list(
        session.scalars(
            select(SweepRow.sweep_id)
            .where(SweepRow.state.in_(TERMINAL_STATES), SweepRow.ended_at < before)
            .limit(1000)
        )
    )
    if ids:
        session.execute(delete(SweepRegionRow).where(SweepRegionRow.sweep_id.in_(ids)))
        session.execute(delete(SweepRow).where(SweepRow.sweep_id.in_(ids)))
    return len(ids)


def conclude(
    session: Session, sweep_id: str, *, cancelled: bool, interrupted: bool, now: dt.datetime
) -> tuple[str, str]:
    """End the sweep from its regions' states: PENDING again when interrupted before the end."""
    row, parts = get_sweep(session, sweep_id)
    states = {part.state for part in parts}
    error = "; ".join(f"{part.region}: {part.error}" for part in parts if part.state == FAILED)
    if interrupted and states & ACTIVE_STATES:
        row.state = PENDING
        row.resumed += 1
        return PENDING, ""
    if cancelled:
        row.state = CANCELLED
    elif FAILED in states:
        row.state = FAILED
    else:
        row.state = SUCCEEDED
    state = row.state
    row.error = error[:4000]
    row.ended_at = now
    return state, error


def pending_regions(session: Session, sweep_id: str) -> list[str]:
    """Regions of a claimed sweep still to run (all of them, unless it is being resumed)."""
    return list(
        session.scalars(
            select(SweepRegionRow.region)
            .where(
                SweepRegionRow.sweep_id == sweep_id,
                SweepRegionRow.state.in_(ACTIVE_STATES),
            )
            .order_by(SweepRegionRow.region)
        )
    )
