"""The outbox dispatcher: delivers committed commands, exactly once in effect.

Every replica runs one; they share the work through leases (lease.py): a
dispatcher leases due commands up to its free delivery slots (so many in
flight in all, so many per receiver: slots.py), on PostgreSQL with
`FOR UPDATE SKIP LOCKED` so replicas never wait on each other, on SQLite
through the single writer. Each leased command is called at once, and its
lease renewed while the call is in flight (keeper.py). A replica killed or
frozen stops renewing: its commands are leased again by another replica
`PPOS_OUTBOX_LEASE` after its last renewal; a replica stopping cleanly hands
its leases back at once. The next delivery of a command carries the same
idempotency key, which the receiver answers as a duplicate. Every write for a
leased command is fenced by the lease's token, so a replica that wakes up
after its leases passed on changes nothing (counted in
`ppos_outbox_fenced_writes_total`, logged).

Outcomes: an acknowledgement ends the command (ACKNOWLEDGED, with the
receiver's id and whether it was a duplicate); a transient error (the
receiver unreachable, slow, overloaded) puts it back to PENDING after a
jittered exponential backoff and holds it there as long as it takes; a refusal
(the receiver says the request is wrong) ends it FAILED with the error, for an
operator to look at and, if they choose, RetryCommand. Outcomes finishing
together are recorded in one transaction (group_commit.py, outcomes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import grpc
import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.core.metrics import OUTBOX_DELIVERIES, OUTBOX_DEPTH, OUTBOX_FENCED
from ppos.controlplane.security.principal import (
    Principal,
    PrincipalKind,
    current_principal,
    current_request_id,
)
from ppos.controlplane.services.governance.common import wait_either
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.models import OutboxRow
from ppos.controlplane.services.governance.outbox import lease as leases
from ppos.controlplane.services.governance.outbox import reachability
from ppos.controlplane.services.governance.outbox.group_commit import GroupCommit
from ppos.controlplane.services.governance.outbox.keeper import LeaseKeeper
from ppos.controlplane.services.governance.outbox.lease import Lease
from ppos.controlplane.services.governance.outbox.outcomes import Outcome, write_outcomes
from ppos.controlplane.services.governance.outbox.receivers import NoReceiver, Receivers, read_ack
from ppos.controlplane.services.governance.outbox.retry import TRANSIENT, backoff_seconds
from ppos.controlplane.services.governance.outbox.slots import DeliverySlots
from ppos.controlplane.storage.leases import DatabaseClock

_log = structlog.get_logger("ppos.governance.dispatcher")
DEPTH_REFRESH_SECONDS = 5.0
# On a clean stop, deliveries in flight get this long to finish and be recorded;
# the leases of the others are handed back (their calls cancelled).
STOP_GRACE_SECONDS = 0.5
# How long a group of outcomes may wait for more before it is recorded (it waits
# only while fewer than half of the outcomes still to come are in): fewer, larger
# transactions under load, at a few milliseconds of a slot's time.
GROUP_LINGER_SECONDS = 0.01


def _principal_of(kind: str, name: str) -> Principal:
    try:
        return Principal(PrincipalKind(kind), name)
    except ValueError:
        return Principal(PrincipalKind.INTERNAL, name)


class Dispatcher:
    """One replica's delivery loop."""

    def __init__(self, deps: GovernanceDeps, receivers: Receivers, *, owner: str = "") -> None:
        self._db = deps.db
        self._settings = settings = deps.settings
        self._receivers = receivers
        self.owner = owner or new_id("disp")
        self._wake = asyncio.Event()
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self._depth_refreshed = 0.0
        self.acknowledged = 0  # deliveries this dispatcher recorded as acknowledged
        self._clock = DatabaseClock(postgres=self._db.is_postgres)
        self._keeper = LeaseKeeper(self._db, self.owner, settings.outbox_lease, self._clock)
        self._slots = DeliverySlots(settings.outbox_concurrency, settings.outbox_target_concurrency)
        self._deliveries: set[asyncio.Task[None]] = set()
        # More may be due: the last claim leased some (on PostgreSQL a claim gets
        # fewer than it asks for while another of this replica's skips its rows).
        self._more_due = False
        self._stopping = False
        self._calling = 0  # deliveries whose call is in flight: outcomes still to come
        self._recorder: GroupCommit[Outcome, bool] = GroupCommit(
            self._record_group, ready=self._group_ready, linger=GROUP_LINGER_SECONDS
        )

    def _group_ready(self, pending: int) -> bool:
        """A group is recorded once at least half the outcomes still to come are in
        (a lone delivery's at once)."""
        return pending >= self._calling

    async def _record_group(self, outcomes: list[Outcome]) -> list[bool]:
        """Record a group of outcomes and, when more commands are due, lease as many
        in the same transaction: one commit per group, not two."""
        refill = self._claim_work(Counter(o.lease.target for o in outcomes))

        def work(session: Session) -> tuple[list[bool], leases.Claimed | None]:
            recorded = write_outcomes(session, self.owner, outcomes, self._clock)
            return recorded, refill(session) if refill else None

        recorded, claimed = await self._db.write(work)
        if claimed is not None:
            self._start(claimed)
        return recorded

    def wake(self) -> None:
        """Look for work now (a command was just committed in this process)."""
        self._more_due = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        _log.info("dispatcher.started", owner=self.owner)
        loop = asyncio.get_running_loop()
        renewing = asyncio.create_task(self._keeper.run(stop), name=f"outbox-leases-{self.owner}")
        try:
            while not stop.is_set():
                try:
                    started = await self.dispatch_once()
                    if loop.time() - self._depth_refreshed > DEPTH_REFRESH_SECONDS:
                        await self.refresh_depth()
                        self._depth_refreshed = loop.time()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                    _log.exception("dispatcher.round_failed")
                    started = 0
                if started and self._slots.free():
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        wait_either(stop, self._wake), self._settings.outbox_poll_interval
                    )
        finally:
            await self._hand_back()
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        _log.info("dispatcher.stopped", owner=self.owner)

    async def _hand_back(self) -> None:
        """A clean stop: let deliveries in flight finish briefly, cancel the rest
        and hand their leases back, so another replica delivers them now."""
        self._stopping = True
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=STOP_GRACE_SECONDS)
        for task in list(self._deliveries):
            task.cancel()
        if self._deliveries:
            await asyncio.wait(set(self._deliveries))
        await self._recorder.idle()
        try:
            await self._keeper.release_all()
        except Exception:  # noqa: BLE001 - they run out by themselves
            _log.exception("dispatcher.release_failed", held=len(self._keeper.held))

    async def dispatch_once(self) -> int:
        """Lease due commands up to the free delivery slots and start delivering
        them; returns how many were started."""
        if not self._more_due:
            # A cheap read first: an idle dispatcher takes no write lock at all.
            full = self._slots.full_targets()
            held = set(self._keeper.held_ids())
            if not self._slots.free() or not await self._db.read(
                lambda s: leases.anything_due(s, self._clock, full, held)
            ):
                return 0
            self._more_due = True
        claim = self._claim_work(Counter())
        if claim is None:
            return 0
        return self._start(await self._db.write(claim))

    def _claim_work(self, freed: Counter[str]) -> Callable[[Session], leases.Claimed] | None:
        """The unit of work leasing due commands into the free slots and `freed`
        (slots of deliveries being recorded, given back once they are); None when
        nothing may be due or no slot is free."""
        free = self._slots.free() + freed.total()
        if self._stopping or not self._more_due or free <= 0:
            return None
        room = self._slots.room()
        for target, count in freed.items():
            room[target] = room.get(target, 0) + count
        full = {target for target, left in room.items() if left <= 0}
        held = set(self._keeper.held_ids())
        limit = min(free, self._settings.outbox_batch_size)

        def claim(session: Session) -> leases.Claimed:
            return leases.claim(
                session,
                self.owner,
                limit=limit,
                room=room,
                room_default=self._slots.per_target,
                ttl=self._settings.outbox_lease,
                clock=self._clock,
                skip_targets=full,
                skip_ids=held,
                lock=self._db.is_postgres,
            )

        return claim

    def _start(self, claimed: leases.Claimed) -> int:
        for command_id, previous in claimed.taken_over:
            _log.warning("dispatcher.lease_expired", command_id=command_id, previous_owner=previous)
        self._more_due = bool(claimed.leases)
        for lease in claimed.leases:
            self._keeper.hold(lease)
            self._slots.take(lease.target)
            task = asyncio.create_task(self._deliver(lease))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return len(claimed.leases)

    async def _deliver(self, lease: Lease) -> None:
        calling = False
        cancelled_calling = False
        try:
            if not self._keeper.fresh(lease):
                # Leased, then this process stalled past the lease: another replica
                # may be delivering it now. Not called; it runs out and is leased again.
                _log.warning("dispatcher.stale_lease_skipped", command_id=lease.command_id)
                return
            calling = True
            self._calling += 1
            try:
                outcome = await self._call(lease)
            finally:
                self._calling -= 1
            calling = False
            self._keeper.settling(lease)
            if await self._recorder.record(outcome):
                self._report(outcome)
            else:
                OUTBOX_FENCED.labels(write="outcome").inc()
                _log.warning(
                    "dispatcher.write_fenced",
                    command_id=lease.command_id,
                    attempts=lease.attempts,
                    owner=self.owner,
                    outcome=outcome.state,
                )
        except asyncio.CancelledError:
            # A clean stop: a call cut short has its lease handed back with the
            # others; an outcome already handed to the recorder is written anyway.
            cancelled_calling = calling
            raise
        except Exception:  # noqa: BLE001 - not recorded: its lease runs out, delivered again
            _log.exception("dispatcher.record_failed", command_id=lease.command_id)
        finally:
            if not cancelled_calling:
                self._keeper.forget(lease)
            self._slots.give(lease.target)
            if self._more_due:
                self._wake.set()

    async def _call(self, lease: Lease) -> Outcome:
        """Make the call; what happened, as an outcome to record (no database here)."""
        # The call is made for whoever caused the command: the token's `act`
        # claim names them, its `rid` the request that caused it.
        principal_token = current_principal.set(
            _principal_of(lease.issued_by_kind, lease.issued_by_name)
        )
        request_token = current_request_id.set(lease.request_id)
        try:
            response = await self._receivers.call(
                lease.target, lease.method, lease.payload, self._settings.outbox_call_timeout
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            detail = f"{code.name}: {exc.details() or ''}"
            partner = reachability.unreachable_partner(exc, lease.method, lease.payload)
            if partner:  # the gateway answered: the partner is what cannot be reached
                held = self._error(lease, detail, transient=True)
                return replace(held, reached=True, unreachable_partner=partner)
            return self._error(lease, detail, code in TRANSIENT)
        except NoReceiver as exc:
            return self._error(lease, f"NO_RECEIVER: {exc}", transient=True)
        finally:
            current_principal.reset(principal_token)
            current_request_id.reset(request_token)
        receiver_id, duplicate = read_ack(lease.method, response)
        return Outcome(lease, "ACKNOWLEDGED", receiver_id=receiver_id, duplicate=duplicate)

    def _error(self, lease: Lease, detail: str, transient: bool) -> Outcome:
        settings = self._settings
        exhausted = 0 < settings.outbox_max_attempts <= lease.attempts
        if not transient:
            return Outcome(lease, "FAILED", detail=detail)
        if exhausted:
            return Outcome(
                lease,
                "FAILED",
                detail=f"gave up after {lease.attempts} attempts; last: {detail}",
                reached=False,
            )
        delay = backoff_seconds(
            lease.attempts, settings.outbox_backoff_base, settings.outbox_backoff_max, self._rng
        )
        return Outcome(lease, "PENDING", detail=detail, retry_in=delay, reached=False)

    def _report(self, outcome: Outcome) -> None:
        lease = outcome.lease
        label = {"ACKNOWLEDGED": "acknowledged", "PENDING": "retry", "FAILED": "failed"}
        OUTBOX_DELIVERIES.labels(target=lease.target, outcome=label[outcome.state]).inc()
        if outcome.state == "ACKNOWLEDGED":
            self.acknowledged += 1
            _log.debug(
                "dispatcher.acknowledged",
                command_id=lease.command_id,
                method=lease.method,
                attempts=lease.attempts,
                duplicate=outcome.duplicate,
            )
            return
        log = _log.warning if outcome.state == "FAILED" else _log.info
        log(
            "dispatcher.delivery_error",
            command_id=lease.command_id,
            method=lease.method,
            attempts=lease.attempts,
            error=outcome.detail,
            outcome=label[outcome.state],
            retry_in=round(outcome.retry_in, 3) if outcome.state == "PENDING" else None,
        )

    async def refresh_depth(self) -> None:
        def work(session: Session) -> dict[str, int]:
            rows = session.execute(
                select(OutboxRow.state, func.count()).group_by(OutboxRow.state)
            ).all()
            return {str(state): int(count) for state, count in rows}

        counts = await self._db.read(work)
        for state in ("PENDING", "SENT", "ACKNOWLEDGED", "FAILED"):
            OUTBOX_DEPTH.labels(state=state).set(counts.get(state, 0))
