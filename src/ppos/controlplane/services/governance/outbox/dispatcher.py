"""The outbox dispatcher: delivers committed commands, exactly once in effect.

Each round leases a batch of due commands in one transaction (PENDING and due,
or SENT with an expired lease), marking them SENT with this replica as lease
owner; on PostgreSQL `FOR UPDATE SKIP LOCKED` lets replicas share the work
without waiting on each other, on SQLite the single writer serialises it. The
lease is longer than a call's deadline, so a command is never in flight from
two replicas at once; a replica that dies mid-delivery leaves its lease to run
out, and the next delivery carries the same idempotency key, which the
receiver answers as a duplicate.

Outcomes: an acknowledgement ends the command (ACKNOWLEDGED, with the
receiver's id and whether it was a duplicate); a transient error (the
receiver unreachable, slow, overloaded) puts it back to PENDING after a
jittered exponential backoff and holds it there as long as it takes; a refusal
(the receiver says the request is wrong) ends it FAILED with the error, for an
operator to look at and, if they choose, RetryCommand.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from dataclasses import dataclass, replace
from typing import Any

import grpc
import structlog
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from ppos.controlplane.core.ids import new_id
from ppos.controlplane.core.metrics import OUTBOX_DELIVERIES, OUTBOX_DEPTH
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import (
    Principal,
    PrincipalKind,
    current_principal,
    current_request_id,
    internal,
)
from ppos.controlplane.services.governance.common import SERVICE, wait_either
from ppos.controlplane.services.governance.convert import command_snapshot
from ppos.controlplane.services.governance.deps import GovernanceDeps
from ppos.controlplane.services.governance.enums import GATEWAY_QUEUE_STATE
from ppos.controlplane.services.governance.models import OutboxRow, PartnerRouteRow, QueueRow
from ppos.controlplane.services.governance.outbox import reachability
from ppos.controlplane.services.governance.outbox.commands import gateway_method
from ppos.controlplane.services.governance.outbox.group_commit import GroupCommit
from ppos.controlplane.services.governance.outbox.receivers import NoReceiver, Receivers, read_ack
from ppos.controlplane.services.governance.outbox.retry import TRANSIENT, backoff_seconds
from ppos.controlplane.storage import audit
from ppos.preflight.v1 import gateway_service_pb2 as gw_pb

_log = structlog.get_logger("ppos.governance.dispatcher")
DISPATCHER = internal("outbox-dispatcher")
DEPTH_REFRESH_SECONDS = 5.0
MAX_ERROR = 2000


@dataclass(frozen=True)
class Lease:
    """A command this replica is delivering now."""

    command_id: str
    target: str
    method: str
    payload: bytes
    attempts: int
    issued_by_kind: str
    issued_by_name: str
    request_id: str


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to, waiting to be recorded."""

    lease: Lease
    state: str  # ACKNOWLEDGED, PENDING (retry later) or FAILED
    receiver_id: str = ""
    duplicate: bool = False
    detail: str = ""
    retry_in: float = 0.0
    reached: bool = True  # the receiver answered (False: unreachable, slow, overloaded)
    unreachable_partner: str = ""  # the gateway answered that it cannot reach this partner


def _principal_of(kind: str, name: str) -> Principal:
    try:
        return Principal(PrincipalKind(kind), name)
    except ValueError:
        return Principal(PrincipalKind.INTERNAL, name)


