"""Who runs sweeps: one leader among the replicas sharing a database.

PostgreSQL: a session-level advisory lock held on a dedicated connection.
When the leader dies its connection closes, the lock is released and another
replica takes it at its next try. The leader checks its connection on every
tick and steps down when it is gone. Even a leader that has not noticed yet
cannot corrupt anything: every page commit is fenced by the region's cursor
generation.

SQLite: an exclusive `flock` on a file next to the database (released by the
kernel when the process dies), for the rare case of two processes sharing
one SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import Protocol

import psycopg
from sqlalchemy.engine import make_url

from ppos.controlplane.core.logging import get_logger

# pg_try_advisory_lock key of the registry sync's leader ("ppos" "lead").
LEADER_LOCK_KEY = 0x70706F73_6C656164
CHECK_TIMEOUT = 5.0
_log = get_logger("ppos.registrysync.leader")


class Leadership(Protocol):
    async def acquire(self) -> bool:
        """Try once to take the lead; True when held (also when already held)."""
        ...

    async def check(self) -> bool:
        """Whether the lead is still held."""
        ...

    async def release(self) -> None: ...


class PostgresLeadership:
    def __init__(self, url: str) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        self._conninfo = parsed.render_as_string(hide_password=False)
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
                application_name="ppos-registrysync-leader",
            )
        except psycopg.Error as exc:
            _log.warning("sync.leader_connect_failed", error=type(exc).__name__)
            return False
        try:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,))
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
            _log.warning("sync.leader_connection_lost")
            await self._close()
            return False
        return True

    async def release(self) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK_KEY,))
        await self._close()


class FileLeadership:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
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


def leadership_for(url: str) -> Leadership:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return PostgresLeadership(url)
    database = parsed.database
    if not database or database == ":memory:":
        return SoleLeader()
    return FileLeadership(Path(database).with_name(Path(database).name + ".sync-leader.lock"))
