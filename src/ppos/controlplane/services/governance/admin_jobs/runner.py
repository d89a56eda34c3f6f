"""Admin jobs: long-running operations whose progress lives in the database.

A replica runs a job under a lease (PPOS_ADMIN_JOB_LEASE, renewed every third
of it from a task of its own, by the database's clock on PostgreSQL); it saves
progress and a checkpoint after every step. If the replica dies or freezes, the
lease runs out and any replica (the restarted one included) resumes the job
from its checkpoint. A replica that stops hands its jobs over at once: each
stops at its next step boundary (or is cut short after STOP_GRACE) and its
lease is released.

Each claim is a new run of the job (`runs`, its fencing token): every write a
runner makes for the job checks, in the same transaction, that the job is still
its run, so a runner that was frozen and replaced changes nothing when it wakes
up (the refusal is logged and counted, `ppos_fenced_writes_total`). It also
makes no further peer call once its lease is overdue by its own clock. A step
cut short may be sent again by the next run: every step's peer call is
idempotent (see kinds.py), so it takes effect once.
A cancel request is honoured at the next safe point (between steps); a job
that cannot go on says where it stopped. A peer that is unreachable holds the
job (it retries with backoff and says so in its progress), it does not fail it.

This module claims and runs jobs; the fenced writes of a run are in
run_writes.py, and what a job kind sees of its run in handle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from typing import Any

import structlog
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.security.principal import (
    Principal,
    PrincipalKind,
    current_principal,
    current_request_id,
)
from ppos.controlplane.services.governance.admin_jobs.handle import (
    Cancelled,
    HandedOver,
    JobFailed,
    JobHandle,
    JobKind,
    Snapshot,
)
from ppos.controlplane.services.governance.admin_jobs.run_writes import (
    RUNNER,
    Lease,
    LeaseLost,
    RunWrites,
)
from ppos.controlplane.services.governance.common import record_change, wait_either
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.models import AdminJobRow
from ppos.controlplane.services.governance.peers import PeerStubs
from ppos.controlplane.services.governance.snapshots import admin_job_snapshot
from ppos.controlplane.storage.leases import bound_idle_time, database_now

_log = structlog.get_logger("ppos.governance.admin_jobs")
MAX_CONCURRENT_JOBS = 4
# How long a stopping replica lets its jobs reach their next step boundary.
STOP_GRACE = 0.5


def _principal(kind: str, name: str) -> Principal:
    try:
        return Principal(PrincipalKind(kind), name)
    except ValueError:
        return Principal(PrincipalKind.INTERNAL, name)


class AdminJobRunner:
    """One replica's admin job worker."""

    def __init__(self, deps: GovernanceDeps, kinds: dict[str, JobKind], *, owner: str = "") -> None:
        self._db = deps.db
        self.settings = deps.settings
        self.peers = PeerStubs(deps)
        self._kinds = kinds
        self.owner = owner or new_id("jobs")
        self.writes = RunWrites(deps.db, self.owner, float(deps.settings.admin_job_lease))
        self.rng = random.Random()  # noqa: S311 - jitter, not security
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, Lease] = {}
        self.stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        _log.info("admin_jobs.started", owner=self.owner)
        try:
            while not stop.is_set():
                claimed = None
                if len(self._running) < MAX_CONCURRENT_JOBS:
                    try:
                        if await self._db.read(self._anything_to_run):
                            claimed = await self._db.write(self._claim)
                    except Exception:  # noqa: BLE001 - keep the loop alive on a DB hiccup
                        _log.exception("admin_jobs.claim_failed")
                if claimed is not None:
                    self._start(claimed)
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.admin_job_poll_interval):
                        await wait_either(stop, self._wake)
        finally:
            await self._hand_over()
            _log.info("admin_jobs.stopped", owner=self.owner)

    async def _hand_over(self) -> None:
        """Stop every job at its next step boundary (cut short after STOP_GRACE)
        and release its lease: another replica resumes it from its checkpoint."""
        self.stopping = True
        running = list(self._running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for lease in list(self._leases.values()):
            try:
                await self.writes.release(lease)
            except Exception:  # noqa: BLE001 - the lease then runs out instead
                _log.exception("admin_jobs.release_failed", admin_job_id=lease.job_id)
            finally:
                self._forget_lease(lease)

    def _start(self, snapshot: Snapshot) -> None:
        job_id = snapshot.admin_job_id
        task = asyncio.create_task(self._execute(snapshot), name=f"admin-job-{job_id}")
        self._running[job_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._running.get(job_id) is done:
                del self._running[job_id]

        task.add_done_callback(forget)

    def _runnable(self, now: dt.datetime) -> Any:
        runnable = or_(
            AdminJobRow.state == "PENDING",
            and_(
                AdminJobRow.state.in_(("RUNNING", "CANCELLING")),
                or_(AdminJobRow.lease_expires_at.is_(None), AdminJobRow.lease_expires_at < now),
            ),
        )
        if not self._running:
            return runnable
        # A run of ours whose lease ran out (this replica was starved) is for
        # another replica to resume, once this one has let go of it.
        return and_(runnable, AdminJobRow.admin_job_id.not_in(list(self._running)))

    def _anything_to_run(self, session: Session) -> bool:
        now = database_now(session)
        query = select(AdminJobRow.admin_job_id).where(self._runnable(now)).limit(1)
        return session.scalars(query).first() is not None

    def _claim(self, session: Session) -> Snapshot | None:
        bound_idle_time(session)  # the row lock is not held through a freeze
        now = database_now(session)
        query = (
            select(AdminJobRow)
            .where(self._runnable(now))
            .order_by(AdminJobRow.created_at, AdminJobRow.admin_job_id)
            .limit(1)
        )
        if self._db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        row = session.scalars(query).first()
        if row is None:
            return None
        before = admin_job_snapshot(row)
        resumed = row.state != "PENDING"
        if row.state == "PENDING":
            row.state = "RUNNING"
        row.runs += 1
        row.lease_owner = self.owner
        row.lease_expires_at = now + self.writes.lease_length
        if resumed:
            row.progress_message = (
                f"resumed (run {row.runs}) after an interrupted run; was: {row.progress_message}"
            )[:2000]
        row.resource_version += 1
        row.updated_at = now
        record_change(
            session,
            "admin_job",
            row.admin_job_id,
            before,
            admin_job_snapshot(row),
            method="admin-job:resume" if resumed else "admin-job:start",
            actor=RUNNER,
        )
        return Snapshot(
            row.admin_job_id,
            row.kind,
            dict(row.parameters),
            row.checkpoint,
            row.runs,
            _principal(row.started_by_kind, row.started_by_name),
            row.request_id,
        )

    async def _execute(self, snapshot: Snapshot) -> None:
        job_id = snapshot.admin_job_id
        lease = Lease(job_id, snapshot.runs, asyncio.get_running_loop().time())
        self._leases[job_id] = lease
        _log.info("admin_jobs.running", admin_job_id=job_id, run=lease.run, kind=snapshot.kind)
        handle = JobHandle(
            snapshot,
            lease,
            writes=self.writes,
            peers=self.peers,
            poll_interval=float(self.settings.admin_job_poll_interval),
            rng=self.rng,
            stopping=lambda: self.stopping,
        )
        principal_token = current_principal.set(snapshot.started_by)
        request_token = current_request_id.set(snapshot.request_id)
        renew = asyncio.create_task(self.writes.renew(lease))
        outcome, result, error = "FAILED", {}, ""
        try:
            result = await self._run_kind(snapshot, handle)
            outcome = "SUCCEEDED"
        except Cancelled as exc:
            outcome, error = "CANCELLED", str(exc)
        except JobFailed as exc:
            outcome, error, result = "FAILED", str(exc), exc.result
        except HandedOver:
            _log.info("admin_jobs.handed_over", admin_job_id=job_id, run=lease.run)
            return  # the lease is released by the hand-over
        except LeaseLost:
            self._forget_lease(lease)
            _log.warning("admin_jobs.lease_lost", admin_job_id=job_id, run=lease.run)
            return
        except asyncio.CancelledError:
            raise  # this replica is stopping: the job resumes elsewhere
        except Exception as exc:  # noqa: BLE001 - a bug in a kind fails that job, not the runner
            _log.exception("admin_jobs.crashed", admin_job_id=job_id)
            outcome, error = "FAILED", f"internal error: {type(exc).__name__}"
        finally:
            renew.cancel()
            current_principal.reset(principal_token)
            current_request_id.reset(request_token)
        await self.writes.finish(lease, outcome, result, error)
        self._forget_lease(lease)

    def _forget_lease(self, lease: Lease) -> None:
        if self._leases.get(lease.job_id) is lease:
            del self._leases[lease.job_id]

    async def _run_kind(self, snapshot: Snapshot, handle: JobHandle) -> dict[str, Any]:
        kind = self._kinds.get(snapshot.kind)
        if kind is None:
            raise JobFailed(f"no runner for admin job kind {snapshot.kind}")
        pending_cancel = await self.writes.cancel_reason(snapshot.admin_job_id)
        if pending_cancel:
            raise Cancelled(pending_cancel)
        return await kind(handle)
