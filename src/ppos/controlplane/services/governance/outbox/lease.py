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

Expiry is by the database's clock on PostgreSQL (replicas on many hosts) and
by this host's on SQLite (one host). The statements are Core statements on
the table: no ORM identity map to keep in step, one statement per batch.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, func, literal, or_, select, tuple_, update
from sqlalchemy.orm import Session, defer

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.services.governance.models import OutboxRow
from ppos.controlplane.services.governance.snapshots import command_snapshot
from ppos.controlplane.storage.base import UTCDateTime

OUTBOX = cast(Table, OutboxRow.__table__)
_C = OUTBOX.c


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


class LeaseClock:
    """`now` as lease statements see it: the database's clock on PostgreSQL, this
    host's on SQLite."""

    def __init__(self, database_clock: bool) -> None:
        self._database_clock = database_clock

    def now(self) -> ColumnElement[dt.datetime]:
        if self._database_clock:
            return func.now()
        return literal(utcnow(), UTCDateTime())

    def after(self, seconds: float) -> ColumnElement[dt.datetime]:
        if self._database_clock:
            return func.now() + dt.timedelta(seconds=seconds)
        return literal(utcnow() + dt.timedelta(seconds=seconds), UTCDateTime())


def held_by(owner: str, leases: Iterable[Lease]) -> ColumnElement[bool]:
    """The rows of `leases` still leased to `owner` under the same token."""
    tokens = [(lease.command_id, lease.attempts) for lease in leases]
    return and_(
        _C.state == "SENT",
        _C.lease_owner == owner,
        tuple_(_C.command_id, _C.attempts).in_(tokens),
    )


def due(clock: LeaseClock) -> ColumnElement[bool]:
    now = clock.now()
    return or_(
        and_(_C.state == "PENDING", _C.next_attempt_at <= now),
        and_(_C.state == "SENT", _C.lease_expires_at < now),
    )


def _where_due(
    clock: LeaseClock, skip_targets: Collection[str], skip_ids: Collection[str]
) -> list[ColumnElement[bool]]:
    conditions = [due(clock)]
    if skip_targets:
        conditions.append(_C.target.not_in(sorted(skip_targets)))
    if skip_ids:
        conditions.append(_C.command_id.not_in(sorted(skip_ids)))
    return conditions


def anything_due(
    session: Session, clock: LeaseClock, skip_targets: Collection[str], skip_ids: Collection[str]
) -> bool:
    query = select(_C.command_id).where(*_where_due(clock, skip_targets, skip_ids)).limit(1)
    return session.execute(query).first() is not None


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
    clock: LeaseClock,
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
    query = (
        select(OutboxRow)
        .options(defer(OutboxRow.request_json))
        .where(*_where_due(clock, skip_targets, skip_ids))
        .order_by(OutboxRow.next_attempt_at, OutboxRow.command_id)
        .limit(limit)
    )
    if lock:
        query = query.with_for_update(skip_locked=True)
    taken: list[OutboxRow] = []
    per_target: dict[str, int] = {}
    for row in session.scalars(query):
        if per_target.get(row.target, 0) < room.get(row.target, default_room):
            per_target[row.target] = per_target.get(row.target, 0) + 1
            taken.append(row)
    if not taken:
        return Claimed([], [])
    session.execute(
        update(OUTBOX)
        .where(_C.command_id.in_([row.command_id for row in taken]))
        .values(
            state="SENT",
            lease_owner=owner,
            lease_expires_at=clock.after(ttl),
            attempts=_C.attempts + 1,
            updated_at=clock.now(),
        )
    )
    leases = []
    for row in taken:
        snapshot = command_snapshot(row) | {"state": "SENT", "attempts": row.attempts + 1}
        leases.append(
            Lease(
                command_id=row.command_id,
                attempts=row.attempts + 1,
                target=row.target,
                method=row.method,
                payload=row.request_payload,
                issued_by_kind=row.issued_by_kind,
                issued_by_name=row.issued_by_name,
                request_id=row.request_id,
                snapshot=snapshot,
                leased_at=leased_at,
            )
        )
    taken_over = [(r.command_id, r.lease_owner) for r in taken if r.state == "SENT"]
    return Claimed(leases, taken_over)


def renew(
    session: Session, owner: str, leases: Collection[Lease], ttl: float, clock: LeaseClock
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


def release(session: Session, owner: str, leases: Collection[Lease], clock: LeaseClock) -> set[str]:
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
