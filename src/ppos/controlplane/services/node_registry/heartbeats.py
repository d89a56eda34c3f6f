"""Heartbeats, applied in batches: one transaction (and one commit) for many nodes.

Heartbeats are the registry's hottest write: every node, every interval. Run
one transaction each and a fleet is bounded by commit latency and, worse, by
the worker thread waiting for the GIL after each of its statements while the
event loop is busy streaming. So heartbeats queue here and a single task
applies whatever has queued as one transaction with a constant number of
statements: lock the batch's nodes (in id order), load their open commands,
decide every heartbeat in Python, then the version lock, one statement that
draws the versions (and NOTIFYs, on PostgreSQL), the changed nodes written
once (an executemany) and the events inserted (another). Once committed, the
batch's events go to the watch hub as they were written. Heartbeats that
arrive while a batch is being written form the next one (group commit), so a
quiet registry answers at once and a busy one amortises.

Each heartbeat is decided on its own: a refusal (revoked credential, not
registered, slots above capacity) fails only that heartbeat and changes
nothing for it. A node appears at most once per batch (a second heartbeat of
the same node waits for the next), so each answer is the node as of its own
heartbeat. Lock order is the registry's: nodes, then commands, then the
version lock last.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    Unauthenticated,
)
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.node_registry import commands
from ppos.controlplane.services.node_registry.changelog import (
    Change,
    LoggedEvent,
    logged_events,
    record_changes,
)
from ppos.controlplane.services.node_registry.convert import (
    command_to_proto,
    node_snapshot,
    node_to_proto,
)
from ppos.controlplane.services.node_registry.lifecycle import (
    ACTIVE_COMMAND_STATES,
    heartbeat_readiness,
    set_readiness,
)
from ppos.controlplane.services.node_registry.models import NodeCommandRow, NodeRow
from ppos.controlplane.services.node_registry.store import audit_node
from ppos.controlplane.storage.database import Database

_log = structlog.get_logger("ppos.noderegistry.heartbeats")
MAX_BATCH = 256


@dataclass
class Beat:
    principal: Principal
    request: pb.HeartbeatRequest
    context: contextvars.Context
    future: asyncio.Future[tuple[node_pb2.Node, list[node_pb2.NodeCommand]]]


@dataclass
class _Outcome:
    beat: Beat
    row: NodeRow | None = None
    error: DomainError | None = None
    change: Change | None = None
    before: dict[str, object] | None = None
    audited: bool = False
    delivered: list[NodeCommandRow] = field(default_factory=list)
    node: node_pb2.Node | None = None
    commands: list[node_pb2.NodeCommand] = field(default_factory=list)


def _decide(
    session: Session,
    outcome: _Outcome,
    row: NodeRow | None,
    waiting: list[NodeCommandRow],
    now: dt.datetime,
) -> None:
    """One heartbeat against its (locked) node row; runs in the caller's context."""
    request, principal = outcome.beat.request, outcome.beat.principal
    if row is None or row.credential_generation != principal.credential_generation:
        raise Unauthenticated(
            "node credential revoked or node unknown", reason="NODE_CREDENTIAL_REVOKED"
        )
    if not row.registered:
        raise FailedPrecondition(
            "register the node before it heartbeats",
            [PreconditionViolation("NODE_STATE", f"node/{row.node_id}", "not registered")],
            reason="NODE_NOT_REGISTERED",
        )
    if request.slots_in_use > row.capacity_slots:
        raise InvalidArgument.single(
            "slots_in_use",
            f"must not exceed the registered capacity ({row.capacity_slots}), "
            f"got {request.slots_in_use}",
        )
    outcome.row = row
    before = node_snapshot(row)
    previous = row.readiness
    readiness, why = heartbeat_readiness(
        row,
        ready=request.ready,
        not_ready_reason=request.not_ready_reason,
        slots_in_use=request.slots_in_use,
        reimage_in_progress=commands.reimage_running(waiting),
    )
    readiness_changed = set_readiness(row, readiness, why, now)
    container = (request.container.image, request.container.digest)
    container_changed = bool(request.container.image) and container != (
        row.container_image,
        row.container_digest,
    )
    if container_changed:
        row.container_image, row.container_digest = container
    slots_changed = row.slots_in_use != request.slots_in_use
    row.slots_in_use = request.slots_in_use
    row.last_heartbeat_at = now  # liveness: refreshed in place, unversioned
    outcome.delivered = commands.hand_over(session, waiting, now, include_delivered=True)
    if readiness_changed or container_changed or slots_changed:
        reason = (
            why
            if readiness_changed
            else "ContainerChanged"
            if container_changed
            else "SlotsChanged"
        )
        outcome.change = Change(row, reason, previous)
    if readiness_changed or container_changed:  # telemetry (slots) is not audited
        outcome.before, outcome.audited = before, True


