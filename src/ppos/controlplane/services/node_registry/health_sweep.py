"""Health sweeps: set-based SQL that applies the heartbeat TTL to every node at once.

One sweep, in order:
1. readiness (one transaction): heartbeats older than TTL + grace turn any
   registered node LOST (`NodeLost`); older than the TTL turn READY into
   NOT_READY (`HeartbeatStale`); DRAINING nodes past their drain deadline turn
   NOT_READY (`DrainDeadlineExceeded`). Each is one UPDATE that also logs one
   node event per changed node and gives it a fresh resource version.
2. node commands past their deadline turn TIMED_OUT (and a node REIMAGING for
   one of them NOT_READY), each audited.
3. node events older than the retention are pruned.

On PostgreSQL a transaction-scoped advisory lock lets one replica sweep at a
time: scheduled sweeps skip a round when another replica holds it, on-demand
sweeps wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, TextClause, bindparam, delete, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ppos.controlplane.core.metrics import NODE_SWEEP_CHANGES, NODE_SWEEP_DURATION
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.security.principal import Principal, current_principal, internal
from ppos.controlplane.services.node_registry import commands
from ppos.controlplane.services.node_registry.changelog import (
    CHANGED_KEY,
    EVENT_ID_SEQUENCE,
    NOTIFY_CHANNEL,
    SQLITE_LAST_EVENT_ID,
    SWEEP_LOCK_KEY,
    Change,
    head_version,
    notify,
    record_changes,
    take_version_lock,
)
from ppos.controlplane.services.node_registry.lifecycle import set_readiness
from ppos.controlplane.services.node_registry.models import (
    NodeEventLogRow,
    NodeEventRow,
    NodeRow,
)
from ppos.controlplane.services.node_registry.settings import NodeRegistrySettings
from ppos.controlplane.storage import audit
from ppos.controlplane.storage.base import UTCDateTime
from ppos.controlplane.storage.database import Database
from ppos.controlplane.storage.locks import is_postgres, transaction_lock

_log = structlog.get_logger("ppos.noderegistry.sweep")
SERVICE = "noderegistry"
COMMAND_BATCH = 500
PRUNE_BATCH = 50_000

# (new readiness, reason, WHERE over `nodes`, readiness before when the WHERE fixes
# it): applied in this order.
_TRANSITIONS: tuple[tuple[str, str, str, str | None], ...] = (
    (
        "LOST",
        "NodeLost",
        "registered AND readiness <> 'LOST' AND last_heartbeat_at < :lost_cutoff",
        None,
    ),
    (
        "NOT_READY",
        "HeartbeatStale",
        "readiness = 'READY' AND last_heartbeat_at < :stale_cutoff",
        "READY",
    ),
    (
        "NOT_READY",
        "DrainDeadlineExceeded",
        "readiness = 'DRAINING' AND drain_deadline < :now",
        "DRAINING",
    ),
)
# Longest a PostgreSQL sweep holding the version lock waits for a row another
# transaction holds (which may itself wait for the version lock) before it
# gives up and runs again skipping locked rows.
LOCK_TIMEOUT = "250ms"
LOCK_NOT_AVAILABLE = "55P03"

# Fast path: one UPDATE that takes its own row locks (no separate locking pass).
_PG_UPDATE = """
WITH changed AS (
  UPDATE nodes SET readiness = :readiness, readiness_reason = :reason,
    last_transition_at = :now, updated_at = :now,
    resource_version = nextval({sequence})
  WHERE {where}
  RETURNING node_id, resource_version
), logged AS (
  INSERT INTO node_events (event_id, node_id, created_at, reason, previous_readiness, readiness)
  SELECT resource_version, node_id, :now, :reason, :previous, :readiness FROM changed
  RETURNING 1
)
SELECT count(*) FROM logged
"""
# Fast path when the readiness before varies: the old values come from a plain read
# of the same rows (no locks), joined to the UPDATE.
_PG_UPDATE_FROM = """
WITH changed AS (
  UPDATE nodes SET readiness = :readiness, readiness_reason = :reason,
    last_transition_at = :now, updated_at = :now,
    resource_version = nextval({sequence})
  FROM (SELECT node_id AS old_id, readiness AS old_readiness FROM nodes WHERE {where}) AS old
  WHERE nodes.node_id = old.old_id AND {where}
  RETURNING nodes.node_id, nodes.resource_version, old.old_readiness
), logged AS (
  INSERT INTO node_events (event_id, node_id, created_at, reason, previous_readiness, readiness)
  SELECT resource_version, node_id, :now, :reason, old_readiness, :readiness FROM changed
  RETURNING 1
)
SELECT count(*) FROM logged
"""
# Slow path (after a lock timeout): skip rows other transactions hold.
_PG_SKIP_LOCKED = """
WITH candidates AS (
  SELECT node_id, readiness AS previous FROM nodes WHERE {where}
  FOR UPDATE SKIP LOCKED
), changed AS (
  UPDATE nodes SET readiness = :readiness, readiness_reason = :reason,
    last_transition_at = :now, updated_at = :now,
    resource_version = nextval({sequence})
  FROM candidates WHERE nodes.node_id = candidates.node_id
  RETURNING nodes.node_id, nodes.resource_version, candidates.previous
), logged AS (
  INSERT INTO node_events (event_id, node_id, created_at, reason, previous_readiness, readiness)
  SELECT resource_version, node_id, :now, :reason, previous, :readiness FROM changed
  RETURNING 1
)
SELECT count(*) FROM logged
"""

_SQLITE_LOG = """
INSERT INTO node_events (event_id, node_id, created_at, reason, previous_readiness, readiness)
SELECT :base + row_number() OVER (ORDER BY node_id), node_id, :now, :reason, readiness, :readiness
FROM nodes WHERE {where}
"""
_SQLITE_APPLY = """
UPDATE nodes SET readiness = :readiness, readiness_reason = :reason,
  last_transition_at = :now, updated_at = :now, resource_version = e.event_id
