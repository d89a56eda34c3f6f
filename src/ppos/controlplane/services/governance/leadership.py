"""One leader among replicas for work that should run once (the reconciler).

On PostgreSQL: a session-level advisory lock held on a dedicated connection;
when the leader's process dies its connection closes and the lock is free at
once. On SQLite (one machine, one file): a lease row renewed every round,
taken over when it runs out. Leadership is an efficiency, not a safety
property: the reconciler's unique decision key keeps two leaders (say, during
a network partition) from acting twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import structlog
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from ppos.controlplane.core.timeutil import utcnow
from ppos.controlplane.services.governance.models import LeaseRow
from ppos.controlplane.storage.database import Database

_log = structlog.get_logger("ppos.governance.leadership")


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership:
    """Ask `acquire()` before each round; it keeps (or takes) leadership if it can."""

    def __init__(self, db: Database, name: str, holder: str, lease_seconds: float) -> None:
        self._db = db
        self.name = name
        self.holder = holder
        self._lease = lease_seconds
        self._connection: Any = None
        self._engine: Engine | None = None
        self.is_leader = False

    async def acquire(self) -> bool:
        if self._db.is_postgres:
            leader = await self._db.run_in_executor(self._pg_acquire)
        else:
            # Read first: renew only when half the lease is gone, take over only
            # when it ran out, so standing leadership costs few writes.
            seen = await self._db.read(self._lease_state)
            if seen is not None:
                leader = seen
            else:
                leader = await self._db.write(self._lease_acquire)
        if leader != self.is_leader:
            _log.info("leadership.changed", name=self.name, holder=self.holder, leader=leader)
        self.is_leader = leader
        return leader

    def _pg_acquire(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
            except Exception:  # noqa: BLE001 - a broken connection has lost the lock
                self._drop_connection()
            else:
                return True
        if self._engine is None:
            # Its own connection, outside the pool the handlers share.
            self._engine = create_engine(self._db.url, poolclass=NullPool)
        connection = self._engine.connect()
        try:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_key(self.name)}
            ).scalar_one()
            connection.commit()
        except Exception:
            connection.close()
            raise
        if got:
            self._connection = connection
            return True
        connection.close()
        return False

    def _lease_state(self, session: Session) -> bool | None:
        """True/False when the lease needs no write now; None when it should be written."""
        row = session.get(LeaseRow, self.name)
        if row is None:
            return None
        remaining = (row.expires_at - utcnow()).total_seconds()
        if row.holder == self.holder:
            return True if remaining > self._lease / 2 else None
        return False if remaining > 0 else None

    def _lease_acquire(self, session: Session) -> bool:
        now = utcnow()
        row = session.scalars(select(LeaseRow).where(LeaseRow.name == self.name)).one_or_none()
        expires = now + dt.timedelta(seconds=self._lease)
        if row is None:
            session.add(LeaseRow(name=self.name, holder=self.holder, expires_at=expires))
            return True
        if row.holder == self.holder or row.expires_at <= now:
            row.holder = self.holder
            row.expires_at = expires
            return True
        return False

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail
                _log.debug("leadership.close_failed", name=self.name)
            self._connection = None

    async def release(self) -> None:
        if self._db.is_postgres:
            await self._db.run_in_executor(self._drop_connection)
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
        elif self.is_leader:

            def work(session: Session) -> None:
                row = session.get(LeaseRow, self.name)
                if row is not None and row.holder == self.holder:
                    session.delete(row)

            await self._db.write(work)
        self.is_leader = False
