"""The two things an operator asks of sweeps, each one unit of work with its audit
entry: start one (idempotent by request id) and ask one to stop. Whichever
replica leads does the work."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from ppos.controlplane.services.registry_sync import sweep_records
from ppos.controlplane.services.registry_sync.models import SweepRegionRow, SweepRow
from ppos.controlplane.storage import audit

SERVICE = "registrysync"
Sweep = tuple[SweepRow, list[SweepRegionRow]]


def start(
    session: Session, regions: list[str], *, started_by: str, request_id: str, now: dt.datetime
) -> Sweep:
    row, created = sweep_records.create_sweep(
        session, regions, started_by=started_by, request_id=request_id or None, now=now
    )
    if created:
        audit.record(
            session,
            service=SERVICE,
            resource_kind="sync_sweep",
            resource_id=row.sweep_id,
            before=None,
            after=sweep_records.snapshot(row),
        )
    session.flush()
    return sweep_records.get_sweep(session, row.sweep_id)


def cancel(session: Session, sweep_id: str, now: dt.datetime) -> Sweep:
    row, changed = sweep_records.request_cancel(session, sweep_id, now)
    if changed:
        audit.record(
            session,
            service=SERVICE,
            resource_kind="sync_sweep",
            resource_id=row.sweep_id,
            before=sweep_records.snapshot(row) | {"cancel_requested": False},
            after=sweep_records.snapshot(row),
        )
    session.flush()
    return sweep_records.get_sweep(session, row.sweep_id)
