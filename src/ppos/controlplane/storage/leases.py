"""Leader leases: the generation that fences a leader's writes.

One row per singleton loop (`name`). Taking the lead increments the row's
`generation` (the fencing token, as etcd's lease revision or a Kubernetes
Lease's transitions); the leader makes every write of its loop in a
transaction that checks it first (`Fence.check`), so a leader that was
frozen or cut off, and wakes up after another replica took over, cannot
write: its generation is no longer the row's. On PostgreSQL the check reads
the row `FOR SHARE`, so a takeover (which updates it) waits for the fenced
transaction to end and the check holds until commit; SQLite has one writer.

On PostgreSQL the row also holds the leader's lease (`expires_at`, renewed by
the leader, see leadership.py) and the process id of its database session,
which a contender terminates once the lease has expired. A fenced transaction
also bounds how long it may sit idle (`FENCED_IDLE_TIMEOUT`): a leader frozen
in the middle of one would otherwise hold its `FOR SHARE` (and every row lock
it took) for as long as it stays frozen, and its successor could not take the
lease row. The server ends such a session; the woken leader's commit fails.

Every lease here and in the outbox and admin jobs runs on one clock
(`DatabaseClock`): the database's on PostgreSQL, where replicas on many hosts
compare expiries, this process's on SQLite (one host).

A refused write is logged (`fence.refused`) and counted
(`ppos_fenced_writes_total`, by loop); loops fenced by their own rows (the
admin jobs' run count) report theirs through `fenced_out` too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    Interval,
    String,
    bindparam,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from ppos.controlplane.core.logging import get_logger
from ppos.controlplane.core.metrics import FENCED_WRITES
from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.storage.base import Base, UTCDateTime
from ppos.controlplane.storage.locks import is_postgres

T = TypeVar("T")
# The longest a fenced transaction may wait for its client between statements
# (PostgreSQL), as long as a lead's lease: a frozen leader's transaction ends
# about when its lease does.
FENCED_IDLE_TIMEOUT = "5s"
_BOUND_IDLE = text(f"SET LOCAL idle_in_transaction_session_timeout = '{FENCED_IDLE_TIMEOUT}'")
_log = get_logger("ppos.storage.leases")


class LeaderLeaseRow(Base):
    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    holder: Mapped[str] = mapped_column(String(256), nullable=False)
    backend_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acquired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    renewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class LeadershipLost(Exception):
    """This process's lead of a loop has passed to another replica: do not write."""


class Fence:
    """The fencing token of one lead taken by this process (`generation` of `name`)."""

    def __init__(self, name: str, generation: int, *, enabled: bool = True) -> None:
        self.name = name
        self.generation = generation
        self.enabled = enabled  # an in-memory database has one process: nothing to fence

    def check(self, session: Session) -> None:
        """Raise LeadershipLost unless this lead is still the current one; call it
        first in every transaction the leader writes."""
        if not self.enabled:
            return
        statement = select(LeaderLeaseRow.generation).where(LeaderLeaseRow.name == self.name)
        if is_postgres(session):
            bound_idle_time(session)
            statement = statement.with_for_update(read=True)
        current = session.scalar(statement)
        if current != self.generation:
            fenced_out(self.name, held=self.generation, current=current)
            raise LeadershipLost(
                f"the lead of {self.name} is at generation {current}, this process "
                f"took generation {self.generation}"
            )


def bound_idle_time(session: Session) -> None:
    """End this transaction's session if it waits for its client longer than
    FENCED_IDLE_TIMEOUT (PostgreSQL; SQLite has one process): for transactions
    that hold what another replica must take over."""
    if is_postgres(session):
        session.execute(_BOUND_IDLE)


def fenced_out(loop: str, **why: object) -> None:
    """A write refused because this replica no longer holds `loop`: log and count it."""
    FENCED_WRITES.labels(loop=loop).inc()
    _log.warning("fence.refused", loop=loop, **why)


class DatabaseClock:
    """ "Now" for leases: the database's clock on PostgreSQL (the same for every
    replica, whatever their own clocks say), this process's on SQLite (one process).

    `now` and `after` are SQL expressions for statements (on PostgreSQL the
    transaction's start time); `read` is the value, for code that computes with it.
    """

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres

    @classmethod
    def of(cls, session: Session) -> DatabaseClock:
        return cls(is_postgres(session))

    def now(self) -> ColumnElement[dt.datetime]:
        if self.postgres:
            return func.now()
        return literal(utcnow(), UTCDateTime())

    def after(self, seconds: float) -> ColumnElement[dt.datetime]:
        if self.postgres:
            return func.now() + dt.timedelta(seconds=seconds)
        return literal(utcnow() + dt.timedelta(seconds=seconds), UTCDateTime())

    # For statements built once and run many times (SQLAlchemy then reuses their
    # compiled form): the same clocks, this host's as bind parameters given by `bound`.

    def now_bound(self) -> ColumnElement[dt.datetime]:
        if self.postgres:
            return func.now()
        return bindparam("b_now", type_=UTCDateTime())

    def after_bound(self) -> ColumnElement[dt.datetime]:
        """`now_bound` plus the seconds given to `bound`."""
        if self.postgres:
            return func.now() + bindparam("b_ttl", type_=Interval())
        return bindparam("b_after", type_=UTCDateTime())

    def bound(self, seconds: float = 0.0) -> dict[str, Any]:
        """The values of `now_bound` and `after_bound` for one execution."""
        delta = dt.timedelta(seconds=seconds)
        if self.postgres:
            return {"b_ttl": delta}
        now = utcnow()
        return {"b_now": now, "b_after": now + delta}

    def read(self, session: Session) -> dt.datetime:
        if not self.postgres:
            return utcnow()
        value = session.scalar(select(func.now()))
        assert isinstance(value, dt.datetime)
        return value.astimezone(dt.UTC)


def database_now(session: Session) -> dt.datetime:
    """`DatabaseClock.read` for a session's database."""
    return DatabaseClock.of(session).read(session)


def fenced(fence: Fence | None, work: Callable[[Session], T]) -> Callable[[Session], T]:
    """`work` preceded by the fence's check, in the same transaction (None: unfenced)."""
    if fence is None:
        return work

    def guarded(session: Session) -> T:
        fence.check(session)
        return work(session)

    return guarded
