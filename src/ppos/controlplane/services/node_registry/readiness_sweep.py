"""Step 1 of a node health sweep: readiness from heartbeat age, in set-based SQL.

In one transaction: heartbeats older than TTL + grace turn any registered node
LOST (`NodeLost`); older than the TTL turn READY into NOT_READY
(`HeartbeatStale`); DRAINING nodes past their drain deadline turn NOT_READY
(`DrainDeadlineExceeded`). Each is one UPDATE that also logs one node event per
changed node and gives it a fresh resource version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, TextClause, bindparam, text
from sqlalchemy.orm import Session

from ppos.controlplane.security.principal import Principal
from ppos.controlplane.services.node_registry.changelog import (
    CHANGED_KEY,
    EVENT_ID_SEQUENCE,
    NOTIFY_CHANNEL,
    SQLITE_LAST_EVENT_ID,
    SWEEP_LOCK_KEY,
    head_version,
    notify,
    take_version_lock,
)
from ppos.controlplane.storage import audit
from ppos.controlplane.storage.base import UTCDateTime
from ppos.controlplane.storage.leases import bound_idle_time
from ppos.controlplane.storage.locks import is_postgres, transaction_lock

SERVICE = "noderegistry"

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


def try_sweep_lock(session: Session, *, wait: bool) -> bool:
    if not is_postgres(session):
        return True
    # A replica frozen mid-sweep would hold the sweep and version locks for as
    # long as it stays frozen, stalling every node write: the server ends it.
    bound_idle_time(session)
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
    if not try_sweep_lock(session, wait=wait):
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
    counts = [
        (_transition_pg if postgres else _transition_sqlite)(
            session,
            {**params, "readiness": readiness, "reason": reason},
            where,
            previous,
            skip_locked=skip_locked,
        )
        for readiness, reason, where, previous in _TRANSITIONS
    ]
    result.marked_lost, result.marked_not_ready, result.drains_expired = counts
    if result.nodes_changed:
        notify(session, NOTIFY_CHANNEL, "")
        session.info[CHANGED_KEY] = True
        _audit_sweep(session, result, now, actor)
    return result


def _transition_pg(
    session: Session,
    values: dict[str, Any],
    where: str,
    previous: str | None,
    *,
    skip_locked: bool,
) -> int:
    """One transition on PostgreSQL: nodes changed and their events logged in one statement."""
    if skip_locked:
        sql = _PG_SKIP_LOCKED
    elif previous is None:
        sql = _PG_UPDATE_FROM
    else:
        sql, values = _PG_UPDATE, {**values, "previous": previous}
    statement = _times(sql.format(where=where, sequence=EVENT_ID_SEQUENCE))
    return int(session.scalar(statement, values) or 0)


def _transition_sqlite(
    session: Session,
    values: dict[str, Any],
    where: str,
    previous: str | None,
    *,
    skip_locked: bool,
) -> int:
    """One transition on SQLite (one writer, no row locks): log the events, then apply them."""
    base = int(session.scalar(text(SQLITE_LAST_EVENT_ID)) or 0)
    logged = session.execute(_times(_SQLITE_LOG.format(where=where)), {**values, "base": base})
    changed = int(cast(CursorResult[Any], logged).rowcount or 0)
    if changed:
        session.execute(_times(_SQLITE_APPLY), {**values, "base": base})
    return changed


def _audit_sweep(
    session: Session, result: SweepResult, now: dt.datetime, actor: Principal | None
) -> None:
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
