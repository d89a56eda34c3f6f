"""Command leases: which replica delivers a command now, fenced in every write.

A dispatcher leases due commands (PENDING and due, or SENT under a lease that
has run out) by marking them SENT with itself as owner and an expiry. Each
lease increments the command's `attempts`: (owner, attempts) is the lease's
fencing token. While a delivery is in flight the dispatcher renews its leases
(keeper.py), so a replica that stops renewing (killed, frozen, cut off) loses
them `PPOS_OUTBOX_LEASE` after its last renewal and any replica leases them
again. Every write for a leased command is one statement whose WHERE names
the token and state SENT (`held_by`): a replica whose lease has passed to
another changes nothing, and sees so in the rows the statement returns.

Expiry is by `DatabaseClock` (storage/leases.py): the database's clock on
PostgreSQL (replicas on many hosts), this host's on SQLite (one host). The
statements are Core statements on the table: no ORM identity map to keep in
step, one statement per batch. Due commands are looked for in two index
searches (PENDING by due time, SENT with an expired lease), never by an OR
that would scan every command the outbox ever held.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    exists,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from ppos.controlplane.services.governance.models import OutboxRow
from ppos.controlplane.services.governance.snapshots import command_snapshot
from ppos.controlplane.storage.leases import DatabaseClock

OUTBOX = cast(Table, OutboxRow.__table__)
_C = OUTBOX.c
# What a claim reads: every column but the request's JSON rendering (for people).
_LEASED_COLUMNS = [column for column in OUTBOX.c if column.name != "request_json"]


@dataclass(frozen=True)
class Lease:
    """A command this replica is delivering now, and its fencing token."""

    command_id: str
    attempts: int  # with the owner, the token every write for this lease checks
    target: str
    method: str
    payload: bytes
    issued_by_kind: str
    issued_by_name: str
    request_id: str
    snapshot: dict[str, Any]  # the command as leased (the audit entry's `before`)
    leased_at: float  # time.monotonic() as the claim ran (freshness by this host's clock)


def _held(owner: Any, tokens: Any) -> ColumnElement[bool]:
    """Rows still SENT and leased to `owner` under one of `tokens` ((command id,
    attempts) pairs): values, or bind parameters in a statement built once."""
    return and_(
        _C.state == "SENT",
        _C.lease_owner == owner,
        tuple_(_C.command_id, _C.attempts).in_(tokens),
    )


def held_by(owner: str, leases: Iterable[Lease]) -> ColumnElement[bool]:
    """The rows of `leases` still leased to `owner` under the same token."""
    return _held(owner, [(lease.command_id, lease.attempts) for lease in leases])


@functools.cache
def held_by_token(postgres: bool) -> Select[str]:
    """The command ids of `b_tokens` ((command id, attempts) pairs) still leased
    to `b_owner` (`token_values`), built once; on PostgreSQL it locks them until
    commit, so no other replica leases them meanwhile."""
    query = select(_C.command_id).where(
        _held(bindparam("b_owner"), bindparam("b_tokens", expanding=True))
    )
    return query.with_for_update() if postgres else query


def token_values(owner: str, leases: Iterable[Lease]) -> dict[str, Any]:
    return {"b_owner": owner, "b_tokens": [(lease.command_id, lease.attempts) for lease in leases]}


def _due(expired: bool, now: ColumnElement[dt.datetime]) -> list[ColumnElement[bool]]:
    """Commands due by `now`: PENDING ones whose attempt is due, or (`expired`)
    SENT ones whose lease has run out."""
    if expired:
        return [_C.state == "SENT", _C.lease_expires_at < now]
    return [_C.state == "PENDING", _C.next_attempt_at <= now]


def _skipping(
    conditions: list[ColumnElement[bool]],
    skip_targets: Collection[str],
    skip_ids: Collection[str],
) -> list[ColumnElement[bool]]:
    if skip_targets:
        conditions.append(_C.target.not_in(sorted(skip_targets)))
    if skip_ids:
        conditions.append(_C.command_id.not_in(sorted(skip_ids)))
    return conditions


def anything_due(
    session: Session,
    clock: DatabaseClock,
    skip_targets: Collection[str],
    skip_ids: Collection[str],
) -> bool:
    now = clock.now()
    pending = select(_C.command_id).where(*_skipping(_due(False, now), skip_targets, ()))
    expired = select(_C.command_id).where(*_skipping(_due(True, now), skip_targets, skip_ids))
    return bool(session.scalar(select(or_(exists(pending), exists(expired)))))


@dataclass(frozen=True)
class Claimed:
    leases: list[Lease]
    taken_over: list[tuple[str, str]]  # (command id, previous owner) of expired leases


def claim(
    session: Session,
    owner: str,
    *,
    limit: int,
    room: Mapping[str, int] | None = None,
    room_default: int | None = None,
    ttl: float,
    clock: DatabaseClock,
    skip_targets: Collection[str] = (),
    skip_ids: Collection[str] = (),
    lock: bool = False,
) -> Claimed:
    """Lease up to `limit` due commands, at most `room[target]` per target (else
    `room_default`, else `limit`); `lock` (PostgreSQL) skips rows another replica is
    leasing right now."""
    room = room or {}
    leased_at = time.monotonic()
    default_room = limit if room_default is None else room_default

    connection = session.connection()  # Core rows: no ORM objects to build and track
    values = clock.bound(ttl) | {
        "b_limit": limit,
        "b_skip_targets": sorted(skip_targets),
        "b_skip_ids": sorted(skip_ids),
    }

    def search(expired: bool) -> list[OutboxRow]:
        # Held ids are SENT under this replica's live leases: only an expired one could match.
        query = _due_search(
            expired,
            skip_targets=bool(skip_targets),
            skip_ids=expired and bool(skip_ids),
            postgres=clock.postgres,
            lock=lock,
        )
        # A Row has the attributes of an OutboxRow read here (command_snapshot's reads).
        return [cast(OutboxRow, row) for row in connection.execute(query, values)]

    by_due = sorted(
        search(expired=False) + search(expired=True),
        key=lambda row: (row.next_attempt_at, row.command_id),
    )
    taken = _within_room(by_due, limit, room, default_room)
    if not taken:
        return Claimed([], [])
    connection.execute(
        _lease_statement(clock.postgres),
        clock.bound(ttl) | {"b_owner": owner, "b_ids": [row.command_id for row in taken]},
    )
    leases = [_leased(row, leased_at) for row in taken]
    taken_over = [(r.command_id, r.lease_owner) for r in taken if r.state == "SENT"]
    return Claimed(leases, taken_over)


@functools.cache
def _due_search(
    expired: bool, *, skip_targets: bool, skip_ids: bool, postgres: bool, lock: bool
) -> Select[Any]:
    """A claim's search of one kind (PENDING and due, or SENT with an expired
    lease), built once per shape: SQLAlchemy then reuses its compiled form
    instead of building and keying a new statement on every claim."""
    conditions = _due(expired, DatabaseClock(postgres).now_bound())
    if skip_targets:
        conditions.append(_C.target.not_in(bindparam("b_skip_targets", expanding=True)))
    if skip_ids:
        conditions.append(_C.command_id.not_in(bindparam("b_skip_ids", expanding=True)))
    query = (
        select(*_LEASED_COLUMNS)
        .where(*conditions)
        .order_by(_C.next_attempt_at, _C.command_id)
        .limit(bindparam("b_limit", type_=Integer()))
    )
    return query.with_for_update(skip_locked=True) if lock else query


@functools.cache
def _lease_statement(postgres: bool) -> Update:
    """Mark the rows `b_ids` leased to `b_owner` (built once, as above)."""
    clock = DatabaseClock(postgres)
    return (
        update(OUTBOX)
        .where(_C.command_id.in_(bindparam("b_ids", expanding=True)))
        .values(
            state="SENT",
            lease_owner=bindparam("b_owner"),
            lease_expires_at=clock.after_bound(),
            attempts=_C.attempts + 1,
            updated_at=clock.now_bound(),
        )
    )


def _within_room(
    by_due: list[OutboxRow], limit: int, room: Mapping[str, int], default_room: int
) -> list[OutboxRow]:
    """The first `limit` rows in due order, at most each target's room of them."""
    taken: list[OutboxRow] = []
    per_target: dict[str, int] = {}
    for row in by_due:
        if len(taken) >= limit:
            break
        if per_target.get(row.target, 0) < room.get(row.target, default_room):
            per_target[row.target] = per_target.get(row.target, 0) + 1
            taken.append(row)
    return taken


