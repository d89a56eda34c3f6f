"""The sync's background work: take the lead, schedule sweeps, run them.

Every replica runs this loop; only the leader (see leader.py) sweeps. Each
tick the leader requests a sweep of the regions that are due (not attempted
for the interval, not in an active sweep), claims the pending sweeps (from
the scheduler or StartSweep on any replica) and runs them: regions at most
`concurrency` at a time, one run per region at a time. A replica that takes
the lead first puts sweeps left RUNNING by the previous leader back to
PENDING, so they resume from the committed cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from sqlalchemy.orm import Session

from ppos.controlplane.core.logging import get_logger
from ppos.controlplane.core.metrics import SYNC_LEADER
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import (
    current_principal,
    current_request_id,
    internal,
)
from ppos.controlplane.services.registry_sync import queries, sweep_records
from ppos.controlplane.services.registry_sync.client import RegistryClient
from ppos.controlplane.services.registry_sync.models import CANCELLED, FAILED, PENDING
from ppos.controlplane.services.registry_sync.region_pull import (
    CANCEL,
    LOST_LEAD,
    SHUTDOWN,
    RegionRun,
    StopSignal,
    SweepContext,
)
from ppos.controlplane.storage.leadership import Leadership
from ppos.controlplane.storage.leases import Fence, LeadershipLost, fenced

SCHEDULER = "scheduler"
PRUNE_EVERY = 3600.0
_log = get_logger("ppos.registrysync.scheduler")
T = TypeVar("T")


class SyncScheduler:
    def __init__(
        self,
        context: SweepContext,
        clients: Mapping[str, RegistryClient],
        leadership: Leadership,
        *,
        stop_grace: float = 10.0,
    ) -> None:
        self._ctx = context
        self._db = context.db
        self._settings = context.settings
        self._clients = dict(clients)
        self._leadership = leadership
        self._stop_grace = stop_grace
        self._slots = asyncio.Semaphore(self._settings.concurrency)
        self._region_locks = {region: asyncio.Lock() for region in self._clients}
        self._running: dict[str, tuple[asyncio.Task[None], StopSignal]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_prune = 0.0
        self._fence: Fence | None = None  # the lead's generation, checked by every write
        self.leading = False

    # -- control -------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="registrysync-scheduler")

    async def publish_stored_lag(self) -> None:
        """Each region's lag metrics from its stored status.

        Before the first leader check (so the metrics exist before any sweep
        runs), then on every leader check of a replica that does not lead: the
        leader publishes its own after each page, the others read what it stored.
        """
        regions = sorted(self._clients)
        if not regions:
            return
        rows = await self._db.read(lambda s: queries.region_rows(s, regions))
        for region in regions:
            row = rows.get(region)
            if row is None:
                self._ctx.lag.publish(region, 0, None)
            else:
                self._ctx.lag.publish(region, row.lag_changes, row.newest_change_ns)

    def wake(self) -> None:
        self._wake.set()

    def cancel_local(self, sweep_id: str) -> None:
        """Stop a sweep this replica runs, after its current page (no-op elsewhere)."""
        running = self._running.get(sweep_id)
        if running is not None:
            running[1].stop(CANCEL)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.leading:
            # Released first, so the next leader takes over while the sweeps stop:
            # their last writes are fenced, the new leader resumes what they leave.
            await self._leadership.release()
        await self._stop_sweeps(SHUTDOWN)
        self._set_leading(False)

    async def _stop_sweeps(self, reason: str) -> None:
        running = list(self._running.values())
        for _, signal in running:
            signal.stop(reason)
        tasks = [task for task, _ in running]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._stop_grace)
        for task in pending:  # a commit that takes longer than the grace: cut it short
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        self._fence = self._leadership.fence() if leading else None
        SYNC_LEADER.set(1 if leading else 0)

    def _write(self, work: Callable[[Session], T]) -> Awaitable[T]:
        """A write of the leader, fenced by its generation (LeadershipLost once replaced)."""
        if self._fence is None:
            raise LeadershipLost("this replica does not lead the sync")
        return self._db.write(fenced(self._fence, work))

    async def _step_down(self) -> None:
        self._set_leading(False)
        await self._stop_sweeps(LOST_LEAD)

    # -- the loop --------------------------------------------------------------

    async def _loop(self) -> None:
        current_principal.set(internal(SCHEDULER))
        settings = self._settings
        next_lead_check = 0.0
        while not self._stopping:
            try:
                now = time.monotonic()
                if now >= next_lead_check:
                    next_lead_check = now + settings.leader_retry
                    if not self.leading:
                        await self.publish_stored_lag()
                    await self._check_lead()
                if self.leading:
                    await self._tick()
            except asyncio.CancelledError:
                raise
            except LeadershipLost:
                _log.warning("sync.lead_superseded")  # frozen or cut off, then replaced
                await self._step_down()
            except Exception as exc:  # noqa: BLE001 - the loop must survive a bad tick
                _log.error("sync.scheduler_tick_failed", exc_info=exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), settings.poll_interval)
            self._wake.clear()

    async def _check_lead(self) -> None:
        if not self._settings.scheduler:
            return
        if self.leading:
            if await self._leadership.check():
                return
            _log.warning("sync.lead_lost")
            await self._step_down()
            return
        if not await self._leadership.acquire():
            return
        self._set_leading(True)
        recovered = await self._write(lambda s: sweep_records.recover_orphans(s, utcnow()))
        _log.info("sync.lead_taken", resumed_sweeps=recovered)

    async def _tick(self) -> None:
        settings = self._settings
        regions = sorted(self._clients)
        if settings.interval > 0 and regions:
            now = utcnow()

            def schedule(session: Session) -> None:
                due = sweep_records.due_regions(session, regions, settings.interval, now)
                if due:
                    sweep_records.create_sweep(
                        session, due, started_by=SCHEDULER, request_id=None, now=now
                    )

            # Write transactions only when there is something to write (SQLite has
            # one writer, and page commits should not queue behind idle ticks).
            if await self._db.read(
                lambda s: bool(sweep_records.due_regions(s, regions, settings.interval, now))
            ):
                await self._write(schedule)
        claimed: list[tuple[str, list[str]]] = []
        if await self._db.read(sweep_records.any_pending):
            claimed = await self._write(lambda s: sweep_records.claim_pending(s, utcnow()))
        for sweep_id, pending in claimed:
            signal = StopSignal()
            task = asyncio.create_task(
                self._run_sweep(sweep_id, pending, signal), name=f"sweep-{sweep_id}"
            )
            self._running[sweep_id] = (task, signal)
            task.add_done_callback(functools.partial(self._forget, sweep_id))
        if time.monotonic() - self._last_prune >= PRUNE_EVERY:
            self._last_prune = time.monotonic()
            cutoff = utcnow() - dt.timedelta(seconds=settings.sweep_retention)
            pruned = await self._write(lambda s: sweep_records.prune(s, cutoff))
            if pruned:
                _log.info("sync.sweeps_pruned", count=pruned)

    # -- running a sweep -------------------------------------------------------

    def _forget(self, sweep_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(sweep_id, None)

    async def _watch_cancel(self, sweep_id: str, signal: StopSignal) -> None:
        """A cancel requested on another replica reaches us through the database."""
        while not signal.stopped:
            await asyncio.sleep(self._settings.poll_interval)
            if await self._db.read(lambda s: sweep_records.cancel_requested(s, sweep_id)):
                signal.stop(CANCEL)

    async def _run_sweep(self, sweep_id: str, regions: list[str], signal: StopSignal) -> None:
        current_request_id.set(sweep_id)
        _log.info("sync.sweep_started", sweep_id=sweep_id, regions=regions)
        watcher = asyncio.create_task(self._watch_cancel(sweep_id, signal))
        try:
            await asyncio.gather(
                *(self._run_region(sweep_id, region, signal) for region in regions)
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        now = utcnow()
        cancelled = signal.reason == CANCEL
        interrupted = signal.reason in (SHUTDOWN, LOST_LEAD)
        try:
            final, error = await asyncio.shield(
                self._write(
                    lambda s: sweep_records.conclude(
                        s, sweep_id, cancelled=cancelled, interrupted=interrupted, now=now
                    )
                )
            )
        except LeadershipLost:
            _log.warning("sync.sweep_left_to_new_leader", sweep_id=sweep_id)
            return
        self._ctx.bus.notify()
        _log.info("sync.sweep_ended", sweep_id=sweep_id, state=final, error=error or None)

    async def _run_region(self, sweep_id: str, region: str, signal: StopSignal) -> tuple[str, str]:
        client = self._clients.get(region)
        if client is None:
            return await self._end_unstarted(
                sweep_id, region, FAILED, f"region {region} is not configured on the leader"
            )
        async with self._region_locks[region], self._slots:
            if signal.stopped:
                state = CANCELLED if signal.reason == CANCEL else PENDING
                return await self._end_unstarted(sweep_id, region, state, "")
            try:
                return await RegionRun(self._ctx, client, sweep_id, signal, self._fence).run()
            except asyncio.CancelledError:
                raise
            except LeadershipLost:
                return PENDING, "the lead passed to another replica"
            except Exception as exc:  # noqa: BLE001 - e.g. the database went away
                _log.error("sync.region_run_failed", region=region, exc_info=exc)
                return FAILED, f"internal error: {type(exc).__name__}"

    async def _end_unstarted(
        self, sweep_id: str, region: str, state: str, error: str
    ) -> tuple[str, str]:
        now = utcnow()
        with contextlib.suppress(LeadershipLost):  # replaced: the new leader records it
            await self._write(
                lambda s: sweep_records.end_region(s, sweep_id, region, state, error, now)
            )
        return state, error
