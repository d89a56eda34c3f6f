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
which a contender terminates once the lease has expired.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import BigInteger, DateTime, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ppos.controlplane.storage.base import Base
from ppos.controlplane.storage.locks import is_postgres

T = TypeVar("T")


class LeaderLeaseRow(Base):
    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    holder: Mapped[str] = mapped_column(String(256), nullable=False)
    backend_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


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
            statement = statement.with_for_update(read=True)
        current = session.scalar(statement)
        if current != self.generation:
            raise LeadershipLost(
                f"the lead of {self.name} is at generation {current}, this process "
                f"took generation {self.generation}"
            )


def fenced(fence: Fence | None, work: Callable[[Session], T]) -> Callable[[Session], T]:
    """`work` preceded by the fence's check, in the same transaction (None: unfenced)."""
    if fence is None:
        return work

    def guarded(session: Session) -> T:
        fence.check(session)
        return work(session)

    return guarded