class Dispatcher:
    """One replica's delivery loop."""

    def __init__(self, deps: GovernanceDeps, receivers: Receivers, *, owner: str = "") -> None:
        self._db = deps.db
        self._settings = deps.settings
        self._receivers = receivers
        self.owner = owner or new_id("disp")
        self._wake = asyncio.Event()
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self._depth_refreshed = 0.0
        self.acknowledged = 0  # deliveries this dispatcher saw acknowledged
        self._recorder = GroupCommit(self._record_group)

    async def _record_group(self, outcomes: list[Outcome]) -> None:
        await self._db.write(lambda session: self._write_outcomes(session, outcomes))

    def wake(self) -> None:
        """Look for work now (a command was just committed in this process)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        _log.info("dispatcher.started", owner=self.owner)
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                delivered = await self.dispatch_once()
                if loop.time() - self._depth_refreshed > DEPTH_REFRESH_SECONDS:
                    await self.refresh_depth()
                    self._depth_refreshed = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                _log.exception("dispatcher.round_failed")
                delivered = 0
            if delivered:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    wait_either(stop, self._wake), self._settings.outbox_poll_interval
                )
        _log.info("dispatcher.stopped", owner=self.owner)

    def _due(self) -> Any:
        now = utcnow()
        return or_(
            and_(OutboxRow.state == "PENDING", OutboxRow.next_attempt_at <= now),
            and_(OutboxRow.state == "SENT", OutboxRow.lease_expires_at < now),
        )

    def _anything_due(self, session: Session) -> bool:
        return (
            session.scalars(select(OutboxRow.command_id).where(self._due()).limit(1)).first()
            is not None
        )

    async def dispatch_once(self) -> int:
        """Lease a batch of due commands and deliver them; returns how many."""
        # A cheap read first: an idle dispatcher takes no write lock at all.
        if not await self._db.read(self._anything_due):
            return 0
        leases = await self._db.write(self._claim)
        if not leases:
            return 0
        limit = asyncio.Semaphore(self._settings.outbox_concurrency)

        async def bounded(lease: Lease) -> None:
            # At most `concurrency` calls in flight; recording the outcome happens
            # outside the limit, so calls go on while a group commit is written.
            async with limit:
                outcome = await self._call(lease)
            await self._recorder.record(outcome)
            self._report(outcome)

        await asyncio.gather(*(bounded(lease) for lease in leases))
        return len(leases)

    def _claim(self, session: Session) -> list[Lease]:
        now = utcnow()
        query = (
            select(OutboxRow)
            .where(self._due())
            .order_by(OutboxRow.next_attempt_at, OutboxRow.command_id)
            .limit(self._settings.outbox_batch_size)
        )
        if self._db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        expires = now + dt.timedelta(seconds=self._settings.outbox_lease)
        leases = []
        for row in rows:
            if row.state == "SENT":
                _log.warning(
                    "dispatcher.lease_expired",
                    command_id=row.command_id,
                    previous_owner=row.lease_owner,
                )
            row.state = "SENT"
            row.lease_owner = self.owner
            row.lease_expires_at = expires
            row.attempts += 1
            row.updated_at = now
            leases.append(
                Lease(
                    row.command_id,
                    row.target,
                    row.method,
                    row.request_payload,
                    row.attempts,
                    row.issued_by_kind,
                    row.issued_by_name,
                    row.request_id,
                )
            )
        return leases

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

    def _owned(self, session: Session, leases: list[Lease]) -> dict[str, OutboxRow]:
        """The rows of `leases` this dispatcher still holds (locked), by command id."""
        query = select(OutboxRow).where(
            OutboxRow.command_id.in_([lease.command_id for lease in leases]),
            OutboxRow.state == "SENT",
            OutboxRow.lease_owner == self.owner,
        )
        if self._db.is_postgres:
            query = query.order_by(OutboxRow.command_id).with_for_update()
        rows = {row.command_id: row for row in session.scalars(query)}
        for lease in leases:
            if lease.command_id not in rows:
                _log.warning("dispatcher.lease_lost", command_id=lease.command_id)
        return rows

    def _write_outcomes(self, session: Session, outcomes: list[Outcome]) -> None:
        """Record a group of outcomes in one transaction (a group commit)."""
        rows = self._owned(session, [outcome.lease for outcome in outcomes])
        acknowledged: list[OutboxRow] = []
        for outcome in outcomes:
            row = rows.get(outcome.lease.command_id)
            if row is None:
                continue
            before = command_snapshot(row)
            now = utcnow()
            row.lease_owner = ""
            row.lease_expires_at = None
            row.updated_at = now
            row.state = outcome.state
            if outcome.state == "PENDING":
                row.last_error = outcome.detail[:MAX_ERROR]
                row.next_attempt_at = now + dt.timedelta(seconds=outcome.retry_in)
                continue  # a retry is routine: visible on the row, not an audit event
            if outcome.state == "ACKNOWLEDGED":
                row.receiver_command_id = outcome.receiver_id[:128]
                row.receiver_duplicate = outcome.duplicate
                row.acknowledged_at = now
                row.last_error = ""
                acknowledged.append(row)
            else:
                row.last_error = outcome.detail[:MAX_ERROR]
            audit.record(
                session,
                service=SERVICE,
                resource_kind="command",
                resource_id=row.command_id,
                before=before,
                after=command_snapshot(row),
                method=f"outbox:{outcome.state.lower()}",
                actor=DISPATCHER,
            )
        _apply_statuses(session, acknowledged)
        reachability.note_deliveries(
            session,
            [(o.lease.target, o.reached, o.detail) for o in outcomes],
            DISPATCHER,
        )
        reachability.note_partners(
            session,
            [
                (o.lease.method, o.lease.payload, o.state, o.unreachable_partner, o.detail)
                for o in outcomes
            ],
            DISPATCHER,
        )

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


def _apply_statuses(session: Session, acknowledged: list[OutboxRow]) -> None:
    """Record what the gateways now hold (newer generations only).

    Lock order: handlers lock a tenant, then its queues (by id), then its routes
    (by id); here, after this dispatcher's own leased commands (which no handler
    waits for while holding a tenant), queues by key, then routes by key, each row
    updated once. Once matters on PostgreSQL: a second UPDATE of a row this
    transaction already updated re-checks its foreign key, taking a KEY SHARE lock
    on the tenant, which a handler holding the tenant and waiting for the queue
    blocks: the deadlock the load found.
    """
    queues: dict[tuple[str, str], gw_pb.ApplyQueuePolicyRequest] = {}
    routes: dict[str, int] = {}
    for row in acknowledged:
        if row.method == gateway_method("ApplyQueuePolicy"):
            queue = gw_pb.ApplyQueuePolicyRequest.FromString(row.request_payload)
            key = (queue.tenant_id, queue.queue_id)
            if key not in queues or queues[key].generation < queue.generation:
                queues[key] = queue
        elif row.method == gateway_method("ApplyPartnerRoute"):
            route = gw_pb.ApplyPartnerRouteRequest.FromString(row.request_payload)
            if not route.delete:
                routes[route.route_id] = max(routes.get(route.route_id, 0), route.generation)
    now = utcnow()
    for (tenant_id, queue_id), queue in sorted(queues.items()):
        session.execute(
            update(QueueRow)
            .where(
                QueueRow.tenant_id == tenant_id,
                QueueRow.queue_id == queue_id,
                QueueRow.applied_generation < queue.generation,
            )
            .values(
                applied_capacity=queue.capacity,
                applied_state=GATEWAY_QUEUE_STATE.to_name(queue.state),
                applied_generation=queue.generation,
                applied_at=now,
            )
        )
    for route_id, generation in sorted(routes.items()):
        session.execute(
            update(PartnerRouteRow)
            .where(
                PartnerRouteRow.route_id == route_id,
                PartnerRouteRow.applied_generation < generation,
            )
            .values(applied_generation=generation)
        )
