"""One region's part of a sweep: pull pages after the cursor until the head.

Per page: fetch (deadline, retries with jittered backoff), split and verify
off the event loop, wait for the meter, commit rows + quarantine + cursor in
one transaction. The next page is fetched while the current one commits.
A stop (cancel, shutdown, lost lead) is honoured between committed pages:
an uncommitted page is simply dropped, the cursor says where to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from sqlalchemy.orm import Session

from ppos.controlplane.core.logging import get_logger
from ppos.controlplane.core.metrics import (
    SYNC_BYTES,
    SYNC_DUPLICATES,
    SYNC_ERRORS,
    SYNC_QUARANTINED,
    SYNC_RECORDS,
    SYNC_RUNTIME_FAILURES,
    SYNC_SWEEP_DURATION,
)
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.keys import PublicKeySource
from ppos.controlplane.services.registry_sync import prepared_rows, sweep_records
from ppos.controlplane.services.registry_sync.backoff import Backoff, is_retryable, retry_hint
from ppos.controlplane.services.registry_sync.checkpoints import Signer
from ppos.controlplane.services.registry_sync.client import RegistryClient, describe
from ppos.controlplane.services.registry_sync.lag import LagGauges
from ppos.controlplane.services.registry_sync.metering import Meter
from ppos.controlplane.services.registry_sync.models import (
    CANCELLED,
    FAILED,
    PENDING,
    SUCCEEDED,
)
from ppos.controlplane.services.registry_sync.page_decoding import PageFormatError, parse_page
from ppos.controlplane.services.registry_sync.pages import (
    CursorMoved,
    PageOutcome,
    VerifiedPage,
    commit_page,
)
from ppos.controlplane.services.registry_sync.settings import RegistrySyncSettings
from ppos.controlplane.services.registry_sync.verify import Accepted, verify
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.leases import Fence, LeadershipLost, fenced

T = TypeVar("T")
# Pages fetched and verified ahead of the one being committed.
PREFETCH_PAGES = 2
_log = get_logger("ppos.registrysync.sweeper")

# Why a sweep stops before the head of its feed.
CANCEL = "cancel"  # CancelSweep: the sweep ends CANCELLED
SHUTDOWN = "shutdown"  # the process stops: the sweep is resumed later
LOST_LEAD = "lost_lead"  # another replica leads now: it resumes the sweep


class StopSignal:
    """Set once, with the first reason given."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


class Stopped(Exception):
    """Raised inside a region's run when its stop signal fires."""


class RegistryFailure(Exception):
    """A registry call failed for good (not retryable, or out of attempts)."""


