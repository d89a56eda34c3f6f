"""The node change log: one global, monotonically increasing resource version.

Every node change writes a `node_events` row in the change's own transaction;
the row's id is the registry's resource version and becomes the node's
`meta.resource_version`. Watchers on every replica tail the log by id, so ids
must become visible in id order:

- PostgreSQL: ids come from a sequence, which alone would let a transaction
  holding id 7 commit after one holding id 8. Every writer therefore takes one
  transaction-scoped advisory lock (the *version lock*) just before it draws
  ids, after every row lock it needs; the lock is released only after commit,
  so ids are drawn and committed in the same order. Taking it last means no
  transaction ever waits for a row while holding it, so there is no deadlock.
  The health sweep is the one writer that takes it first: it then skips rows
  other transactions hold (`FOR UPDATE SKIP LOCKED`) instead of waiting.
  Each transaction that logs changes also NOTIFYs `ppos_node_events` with its
  last version, waking every replica's hub.
- SQLite: one writer at a time (BEGIN IMMEDIATE) gives the same order.

A transaction also leaves the events it logged in `Session.info[LOGGED_KEY]`,
each as the hub would read it back. Once the transaction has committed, the
writer hands them to this process's hub, which applies them without reading
the log when they continue its head (see `WatchHub.offer`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session

from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.services.node_registry.convert import node_to_proto
from ppos.controlplane.services.node_registry.filters import NodeView
from ppos.controlplane.services.node_registry.models import (
    NodeEventLogRow,
    NodeEventRow,
    NodeRow,
)
from ppos.controlplane.storage.locks import is_postgres, transaction_lock

NOTIFY_CHANNEL = "ppos_node_events"
# Set in `Session.info` when a transaction logged change events other than
# through `record_changes` (set-based sweeps): the caller pokes the hub to read them.
CHANGED_KEY = "ppos.noderegistry.changed"
# Set in `Session.info`: the events this transaction logged, as `LoggedEvent`s.
LOGGED_KEY = "ppos.noderegistry.logged"
COMMANDS_CHANNEL = "ppos_node_commands"
# pg_advisory_xact_lock keys (signed 64-bit): 'ppos' 'nrvl' / 'nrsw'.
VERSION_LOCK_KEY = 0x70706F736E72766C
# The last id SQLite handed out for node_events (AUTOINCREMENT keeps it in sqlite_sequence).
SQLITE_LAST_EVENT_ID = (
    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'node_events'), "
    "(SELECT max(event_id) FROM node_events), 0)"
)
SWEEP_LOCK_KEY = 0x70706F736E727377
# A plain table insert: the ORM-enabled insert(NodeEventRow) costs twice as much per batch.
_INSERT_EVENTS = insert(cast(Table, NodeEventRow.__table__))
# The sequence behind node_events.event_id on PostgreSQL, as a constant the
# planner folds once per statement (`pg_get_serial_sequence` in a statement is
# evaluated per row: it was a third of a 100,000-node sweep).
EVENT_ID_SEQUENCE = "'node_events_event_id_seq'::regclass"


# (resource version, node id, the node's filter view, the encoded Node): one
# change event as the watch hub tails it (a view of None: the node's state is
# in a later event).
LoggedEvent = tuple[int, str, NodeView | None, bytes]


def logged_events(session: Session) -> list[LoggedEvent]:
    """The events `record_changes` logged in this transaction, in version order."""
    logged: list[LoggedEvent] = session.info.get(LOGGED_KEY, [])
    return logged


@dataclass(frozen=True)
class Change:
    """One node changed in this transaction: why, and its readiness before."""

    row: NodeRow
    reason: str
    previous_readiness: str


def take_version_lock(session: Session) -> None:
    """Serialise version allocation until commit (PostgreSQL; SQLite has one writer)."""
    transaction_lock(session, VERSION_LOCK_KEY)


def notify(session: Session, channel: str, payload: str = "") -> None:
    """Wake listeners on every replica when this transaction commits (PostgreSQL)."""
    if is_postgres(session):
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
        )


# Draws the ids in order and NOTIFYs the last of them (sent at commit), in one
# round trip: rows come from generate_series in order, each row's nextval is
# evaluated as it is projected, so row :n holds the highest id.
_DRAW_AND_NOTIFY = text(
    f"SELECT v, CASE WHEN g = :n THEN pg_notify(:channel, v::text) END "
    f"FROM (SELECT g, nextval({EVENT_ID_SEQUENCE}) AS v FROM generate_series(1, :n) AS g) AS d"
)


def allocate_versions(session: Session, count: int, *, flush: bool = True) -> list[int]:
    """`count` new resource versions, in order. Takes the version lock first.

    On PostgreSQL the transaction also NOTIFYs the change log's channel with
    the last of them. `flush`: write the session's pending changes before the
    version lock (a new row or a unique value may wait on another transaction,
    which must not happen while holding it); without, they are written after.
    """
    if flush:
        session.flush()
    with session.no_autoflush:
        take_version_lock(session)
        if is_postgres(session):
            drawn = session.execute(_DRAW_AND_NOTIFY, {"n": count, "channel": NOTIFY_CHANNEL})
            return sorted(int(v) for v, _ in drawn)
        base = int(session.scalar(text(SQLITE_LAST_EVENT_ID)) or 0)
        return list(range(base + 1, base + count + 1))


def record_changes(
    session: Session,
    changes: Sequence[Change],
    now: dt.datetime,
    *,
    locked_updates_only: bool = False,
) -> list[node_pb2.Node]:
    """Give each changed node a new resource version and log the change.

    Call it last in the transaction, once every row it changes is locked and
    every field is final: the event carries the node as of its version,
    encoded once here. Returns those Node messages, in the order of `changes`
    (callers answering with the node reuse them instead of converting again).

    `locked_updates_only`: the session's pending changes are all updates of
    rows this transaction has locked, which wait on no one; they are then
    written once, after the versions are drawn, instead of twice.
    """
    if not changes:
        return []
    # Callers locked every row they change (SELECT ... FOR UPDATE) before this:
    # the version lock below is the last lock the transaction takes.
    versions = allocate_versions(session, len(changes), flush=not locked_updates_only)
    nodes = []
    events = []
    logged: list[LoggedEvent] = session.info.setdefault(LOGGED_KEY, [])
    for change, version in zip(changes, versions, strict=True):
        change.row.resource_version = version
        change.row.updated_at = now
        node = node_to_proto(change.row)
        payload = node.SerializeToString()
        nodes.append(node)
        logged.append((version, change.row.node_id, NodeView.of(change.row), payload))
        events.append(
            {
                "event_id": version,
                "node_id": change.row.node_id,
                "created_at": now,
                "reason": change.reason,
                "previous_readiness": change.previous_readiness,
                "readiness": change.row.readiness,
                "payload": payload,
            }
        )
    # One executemany, not ORM objects: nothing reads these rows back in this
    # transaction, and the unit of work was a fifth of a heartbeat batch.
    session.execute(_INSERT_EVENTS, events)  # flushes the changed rows first
    return nodes


def head_version(session: Session) -> int:
    """The registry's current resource version (0 before the first change)."""
    latest = session.scalar(select(func.max(NodeEventRow.event_id)))
    if latest is not None:
        return int(latest)
    return pruned_through(session)


def pruned_through(session: Session) -> int:
    value = session.scalar(
        select(NodeEventLogRow.pruned_through).where(NodeEventLogRow.log_id == 1)
    )
    return int(value or 0)


def consistent_snapshot(session: Session) -> None:
    """Make the rest of this read transaction one snapshot (PostgreSQL REPEATABLE READ).

    Must be the first statement of the transaction. SQLite read transactions in
    WAL mode are snapshots already.
    """
    if is_postgres(session):
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
