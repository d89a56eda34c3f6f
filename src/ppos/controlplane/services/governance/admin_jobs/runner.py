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
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.core.metrics import ADMIN_JOBS
from ppos.controlplane.core.settings import ConfigError
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import (
    Principal,
    PrincipalKind,
    current_principal,
    current_request_id,
    internal,
)
from ppos.controlplane.services.governance.common import record_change, wait_either
from ppos.controlplane.services.governance.convert import admin_job_snapshot
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.models import AdminJobRow
from ppos.controlplane.services.governance.outbox.retry import TRANSIENT, backoff_seconds
from ppos.controlplane.services.governance.peers import PeerStubs
from ppos.controlplane.storage.leases import bound_idle_time, database_now, fenced_out

_log = structlog.get_logger("ppos.governance.admin_jobs")
RUNNER = internal("admin-job-runner")
MAX_CONCURRENT_JOBS = 4
# How long a stopping replica lets its jobs reach their next step boundary.
STOP_GRACE = 0.5
FENCE = "admin-job"
T = TypeVar("T")


class Cancelled(Exception):
    """The job was asked to stop; raised at a safe point."""


class JobFailed(Exception):
    """The job cannot go on, or found what it looked for wanting; the message says why.
    `result`, when given, is kept as the job's result all the same."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class LeaseLost(Exception):
    """Another replica took the job over (this one was too slow to renew)."""


class HandedOver(Exception):
    """This replica is stopping: the job stops at a step boundary for another to resume."""


@dataclass
class Lease:
    """This replica's run of a job: the run number is the fencing token."""

    job_id: str
    run: int
    renewed_at: float  # monotonic time of the last write that extended it
    lost: bool = False


@dataclass(frozen=True)
class Snapshot:
    admin_job_id: str
    kind: str
    parameters: dict[str, str]
    checkpoint: str
    runs: int
    started_by: Principal
    request_id: str