def _leased(row: OutboxRow, leased_at: float) -> Lease:
    """The lease of a row just claimed (its attempt counted)."""
    return Lease(
        command_id=row.command_id,
        attempts=row.attempts + 1,
        target=row.target,
        method=row.method,
        payload=row.request_payload,
        issued_by_kind=row.issued_by_kind,
        issued_by_name=row.issued_by_name,
        request_id=row.request_id,
        snapshot=command_snapshot(row) | {"state": "SENT", "attempts": row.attempts + 1},
        leased_at=leased_at,
    )


def renew(
    session: Session, owner: str, leases: Collection[Lease], ttl: float, clock: DatabaseClock
) -> tuple[float, set[str]]:
    """Extend `leases`: time.monotonic() as it ran, and the command ids still held
    (the others passed to another replica)."""
    began = time.monotonic()
    if not leases:
        return began, set()
    statement = (
        update(OUTBOX)
        .where(held_by(owner, leases))
        .values(lease_expires_at=clock.after(ttl))
        .returning(_C.command_id)
    )
    return began, set(session.execute(statement).scalars())


def release(
    session: Session, owner: str, leases: Collection[Lease], clock: DatabaseClock
) -> set[str]:
    """Hand `leases` back, due now (a replica stopping); the command ids released."""
    if not leases:
        return set()
    now = clock.now()
    statement = (
        update(OUTBOX)
        .where(held_by(owner, leases))
        .values(
            state="PENDING",
            lease_owner="",
            lease_expires_at=None,
            next_attempt_at=now,
            updated_at=now,
        )
        .returning(_C.command_id)
    )
    return set(session.execute(statement).scalars())
