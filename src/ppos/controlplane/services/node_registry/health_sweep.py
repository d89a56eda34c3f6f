"""Health sweeps: set-based SQL that applies the heartbeat TTL to every node at once.

One sweep, in order:
1. readiness (one transaction, `readiness_sweep`): stale heartbeats turn
   nodes NOT_READY, then LOST; expired drains end.
2. node commands past their deadline turn TIMED_OUT (and a node REIMAGING for
   one of them NOT_READY), each audited.
3. node events older than the retention are pruned.

On PostgreSQL a transaction-scoped advisory lock lets one replica sweep at a
time: scheduled sweeps skip a round when another replica holds it, on-demand
sweeps wait for it. The sweep is no singleton and needs no lead or fence:
every replica sweeps on its own schedule, so one that dies leaves the others
sweeping as before, and each transition is guarded by the state it leaves
(a sweep run again, or late with an older `now`, changes only what is still
due). A sweep transaction may not sit idle longer than FENCED_IDLE_TIMEOUT,
so a replica frozen in the middle of one releases its locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ppos.controlplane.core.metrics import NODE_SWEEP_CHANGES, NODE_SWEEP_DURATION
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import Principal, current_principal, internal
from ppos.controlplane.services.node_registry import commands, store
from ppos.controlplane.services.node_registry.changelog import (
    Change,
    head_version,
    record_changes,
)
from ppos.controlplane.services.node_registry.lifecycle import set_readiness
from ppos.controlplane.services.node_registry.models import (
    NodeEventLogRow,
    NodeEventRow,
)
from ppos.controlplane.services.node_registry.readiness_sweep import (
    LOCK_NOT_AVAILABLE,
    SweepResult,
    sweep_readiness,
    try_sweep_lock,
)
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.leases import bound_idle_time

_log = structlog.get_logger("ppos.noderegistry.sweep")
COMMAND_BATCH = 500
PRUNE_BATCH = 50_000


def time_out_commands(session: Session, now: dt.datetime) -> int:
    """Step 2 in the caller's transaction (row locks node first, then command)."""
    overdue = commands.overdue(session, now, COMMAND_BATCH)
    if not overdue:
        return 0
    bound_idle_time(session)  # row and version locks: not held through a freeze
    node_ids = sorted({node_id for _, node_id in overdue})
    nodes = store.lock_nodes(session, node_ids)
    changes: list[Change] = []
    count = 0
    for command_id, node_id in overdue:
        row = commands.lock_command(session, command_id)
        if row.state not in ("PENDING", "DELIVERED", "ACKNOWLEDGED") or row.deadline > now:
            continue  # finished or extended meanwhile
        node = nodes.get(node_id)
        acknowledged = row.state == "ACKNOWLEDGED"
        commands.time_out(session, row, node, now)
        count += 1
        if node is not None and acknowledged and node.readiness == "REIMAGING":
            previous = node.readiness
            if set_readiness(node, "NOT_READY", "ReimageTimedOut", now):
                changes.append(Change(node, "ReimageTimedOut", previous))
    record_changes(session, changes, now)
    return count


def prune_events(session: Session, now: dt.datetime, retention: float) -> int:
    """Step 3: drop events older than the retention, remembering how far."""
    cutoff = now - dt.timedelta(seconds=retention)
    newest_old = session.scalar(
        select(NodeEventRow.event_id)
        .where(NodeEventRow.created_at < cutoff)
        .order_by(NodeEventRow.event_id.desc())
        .limit(1)
    )
    if newest_old is None:
        return 0
    lowest = session.scalar(select(NodeEventRow.event_id).order_by(NodeEventRow.event_id).limit(1))
    through = min(int(newest_old), int(lowest or 0) + PRUNE_BATCH)
    deleted = cast(
        CursorResult[Any],
        session.execute(delete(NodeEventRow).where(NodeEventRow.event_id <= through)),
    ).rowcount
    session.execute(
        update(NodeEventLogRow)
        .where(NodeEventLogRow.log_id == 1, NodeEventLogRow.pruned_through < through)
        .values(pruned_through=through)
    )
    return int(deleted or 0)


class HealthSweeper:
    """Runs sweeps on demand and on a schedule."""

    def __init__(
        self,
        db: Database,
        settings: NodeRegistrySettings,
        on_change: Callable[[], None],
    ) -> None:
        self._db = db
        self._settings = settings
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def run(self, *, wait: bool, actor: Principal | None = None) -> SweepResult:
        """One sweep. `wait`: wait for another replica's sweep instead of skipping."""
        started = time.perf_counter()
        now = utcnow()
        settings = self._settings
        who = actor or current_principal.get()

        def readiness(session: Session, skip_locked: bool) -> SweepResult | None:
            return sweep_readiness(
                session,
                now,
                settings.heartbeat_ttl,
                settings.lost_grace,
                wait=wait,
                actor=who,
                skip_locked=skip_locked,
            )

        try:
            result = await self._db.write(functools.partial(readiness, skip_locked=False))
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            _log.info("sweep.lock_timeout", retry="skipping locked rows")
            result = await self._db.write(functools.partial(readiness, skip_locked=True))
        if result is None:
            _log.debug("sweep.skipped", why="another replica is sweeping")
            return SweepResult(sweep_time=now, skipped=True)
        if result.nodes_changed:
            self._on_change()
        result.commands_timed_out = await self._db.write(lambda s: time_out_commands(s, now))
        if result.commands_timed_out:
            self._on_change()
        result.events_pruned = await self._db.write(
            lambda s: (
                prune_events(s, now, settings.event_retention)
                if try_sweep_lock(s, wait=wait)
                else 0
            )
        )
        result.duration = time.perf_counter() - started
        result.resource_version = await self._db.read(head_version)
        _observe(result)
        return result

    def start(self) -> None:
        if self._settings.sweep_interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="node-health-sweep")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; False when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return not self._stopping.is_set()

    async def _loop(self) -> None:
        actor = internal("health-sweep")
        if not await self._sleep(self._settings.sweep_start_delay):
            return
        while True:
            try:
                await self.run(wait=False, actor=actor)
            except Exception:  # noqa: BLE001 - logged; the schedule must go on
                _log.exception("sweep.failed")
            if not await self._sleep(self._settings.sweep_interval):
                return

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None


def _observe(result: SweepResult) -> None:
    """A finished sweep in the metrics and the log."""
    NODE_SWEEP_DURATION.observe(result.duration)
    for name, value in (
        ("ready_to_not_ready", result.marked_not_ready),
        ("to_lost", result.marked_lost),
        ("drain_expired", result.drains_expired),
        ("command_timed_out", result.commands_timed_out),
    ):
        if value:
            NODE_SWEEP_CHANGES.labels(transition=name).inc(value)
    _log.info(
        "sweep.done",
        marked_not_ready=result.marked_not_ready,
        marked_lost=result.marked_lost,
        drains_expired=result.drains_expired,
        commands_timed_out=result.commands_timed_out,
        events_pruned=result.events_pruned,
        seconds=round(result.duration, 4),
    )
