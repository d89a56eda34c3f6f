"""One leader among the replicas sharing a database, for loops that should run once.

Every singleton loop (the registry sync's scheduler and its sweeps, the
governance reconciler) names itself and asks `leadership_for` for its lead:

- PostgreSQL: a session-level advisory lock held on a dedicated connection,
  outside the pool the handlers share. When the leader's process dies its
  connection closes and the lock is free at once; the leader checks its
  connection before each round and steps down when it is gone.
- SQLite file: an exclusive `flock` on a file next to the database, released by
  the kernel when the process dies (two processes sharing one SQLite file).
- SQLite in memory: one process by construction, always the leader.

Leadership is an efficiency, not a safety property: every loop's writes are
fenced (decision keys, cursor generations), so two leaders for a moment (a
network partition) cannot act twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import Protocol

import psycopg
from sqlalchemy.engine import URL, make_url

from ppos.controlplane.core.logging import get_logger
from ppos.controlplane.storage.locks import advisory_key

CHECK_TIMEOUT = 5.0
_log = get_logger("ppos.storage.leadership")


class Leadership(Protocol):
    async def acquire(self) -> bool:
        """Try once to take the lead; True when held (also when already held)."""
        ...

    async def check(self) -> bool:
        """Whether the lead is still held."""
        ...

    async def release(self) -> None: ...


def leadership_for(url: str | URL, name: str, *, key: int | None = None) -> Leadership:
    """The lead of the loop `name` over the database at `url`.

    `key` pins the advisory lock key (PostgreSQL) of a loop whose key predates
    names: replicas of two releases must contend for the same lock.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return AdvisoryLockLeadership(url, name, advisory_key(name) if key is None else key)
    database = parsed.database
    if not database or database == ":memory:":
        return SoleLeader()
    path = Path(database)
    return FileLockLeadership(path.with_name(f"{path.name}.{name}.lock"))


class AdvisoryLockLeadership:
    def __init__(self, url: str | URL, name: str, key: int) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        self._conninfo = parsed.render_as_string(hide_password=False)
        self.name = name
        self.key = key
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def acquire(self) -> bool:
        if self._conn is not None:
            return await self.check()
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                application_name=f"ppos-leader-{self.name}"[:63],
            )
        except psycopg.Error as exc:
            _log.warning("leadership.connect_failed", name=self.name, error=type(exc).__name__)
            return False
        try:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            row = await cursor.fetchone()
        except psycopg.Error:
            await conn.close()
            return False
        if not row or not row[0]:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def check(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), CHECK_TIMEOUT)
        except (psycopg.Error, TimeoutError, OSError):
            _log.warning("leadership.connection_lost", name=self.name)
            await self._close()
            return False
        return True

    async def release(self) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        await self._close()


class FileLockLeadership:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def check(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class SoleLeader:
    """An in-memory database has one process by construction."""

    async def acquire(self) -> bool:
        return True

    async def check(self) -> bool:
        return True

    async def release(self) -> None:
        return None
