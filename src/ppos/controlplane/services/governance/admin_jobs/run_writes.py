"""The writes one run of an admin job makes, each fenced by its run number.

Every write checks, in its own transaction, that the job is still this run's
(`owned`): a runner that was frozen and replaced changes nothing when it wakes
up (the refusal is logged and counted, `ppos_fenced_writes_total`). Writes that
keep the run alive extend its lease by the database's clock on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from sqlalchemy.orm import Session

from ppos.controlplane.core.metrics import ADMIN_JOBS
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import internal
from ppos.controlplane.services.governance.common import record_change
from ppos.controlplane.services.governance.models import AdminJobRow
from ppos.controlplane.services.governance.snapshots import admin_job_snapshot
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.leases import bound_idle_time, database_now, fenced_out

_log = structlog.get_logger("ppos.governance.admin_jobs")
RUNNER = internal("admin-job-runner")
FENCE = "admin-job"
T = TypeVar("T")


class LeaseLost(Exception):
    """Another replica took the job over (this one was too slow to renew)."""


@dataclass
class Lease:
    """This replica's run of a job: the run number is the fencing token."""

    job_id: str
    run: int
    renewed_at: float  # monotonic time of the last write that extended it
    lost: bool = False


class RunWrites:
    """What a runner writes for the jobs it runs, fenced by (owner, run)."""

    def __init__(self, db: Database, owner: str, lease_seconds: float) -> None:
        self._db = db
        self.owner = owner
        self._lease_seconds = lease_seconds

    @property
    def lease_length(self) -> dt.timedelta:
        return dt.timedelta(seconds=self._lease_seconds)

    def hold(self, lease: Lease) -> None:
        """Raise LeaseLost unless the lease is still ours by this process's clock
        too: a runner woken from a freeze longer than the lease calls no peer."""
        overdue = asyncio.get_running_loop().time() - lease.renewed_at > self._lease_seconds
        if lease.lost or overdue:
            lease.lost = True
            raise LeaseLost(lease.job_id)

    async def renew(self, lease: Lease) -> None:
        """Extend the lease every third of it until it is lost (run as a task)."""

        def work(session: Session) -> None:
            self._owned(session, lease).lease_expires_at = database_now(session) + self.lease_length

        while not lease.lost:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                await self._extend(lease, work)
            except LeaseLost:
                return
            except Exception:  # noqa: BLE001 - the next renewal may succeed
                _log.warning("admin_jobs.renew_failed", admin_job_id=lease.job_id)

    async def save(
        self, lease: Lease, done: int, total: int, message: str, checkpoint: dict[str, Any]
    ) -> str:
        """Persist progress; returns the cancel reason when a cancel is pending."""

        def work(session: Session) -> str:
            row = self._owned(session, lease)
            row.progress_done = done
            row.progress_total = total
            row.progress_message = message[:2000]
            row.checkpoint = json.dumps(checkpoint, sort_keys=True)
            row.lease_expires_at = database_now(session) + self.lease_length
            row.resource_version += 1
            row.updated_at = utcnow()
            return row.cancel_reason if row.state == "CANCELLING" else ""

        return await self._extend(lease, work)

    async def note(self, lease: Lease, message: str) -> None:
        def work(session: Session) -> None:
            row = self._owned(session, lease)
            row.progress_message = message[:2000]
            row.lease_expires_at = database_now(session) + self.lease_length
            row.resource_version += 1
            row.updated_at = utcnow()

        await self._extend(lease, work)

    async def release(self, lease: Lease) -> bool:
        """Give the job up at once (this replica is stopping), claimable by any
        replica; False when another run already holds it."""

        def work(session: Session) -> None:
            row = self._owned(session, lease)
            row.lease_owner = ""
            row.lease_expires_at = None

        try:
            await self._db.write(work)
        except LeaseLost:
            return False
        _log.info("admin_jobs.released", admin_job_id=lease.job_id, run=lease.run)
        return True

    async def cancel_reason(self, job_id: str) -> str:
        def work(session: Session) -> str:
            row = session.get(AdminJobRow, job_id)
            return row.cancel_reason if row is not None and row.state == "CANCELLING" else ""

        return await self._db.read(work)

    async def finish(self, lease: Lease, state: str, result: dict[str, Any], error: str) -> None:
        job_id = lease.job_id

        def work(session: Session) -> str:
            row = self._owned(session, lease)
            before = admin_job_snapshot(row)
            now = utcnow()
            row.state = state
            row.result_json = json.dumps(result, sort_keys=True) if result else ""
            where = row.progress_message
            if state == "CANCELLED":
                row.progress_message = f"cancelled ({error}); stopped at: {where}"[:2000]
            elif state == "FAILED":
                row.error = error[:2000]
                row.progress_message = f"failed; stopped at: {where}"[:2000]
            row.lease_owner = ""
            row.lease_expires_at = None
            row.finished_at = now
            row.resource_version += 1
            row.updated_at = now
            record_change(
                session,
                "admin_job",
                job_id,
                before,
                admin_job_snapshot(row),
                method=f"admin-job:{state.lower()}",
                actor=RUNNER,
            )
            return row.kind

        try:
            kind = await self._db.write(work)
        except LeaseLost:
            _log.warning("admin_jobs.lease_lost_at_finish", admin_job_id=job_id)
            return
        ADMIN_JOBS.labels(kind=kind, state=state).inc()
        _log.info("admin_jobs.finished", admin_job_id=job_id, state=state, error=error)

    async def _extend(self, lease: Lease, work: Callable[[Session], T]) -> T:
        """A write that extends the lease (fenced by `_owned`); marks it renewed."""
        started = asyncio.get_running_loop().time()
        try:
            value = await self._db.write(work)
        except LeaseLost:
            lease.lost = True
            raise
        lease.renewed_at = max(lease.renewed_at, started)
        return value

    def _owned(self, session: Session, lease: Lease) -> AdminJobRow:
        """The job, locked, if it is still this run's (the fence); else LeaseLost."""
        bound_idle_time(session)  # the row lock is not held through a freeze
        row = session.get(AdminJobRow, lease.job_id, with_for_update=True)
        if row is None or row.lease_owner != self.owner or row.runs != lease.run:
            fenced_out(
                FENCE,
                admin_job_id=lease.job_id,
                run=lease.run,
                current_run=row.runs if row is not None else None,
            )
            raise LeaseLost(lease.job_id)
        return row
