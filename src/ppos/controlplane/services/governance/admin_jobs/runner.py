"""Admin jobs: long-running operations whose progress lives in the database.

A replica runs a job under a lease (renewed while it works); it saves progress
and a checkpoint after every step. If the replica dies, the lease runs out and
any replica (the restarted one included) resumes the job from its checkpoint.
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

_log = structlog.get_logger("ppos.governance.admin_jobs")
RUNNER = internal("admin-job-runner")
MAX_CONCURRENT_JOBS = 4
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

    def __init__(self, runner: AdminJobRunner, snapshot: Snapshot) -> None:
        self._runner = runner
        self.snapshot = snapshot
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
        cancel = await self._runner.save(self.job_id, done, total, message, self.checkpoint)
        if cancel:
            raise Cancelled(cancel)

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
                await self._runner.note(self.job_id, message)
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
            # Stop working; leases run out and another replica (or this one
            # restarted) resumes from the checkpoints.
            for task in list(self._running.values()):
                task.cancel()
            for task in list(self._running.values()):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            _log.info("admin_jobs.stopped", owner=self.owner)

    def _start(self, snapshot: Snapshot) -> None:
        job_id = snapshot.admin_job_id
        task = asyncio.create_task(self._execute(snapshot), name=f"admin-job-{job_id}")
        self._running[job_id] = task

        def forget(_task: asyncio.Task[None]) -> None:
            self._running.pop(job_id, None)

        task.add_done_callback(forget)

    @staticmethod
    def _runnable() -> Any:
        now = utcnow()
        return or_(
            AdminJobRow.state == "PENDING",
            and_(
                AdminJobRow.state.in_(("RUNNING", "CANCELLING")),
                or_(AdminJobRow.lease_expires_at.is_(None), AdminJobRow.lease_expires_at < now),
            ),
        )

    def _anything_to_run(self, session: Session) -> bool:
        query = select(AdminJobRow.admin_job_id).where(self._runnable()).limit(1)
        return session.scalars(query).first() is not None

    def _claim(self, session: Session) -> Snapshot | None:
        now = utcnow()
        query = (
            select(AdminJobRow)
            .where(self._runnable())
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
        handle = JobHandle(self, snapshot)
        principal_token = current_principal.set(snapshot.started_by)
        request_token = current_request_id.set(snapshot.request_id)
        renew = asyncio.create_task(self._renew(snapshot.admin_job_id))
        outcome, result, error = "FAILED", {}, ""
        try:
            result = await self._run_kind(snapshot, handle)
            outcome = "SUCCEEDED"
        except Cancelled as exc:
            outcome, error = "CANCELLED", str(exc)
        except JobFailed as exc:
            outcome, error, result = "FAILED", str(exc), exc.result
        except LeaseLost:
            _log.warning("admin_jobs.lease_lost", admin_job_id=snapshot.admin_job_id)
            return
        except asyncio.CancelledError:
            raise  # this replica is stopping: the job resumes elsewhere
        except Exception as exc:  # noqa: BLE001 - a bug in a kind fails that job, not the runner
            _log.exception("admin_jobs.crashed", admin_job_id=snapshot.admin_job_id)
            outcome, error = "FAILED", f"internal error: {type(exc).__name__}"
        finally:
            renew.cancel()
            current_principal.reset(principal_token)
            current_request_id.reset(request_token)
        await self.finish(snapshot.admin_job_id, outcome, result, error)

    async def _run_kind(self, snapshot: Snapshot, handle: JobHandle) -> dict[str, Any]:
        kind = self._kinds.get(snapshot.kind)
        if kind is None:
            raise JobFailed(f"no runner for admin job kind {snapshot.kind}")
        pending_cancel = await self.cancel_reason(snapshot.admin_job_id)
        if pending_cancel:
            raise Cancelled(pending_cancel)
        return await kind(handle)

    async def _renew(self, job_id: str) -> None:
        interval = self.settings.admin_job_lease / 3

        def work(session: Session) -> None:
            row = session.get(AdminJobRow, job_id, with_for_update=True)
            if row is not None and row.lease_owner == self.owner:
                row.lease_expires_at = utcnow() + self._lease

        while True:
            await asyncio.sleep(interval)
            try:
                await self._db.write(work)
            except Exception:  # noqa: BLE001 - the next renewal may succeed
                _log.warning("admin_jobs.renew_failed", admin_job_id=job_id)

    def _owned(self, session: Session, job_id: str) -> AdminJobRow:
        row = session.get(AdminJobRow, job_id, with_for_update=True)
        if row is None or row.lease_owner != self.owner:
            raise LeaseLost(job_id)
        return row

    async def save(
        self, job_id: str, done: int, total: int, message: str, checkpoint: dict[str, Any]
    ) -> str:
        """Persist progress; returns the cancel reason when a cancel is pending."""

        def work(session: Session) -> str:
            row = self._owned(session, job_id)
            now = utcnow()
            row.progress_done = done
            row.progress_total = total
            row.progress_message = message[:2000]
            row.checkpoint = json.dumps(checkpoint, sort_keys=True)
            row.lease_expires_at = now + self._lease
            row.resource_version += 1
            row.updated_at = now
            return row.cancel_reason if row.state == "CANCELLING" else ""

        return await self._db.write(work)

    async def note(self, job_id: str, message: str) -> None:
        def work(session: Session) -> None:
            row = self._owned(session, job_id)
            row.progress_message = message[:2000]
            row.lease_expires_at = utcnow() + self._lease
            row.resource_version += 1
            row.updated_at = utcnow()

        await self._db.write(work)

    async def cancel_reason(self, job_id: str) -> str:
        def work(session: Session) -> str:
            row = session.get(AdminJobRow, job_id)
            return row.cancel_reason if row is not None and row.state == "CANCELLING" else ""

        return await self._db.read(work)

    async def finish(self, job_id: str, state: str, result: dict[str, Any], error: str) -> None:
        def work(session: Session) -> str:
            row = self._owned(session, job_id)
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