class JobHandle:
    """What a job kind uses to report progress and reach its peers."""

    def __init__(self, runner: AdminJobRunner, snapshot: Snapshot, lease: Lease) -> None:
        self._runner = runner
        self.snapshot = snapshot
        self.lease = lease
        self.job_id = snapshot.admin_job_id
        self.parameters = snapshot.parameters
        self.checkpoint: dict[str, Any] = (
            json.loads(snapshot.checkpoint) if snapshot.checkpoint else {}
        )
        self.peers = runner.peers
        self.poll_interval = float(runner.settings.admin_job_poll_interval)

    async def progress(
        self,
        *,
        done: int,
        total: int,
        message: str,
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        """Save progress (and the resume point); raises Cancelled if a cancel is pending."""
        if checkpoint is not None:
            self.checkpoint = checkpoint
        cancel = await self._runner.save(self.lease, done, total, message, self.checkpoint)
        if cancel:
            raise Cancelled(cancel)
        if self._runner.stopping:
            raise HandedOver(self.job_id)

    async def cancel_requested(self) -> str:
        return await self._runner.cancel_reason(self.job_id)

    async def call(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        pass_through: frozenset[grpc.StatusCode] = frozenset(),
    ) -> T:
        """Call a peer; transient failures are retried (held), the rest fail the job
        (except codes in `pass_through`, re-raised for the kind to judge)."""
        tries = 0
        while True:
            self._runner.hold(self.lease)
            try:
                return await attempt()
            except ConfigError as exc:
                raise JobFailed(f"{what}: {exc}") from None
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in pass_through:
                    raise
                if code not in TRANSIENT:
                    raise JobFailed(f"{what}: {code.name}: {exc.details()}") from None
                tries += 1
                delay = backoff_seconds(tries, self.poll_interval, 30.0, self._runner.rng)
                message = (
                    f"waiting: {what} answered {code.name} ({exc.details()}); "
                    f"retry {tries} in {delay:.1f}s"
                )
                await self._runner.note(self.lease, message)
                if await self.cancel_requested():
                    raise Cancelled(await self.cancel_requested()) from None
                await asyncio.sleep(delay)


JobKind = Callable[[JobHandle], Awaitable[dict[str, Any]]]


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
        self.rng = random.Random()  # noqa: S311 - jitter, not security
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, Lease] = {}
        self.stopping = False

    def wake(self) -> None:
        self._wake.set()

    @property
    def _lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings.admin_job_lease)

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
                await self.release(lease)
            except Exception:  # noqa: BLE001 - the lease then runs out instead
                _log.exception("admin_jobs.release_failed", admin_job_id=lease.job_id)

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
        row.lease_expires_at = now + self._lease
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
        handle = JobHandle(self, snapshot, lease)
        principal_token = current_principal.set(snapshot.started_by)
        request_token = current_request_id.set(snapshot.request_id)
        renew = asyncio.create_task(self._renew(lease))
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
        await self.finish(lease, outcome, result, error)
        self._forget_lease(lease)

    def _forget_lease(self, lease: Lease) -> None:
        if self._leases.get(lease.job_id) is lease:
            del self._leases[lease.job_id]

    async def _run_kind(self, snapshot: Snapshot, handle: JobHandle) -> dict[str, Any]:
        kind = self._kinds.get(snapshot.kind)
        if kind is None:
            raise JobFailed(f"no runner for admin job kind {snapshot.kind}")
        pending_cancel = await self.cancel_reason(snapshot.admin_job_id)
        if pending_cancel:
            raise Cancelled(pending_cancel)
        return await kind(handle)

    async def _renew(self, lease: Lease) -> None:
        interval = self.settings.admin_job_lease / 3

        def work(session: Session) -> None:
            self._owned(session, lease).lease_expires_at = database_now(session) + self._lease

        while not lease.lost:
            await asyncio.sleep(interval)
            try:
                await self._extend(lease, work)
            except LeaseLost:
                return
            except Exception:  # noqa: BLE001 - the next renewal may succeed
                _log.warning("admin_jobs.renew_failed", admin_job_id=lease.job_id)

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

    def hold(self, lease: Lease) -> None:
        """Raise LeaseLost unless the lease is still ours by this process's clock
        too: a runner woken from a freeze longer than the lease calls no peer."""
        overdue = asyncio.get_running_loop().time() - lease.renewed_at > self._lease.total_seconds()
        if lease.lost or overdue:
            lease.lost = True
            raise LeaseLost(lease.job_id)

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

    async def save(
        self, lease: Lease, done: int, total: int, message: str, checkpoint: dict[str, Any]
    ) -> str:
        """Persist progress; returns the cancel reason when a cancel is pending."""

        def work(session: Session) -> str:
            row = self._owned(session, lease)
            now = utcnow()
            row.progress_done = done
            row.progress_total = total
            row.progress_message = message[:2000]
            row.checkpoint = json.dumps(checkpoint, sort_keys=True)
            row.lease_expires_at = database_now(session) + self._lease
            row.resource_version += 1
            row.updated_at = now
            return row.cancel_reason if row.state == "CANCELLING" else ""

        return await self._extend(lease, work)

    async def note(self, lease: Lease, message: str) -> None:
        def work(session: Session) -> None:
            row = self._owned(session, lease)
            row.progress_message = message[:2000]
            row.lease_expires_at = database_now(session) + self._lease
            row.resource_version += 1
            row.updated_at = utcnow()

        await self._extend(lease, work)

    async def release(self, lease: Lease) -> None:
        """Give the job up at once (this replica is stopping): claimable by any replica."""

        def work(session: Session) -> None:
            row = self._owned(session, lease)
            row.lease_owner = ""
            row.lease_expires_at = None

        try:
            await self._db.write(work)
        except LeaseLost:
            return  # already taken over
        finally:
            self._forget_lease(lease)
        _log.info("admin_jobs.released", admin_job_id=lease.job_id, run=lease.run)

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