FROM node_events AS e WHERE e.event_id > :base AND e.node_id = nodes.node_id
"""


def _times(sql: str) -> TextClause:
    """`sql` with its time parameters bound as UTC datetimes (both dialects)."""
    statement = text(sql)
    names = [n for n in ("now", "lost_cutoff", "stale_cutoff") if f":{n}" in sql]
    return statement.bindparams(*(bindparam(n, type_=UTCDateTime) for n in names))


@dataclass
class SweepResult:
    sweep_time: dt.datetime
    marked_lost: int = 0
    marked_not_ready: int = 0
    drains_expired: int = 0
    commands_timed_out: int = 0
    events_pruned: int = 0
    resource_version: int = 0
    duration: float = 0.0
    skipped: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def nodes_changed(self) -> int:
        return self.marked_lost + self.marked_not_ready + self.drains_expired


def _try_sweep_lock(session: Session, *, wait: bool) -> bool:
    if not is_postgres(session):
        return True
    if wait:
        transaction_lock(session, SWEEP_LOCK_KEY)
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK_KEY}))


def sweep_readiness(
    session: Session,
    now: dt.datetime,
    ttl: float,
    grace: float,
    *,
    wait: bool,
    actor: Principal | None = None,
    skip_locked: bool = False,
) -> SweepResult | None:
    """Step 1 in the caller's transaction; None when another replica is sweeping.

    PostgreSQL: with the version lock held, the UPDATEs wait at most
    LOCK_TIMEOUT for a row another transaction holds (it may be waiting for the
    version lock); then the transaction fails with LOCK_NOT_AVAILABLE and the
    caller runs it again with `skip_locked`, which never waits.
    """
    if not _try_sweep_lock(session, wait=wait):
        return None
    result = SweepResult(sweep_time=now)
    params = {
        "now": now,
        "stale_cutoff": now - dt.timedelta(seconds=ttl),
        "lost_cutoff": now - dt.timedelta(seconds=ttl + grace),
    }
    postgres = is_postgres(session)
    if postgres:
        # The version lock first (the one writer that does so): see above.
        session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        take_version_lock(session)
    counts = []
    for readiness, reason, where, previous in _TRANSITIONS:
        values = {**params, "readiness": readiness, "reason": reason}
        if postgres:
            if skip_locked:
                sql = _PG_SKIP_LOCKED
            elif previous is None:
                sql = _PG_UPDATE_FROM
            else:
                sql, values = _PG_UPDATE, {**values, "previous": previous}
            changed = int(
                session.scalar(_times(sql.format(where=where, sequence=EVENT_ID_SEQUENCE)), values)
                or 0
            )
        else:
            base = int(session.scalar(text(SQLITE_LAST_EVENT_ID)) or 0)
            logged = session.execute(
                _times(_SQLITE_LOG.format(where=where)), {**values, "base": base}
            )
            changed = int(cast(CursorResult[Any], logged).rowcount or 0)
            if changed:
                session.execute(_times(_SQLITE_APPLY), {**values, "base": base})
        counts.append(changed)
    result.marked_lost, result.marked_not_ready, result.drains_expired = counts
    if result.nodes_changed:
        notify(session, NOTIFY_CHANNEL, "")
        session.info[CHANGED_KEY] = True
        audit.record(  # one entry for the sweep; each node's transition is in node_events
            session,
            service=SERVICE,
            resource_kind="node_health_sweep",
            resource_id=now.isoformat(),
            before=None,
            after={
                "marked_lost": result.marked_lost,
                "marked_not_ready": result.marked_not_ready,
                "drains_expired": result.drains_expired,
                "resource_version": head_version(session),
            },
            actor=actor,
        )
    return result


def time_out_commands(session: Session, now: dt.datetime) -> int:
    """Step 2 in the caller's transaction (row locks node first, then command)."""
    overdue = commands.overdue(session, now, COMMAND_BATCH)
    if not overdue:
        return 0
    node_ids = sorted({node_id for _, node_id in overdue})
    nodes = {
        row.node_id: row
        for row in session.scalars(
            select(NodeRow)
            .where(NodeRow.node_id.in_(node_ids))
            .order_by(NodeRow.node_id)
            .with_for_update()
        )
    }
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
                if _try_sweep_lock(s, wait=wait)
                else 0
            )
        )
        result.duration = time.perf_counter() - started
        result.resource_version = await self._db.read(head_version)
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