class StatusBus:
    """Wakes status watchers in this process when a region's status changed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


@dataclass(frozen=True)
class SweepContext:
    """What every region run of a process shares."""

    db: Database
    settings: RegistrySyncSettings
    meter: Meter
    bus: StatusBus
    backoff: Backoff
    lag: LagGauges
    # Signs each page's checkpoint of the region's chains (checkpoints.py).
    sign_checkpoint: Signer
    # Verifies the newest checkpoint a page chains on.
    checkpoint_keys: PublicKeySource


class RegionRun:
    def __init__(
        self,
        context: SweepContext,
        client: RegistryClient,
        sweep_id: str,
        stop: StopSignal,
        fence: Fence | None = None,
    ) -> None:
        self._ctx = context
        self._db = context.db
        self._fence = fence  # the scheduler's lead: every write checks it
        self._settings = context.settings
        self._client = client
        self._region = client.region
        self._sweep_id = sweep_id
        self._stop = stop
        self._log = _log.bind(region=self._region, sweep_id=sweep_id)

    # -- waiting, interruptibly ----------------------------------------------

    async def _until_stopped(self, work: Awaitable[T]) -> T:
        """`work`, unless the stop signal fires first (then Stopped, work cancelled)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stop.event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise Stopped

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await self._until_stopped(asyncio.sleep(seconds))
        elif self._stop.stopped:
            raise Stopped

    async def _with_retries(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        backoff = self._ctx.backoff
        for attempt in range(backoff.attempts):
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                SYNC_ERRORS.labels(self._region, exc.code().name).inc()
                if not is_retryable(exc) or attempt + 1 == backoff.attempts:
                    raise RegistryFailure(f"{what}: {describe(exc)}") from None
                delay = backoff.delay(attempt, retry_hint(exc))
                self._log.warning(
                    "sync.call_retry",
                    call=what,
                    code=exc.code().name,
                    attempt=attempt + 1,
                    delay=round(delay, 3),
                )
            except PageFormatError as exc:
                SYNC_ERRORS.labels(self._region, "MALFORMED_PAGE").inc()
                if attempt + 1 == backoff.attempts:
                    raise RegistryFailure(f"{what}: malformed page: {exc}") from None
                delay = backoff.delay(attempt)
                self._log.warning("sync.malformed_page", error=str(exc), attempt=attempt + 1)
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- fetching ------------------------------------------------------------

    async def _fetch(self, cursor: str) -> VerifiedPage:
        settings = self._settings

        async def once() -> VerifiedPage:
            started = time.perf_counter()
            raw = await self._client.page(
                cursor,
                page_size=settings.page_records,
                max_page_bytes=settings.page_bytes,
                deadline=settings.call_timeout,
            )
            fetched = time.perf_counter()
            page = await asyncio.to_thread(self._verify_page, raw)
            page.timings["fetch_ms"] = round((fetched - started) * 1000, 1)
            page.timings["verify_ms"] = round((time.perf_counter() - fetched) * 1000, 1)
            return page

        return await self._with_retries("ListJobChanges", once)

    def _verify_page(self, raw: bytes) -> VerifiedPage:
        page = parse_page(raw)
        limit = self._settings.max_payload_bytes
        records = [verify(r, region=self._region, max_payload_bytes=limit) for r in page.records]
        if self._db.is_postgres:
            # Encoded here, while the page before is written (prepared_rows.py).
            prepare, region, sweep_id = prepared_rows.prepare, self._region, self._sweep_id
            for item in records:
                if isinstance(item, Accepted):
                    item.prepared = prepare(item, region, sweep_id)
        return VerifiedPage(
            region=self._region,
            sweep_id=self._sweep_id,
            after_generation=-1,  # set by the committer, which knows the current one
            next_cursor=page.next_cursor,
            end_of_feed=page.end_of_feed,
            remaining_changes=page.remaining_changes,
            wire_size=page.wire_size,
            records=records,
        )

    def _write(self, work: Callable[[Session], T]) -> Awaitable[T]:
        return self._db.write(fenced(self._fence, work))

    # -- committing ----------------------------------------------------------

    async def _commit(self, page: VerifiedPage) -> PageOutcome:
        postgres = self._db.is_postgres
        now = utcnow()
        started = time.perf_counter()
        outcome = await self._write(
            lambda s: commit_page(
                s,
                page,
                now,
                postgres=postgres,
                sign=self._ctx.sign_checkpoint,
                keys=self._ctx.checkpoint_keys,
            )
        )
        page.timings["commit_ms"] = round((time.perf_counter() - started) * 1000, 1)
        region = self._region
        SYNC_RECORDS.labels(region).inc(outcome.inserted)
        SYNC_BYTES.labels(region).inc(outcome.inserted_bytes)
        SYNC_RUNTIME_FAILURES.labels(region).inc(outcome.runtime_failures)
        SYNC_DUPLICATES.labels(region).inc(outcome.duplicates)
        for reason, count in outcome.quarantined.items():
            SYNC_QUARANTINED.labels(region, reason).inc(count)
        self._ctx.lag.publish(region, page.remaining_changes, outcome.newest_change_ns)
        self._ctx.bus.notify()
        self._log.debug(
            "sync.page_committed",
            records=len(page.records),
            inserted=outcome.inserted,
            duplicates=outcome.duplicates,
            quarantined=outcome.quarantined_total,
            remaining=page.remaining_changes,
            **page.timings,
        )
        if outcome.quarantined:
            self._log.warning("sync.records_quarantined", reasons=outcome.quarantined)
        return outcome

    # -- the run ---------------------------------------------------------------

    async def run(self) -> tuple[str, str]:
        """(state, error) of this region's part: SUCCEEDED, FAILED, CANCELLED or PENDING."""
        started = time.perf_counter()
        sweep_id, region = self._sweep_id, self._region
        now = utcnow()
        cursor, generation = await self._write(
            lambda s: sweep_records.start_region(s, sweep_id, region, now)
        )
        self._ctx.bus.notify()
        self._log.info("sync.region_started", cursor=cursor)
        state, error = SUCCEEDED, ""
        try:
            await self._pull(cursor, generation)
        except Stopped:
            state = CANCELLED if self._stop.reason == CANCEL else PENDING
        except RegistryFailure as exc:
            state, error = FAILED, str(exc)
        except LeadershipLost:
            self._stop.stop(LOST_LEAD)  # replaced: the new leader resumes the region
            raise
        except asyncio.CancelledError:
            state = PENDING
            raise
        except Exception as exc:  # noqa: BLE001 - recorded as the region's error, and logged
            self._log.error("sync.region_crashed", exc_info=exc)
            state, error = FAILED, f"internal error: {type(exc).__name__}"
        finally:
            ended = utcnow()
            await asyncio.shield(
                self._write(
                    lambda s: sweep_records.end_region(s, sweep_id, region, state, error, ended)
                )
            )
            self._ctx.bus.notify()
            SYNC_SWEEP_DURATION.labels(region).observe(time.perf_counter() - started)
            self._log.info("sync.region_ended", state=state, error=error or None)
        return state, error

    async def _pull(self, cursor: str, generation: int) -> None:
        settings = self._settings
        info = await self._until_stopped(
            self._with_retries(
                "GetRegistryInfo", lambda: self._client.info(deadline=settings.call_timeout)
            )
        )
        now = utcnow()
        at_head = info.head_cursor == cursor
        await self._write(
            lambda s: sweep_records.record_head(
                s, self._region, info.head_cursor, at_head=at_head, now=now
            )
        )
        if at_head:
            self._ctx.lag.caught_up(self._region)
            return  # nothing new
        queue: asyncio.Queue[VerifiedPage | _Failure] = asyncio.Queue(PREFETCH_PAGES)
        producer = asyncio.create_task(self._produce(cursor, queue))
        try:
            while True:
                waited = time.perf_counter()
                item = await self._until_stopped(queue.get())
                if isinstance(item, _Failure):
                    raise item.error
                page = dataclasses.replace(item, after_generation=generation)
                page.timings["waited_ms"] = round((time.perf_counter() - waited) * 1000, 1)
                await self._sleep(
                    self._ctx.meter.debit(self._region, len(page.records), page.wire_size)
                )
                try:
                    outcome = await self._commit(page)
                except CursorMoved as exc:
                    # Another sweeper committed this region: continue from its cursor.
                    self._log.warning("sync.cursor_moved", detail=str(exc))
                    await _cancel(producer)
                    cursor, generation = await self._db.read(
                        lambda s: sweep_records.read_cursor(s, self._region)
                    )
                    queue = asyncio.Queue(PREFETCH_PAGES)
                    producer = asyncio.create_task(self._produce(cursor, queue))
                    continue
                generation = outcome.generation
                if outcome.cancel_requested:
                    self._stop.stop(CANCEL)
                if page.end_of_feed:
                    return
                if not page.records:
                    raise RegistryFailure(
                        "ListJobChanges: empty page before the end of the feed "
                        f"(after cursor {page.next_cursor!r})"
                    )
                if self._stop.stopped:
                    raise Stopped
        finally:
            await _cancel(producer)

    async def _produce(self, cursor: str, queue: asyncio.Queue[VerifiedPage | _Failure]) -> None:
        """Fetch and verify pages ahead of the committer (at most PREFETCH_PAGES ahead)."""
        try:
            while True:
                page = await self._fetch(cursor)
                await queue.put(page)
                if page.end_of_feed or not page.records:
                    return
                cursor = page.next_cursor
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the committer, which raises it
            await queue.put(_Failure(exc))


@dataclass(frozen=True)
class _Failure:
    error: Exception


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