# Built once (expanding parameters), not per batch: constructing them was a
# tenth of a small batch's CPU.
_LOCK_NODES = (
    select(NodeRow)
    .where(NodeRow.node_id.in_(bindparam("ids", expanding=True)))
    .order_by(NodeRow.node_id)
    .with_for_update()
)
_LOCK_OPEN_COMMANDS = (
    select(NodeCommandRow)
    .where(
        NodeCommandRow.node_id.in_(bindparam("ids", expanding=True)),
        NodeCommandRow.state.in_(ACTIVE_COMMAND_STATES),
    )
    .order_by(NodeCommandRow.created_at, NodeCommandRow.command_id)
    .with_for_update()
)


def apply_batch(session: Session, beats: list[Beat]) -> list[_Outcome]:
    """Apply heartbeats of distinct nodes in the caller's transaction."""
    now = utcnow()
    ids = sorted({beat.principal.name for beat in beats})
    rows = {row.node_id: row for row in session.scalars(_LOCK_NODES, {"ids": ids})}
    waiting: dict[str, list[NodeCommandRow]] = {node_id: [] for node_id in ids}
    for command in session.scalars(_LOCK_OPEN_COMMANDS, {"ids": ids}):
        waiting[command.node_id].append(command)
    outcomes = []
    for beat in beats:
        outcome = _Outcome(beat)
        node_id = beat.principal.name
        try:
            beat.context.run(_decide, session, outcome, rows.get(node_id), waiting[node_id], now)
        except DomainError as exc:
            outcome.error = exc
        outcomes.append(outcome)
    changed = [o for o in outcomes if o.change is not None]
    encoded = record_changes(  # only locked nodes and commands changed
        session, [o.change for o in changed if o.change is not None], now, locked_updates_only=True
    )
    for outcome, node in zip(changed, encoded, strict=True):
        outcome.node = node  # the node as its change event carries it
    for outcome in outcomes:
        if outcome.row is None:
            continue
        if outcome.audited:
            outcome.beat.context.run(audit_node, session, outcome.row, outcome.before)
        if outcome.node is None:
            outcome.node = node_to_proto(outcome.row)
        outcome.commands = [command_to_proto(c) for c in outcome.delivered]
    return outcomes


def _write_batch(beats: list[Beat], session: Session) -> tuple[list[_Outcome], list[LoggedEvent]]:
    return apply_batch(session, beats), logged_events(session)


class HeartbeatBatcher:
    """Queues heartbeats and applies them in batches on one task."""

    def __init__(self, db: Database, on_logged: Callable[[Sequence[LoggedEvent]], None]) -> None:
        self._db = db
        self._on_logged = on_logged  # called with a committed batch's change events
        self._queue: list[Beat] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(
        self, principal: Principal, request: pb.HeartbeatRequest
    ) -> tuple[node_pb2.Node, list[node_pb2.NodeCommand]]:
        loop = asyncio.get_running_loop()
        beat = Beat(principal, request, contextvars.copy_context(), loop.create_future())
        self._queue.append(beat)
        if self._task is None or self._task.done():
            # A context of its own: not the first caller's (its request id, its logs).
            self._task = asyncio.create_task(
                self._drain(), name="heartbeat-batches", context=contextvars.Context()
            )
        return await beat.future

    def _next_batch(self) -> list[Beat]:
        batch: list[Beat] = []
        rest: list[Beat] = []
        seen: set[str] = set()
        for beat in self._queue:
            if beat.future.done():
                continue  # the caller went away
            if beat.principal.name in seen or len(batch) >= MAX_BATCH:
                rest.append(beat)
            else:
                seen.add(beat.principal.name)
                batch.append(beat)
        self._queue = rest
        return batch

    async def _drain(self) -> None:
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            started = asyncio.get_running_loop().time()
            try:
                outcomes, logged = await self._db.write(functools.partial(_write_batch, batch))
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
                _log.warning("heartbeats.batch_failed", size=len(batch), error=type(exc).__name__)
                for beat in batch:
                    if not beat.future.done():
                        beat.future.set_exception(exc)
                continue
            _log.debug(
                "heartbeats.batch",
                size=len(batch),
                queued=len(self._queue),
                seconds=round(asyncio.get_running_loop().time() - started, 4),
            )
            if logged:
                self._on_logged(logged)
            for outcome in outcomes:
                future = outcome.beat.future
                if future.done():
                    continue
                if outcome.error is not None:
                    future.set_exception(outcome.error)
                else:
                    assert outcome.node is not None
                    future.set_result((outcome.node, outcome.commands))
