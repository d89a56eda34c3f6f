"""One leader among the replicas sharing a database, for loops that should run once.

Every singleton loop (the registry sync's scheduler and its sweeps, the
governance reconciler) names itself and asks `leadership_for` for its lead:

- PostgreSQL: a session-level advisory lock held on a dedicated connection,
  outside the pool the handlers share, plus a lease in `leader_leases`.
  * Clean stop: `release` unlocks and expires the lease at once; a contender
    retrying every second takes over within about a second.
  * Killed leader: the kernel closes its connection, PostgreSQL ends the
    session and frees the lock at once. A leader cut off without a close
    (a host gone, a network partition) is found by TCP keepalives (set on the
    connection: idle 5 s, then 3 probes 2 s apart) or the server's own
    `idle_session_timeout`/`tcp_keepalives_*` settings.
  * Frozen leader (SIGSTOP, a stalled VM): its connection stays open, so the
    lock alone would never pass on. The leader renews its lease every
    `renew_every` seconds from its own task; a contender that finds the lock
    taken and the lease expired (`lease_ttl`, by the database's clock)
    terminates the holder's session (`pg_terminate_backend`: the database
    role needs the right to signal the leader's sessions, i.e. the same role
    or `pg_signal_backend`) and takes the lock. The woken leader finds its
    renewal failed (or overdue by its own clock) and steps down.
- SQLite file: an exclusive `flock` on a file next to the database, released by
  the kernel when the process dies (two processes sharing one SQLite file; a
  frozen holder keeps it: SQLite deployments are one process). The lease in
  `leader_leases` is renewed too, by this process's clock, only to report the lead.
- SQLite in memory: one process by construction, always the leader.

Each lead taken increments the loop's generation in `leader_leases`
(leases.py): `fence()` gives the token a leader checks in every transaction it
writes, so a replaced leader that wakes up cannot write.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import functools
import os
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import psycopg
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url

from ppos.controlplane.core.logging import get_logger
from ppos.controlplane.storage.base import UTCDateTime
from ppos.controlplane.storage.leases import Fence
from ppos.controlplane.storage.locks import advisory_key

CHECK_TIMEOUT = 5.0
LEASE_TTL = 5.0  # a frozen leader loses the lead this long after its last renewal
RENEW_EVERY = 1.0
TAKEOVER_WAIT = 2.0  # a terminated holder's session ends within this (lock polled)
_log = get_logger("ppos.storage.leadership")


class Leadership(Protocol):
    async def acquire(self) -> bool:
        """Try once to take the lead; True when held (also when already held)."""
        ...

    async def check(self) -> bool:
        """Whether the lead is still held."""
        ...

    async def release(self) -> None: ...

    def fence(self) -> Fence:
        """The fencing token of the lead held now (check it in every write)."""
        ...


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:256]


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
    return FileLockLeadership(path.with_name(f"{path.name}.{name}.lock"), path, name)


# Take the lease with the lock: a new generation, this session's pid, a fresh expiry.
_TAKE_LEASE = """
INSERT INTO leader_leases AS l
    (name, generation, holder, backend_pid, expires_at, acquired_at, renewed_at, lease_seconds)
VALUES (%(name)s, 1, %(holder)s, pg_backend_pid(), now() + make_interval(secs => %(ttl)s),
    now(), now(), %(ttl)s)
ON CONFLICT (name) DO UPDATE SET generation = l.generation + 1, holder = EXCLUDED.holder,
    backend_pid = EXCLUDED.backend_pid, expires_at = EXCLUDED.expires_at,
    acquired_at = EXCLUDED.acquired_at, renewed_at = EXCLUDED.renewed_at,
    lease_seconds = EXCLUDED.lease_seconds
RETURNING generation
"""
_RENEW = (
    "UPDATE leader_leases SET expires_at = now() + make_interval(secs => %(ttl)s), "
    "renewed_at = now() "
    "WHERE name = %(name)s AND generation = %(generation)s"
)
_EXPIRE = (
    "UPDATE leader_leases SET expires_at = now() "
    "WHERE name = %(name)s AND generation = %(generation)s"
)
# The session of a holder whose lease has expired, if it is still a leader's session.
_TERMINATE_EXPIRED = """
SELECT pg_terminate_backend(a.pid) FROM leader_leases l
JOIN pg_stat_activity a ON a.pid = l.backend_pid AND a.application_name = %(app)s
WHERE l.name = %(name)s AND l.expires_at < now()
"""


class AdvisoryLockLeadership:
    def __init__(
        self,
        url: str | URL,
        name: str,
        key: int,
        *,
        lease_ttl: float = LEASE_TTL,
        renew_every: float = RENEW_EVERY,
    ) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        self._conninfo = parsed.render_as_string(hide_password=False)
        self.name = name
        self.key = key
        self.lease_ttl = lease_ttl
        self.renew_every = renew_every
        self.generation = 0
        self._app = f"ppos-leader-{name}"[:63]
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._renewed_at = 0.0

    async def _close(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not asyncio.current_task():
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]] | None:
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                application_name=self._app,
            )
        except psycopg.Error as exc:
            _log.warning("leadership.connect_failed", name=self.name, error=type(exc).__name__)
            return None

    async def acquire(self) -> bool:
        if self._conn is not None:
            return await self.check()
        conn = await self._connect()
        if conn is None:
            return False
        try:
            locked = await self._try_lock(conn)
            if not locked:
                await conn.close()
                return False
            cursor = await conn.execute(
                _TAKE_LEASE, {"name": self.name, "holder": holder_name(), "ttl": self.lease_ttl}
            )
            row = await cursor.fetchone()
        except psycopg.Error as exc:
            _log.warning("leadership.acquire_failed", name=self.name, error=type(exc).__name__)
            await conn.close()
            return False
        self.generation = int(row[0]) if row else 0  # type: ignore[call-overload]
        self._conn = conn
        self._renewed_at = asyncio.get_running_loop().time()
        self._renewer = asyncio.create_task(self._renew(), name=f"lease-{self.name}")
        _log.info("leadership.taken", name=self.name, generation=self.generation)
        return True

    async def _try_lock(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
        """The advisory lock; when it is held under an expired lease, end the
        holder's session first (a frozen leader) and wait for its lock to go."""
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
        row = await cursor.fetchone()
        if row and row[0]:
            return True
        cursor = await conn.execute(_TERMINATE_EXPIRED, {"name": self.name, "app": self._app})
        if not await cursor.fetchall():
            return False
        _log.warning("leadership.expired_holder_terminated", name=self.name)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + TAKEOVER_WAIT
        while loop.time() < give_up:
            await asyncio.sleep(0.05)
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            row = await cursor.fetchone()
            if row and row[0]:
                return True
        return False

    async def _renew(self) -> None:
        """Renew the lease until it fails; then the lead is lost (check says so)."""
        loop = asyncio.get_running_loop()
        params = {"name": self.name, "generation": self.generation, "ttl": self.lease_ttl}
        while (conn := self._conn) is not None:
            await asyncio.sleep(self.renew_every)
            try:
                cursor = await asyncio.wait_for(conn.execute(_RENEW, params), CHECK_TIMEOUT)
            except (psycopg.Error, TimeoutError, OSError) as exc:
                _log.warning("leadership.renew_failed", name=self.name, error=type(exc).__name__)
                break
            if cursor.rowcount != 1:
                _log.warning("leadership.superseded", name=self.name)
                break
            self._renewed_at = loop.time()
        self._renewer = None
        await self._close()

    async def check(self) -> bool:
        if self._conn is None:
            return False
        # By this process's clock too: a leader that could not renew for a lease's
        # time (it was frozen) may have been replaced already.
        if asyncio.get_running_loop().time() - self._renewed_at > self.lease_ttl:
            _log.warning("leadership.lease_overdue", name=self.name)
            await self._close()
            return False
        return True

    async def release(self) -> None:
        conn = self._conn
        if conn is not None:
            params = {"name": self.name, "generation": self.generation}
            with contextlib.suppress(psycopg.Error):
                await conn.execute(_EXPIRE, params)
                await conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        await self._close()

    def fence(self) -> Fence:
        return Fence(self.name, self.generation if self._conn is not None else 0)


_SQLITE_TAKE = """
INSERT INTO leader_leases
    (name, generation, holder, acquired_at, renewed_at, expires_at, lease_seconds)
VALUES (:name, 1, :holder, :now, :now, :expires, :ttl)
ON CONFLICT (name) DO UPDATE SET generation = generation + 1, holder = excluded.holder,
    acquired_at = excluded.acquired_at, renewed_at = excluded.renewed_at,
    expires_at = excluded.expires_at, lease_seconds = excluded.lease_seconds
RETURNING generation
"""
_SQLITE_RENEW = (
    "UPDATE leader_leases SET renewed_at = :now, expires_at = :expires "
    "WHERE name = :name AND generation = :generation"
)
_SQLITE_EXPIRE = (
    "UPDATE leader_leases SET expires_at = :now WHERE name = :name AND generation = :generation"
)


def _sqlite_time(value: dt.datetime) -> str:
    """As the lease's `UTCDateTime` columns store it in SQLite (their own bind
    processor: UTC, no offset), so the ORM reads it back as an aware UTC datetime."""
    return cast(str, _sqlite_utc()(value))


@functools.cache
def _sqlite_utc() -> Callable[[Any], Any]:
    dialect = sqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process


class FileLockLeadership:
    """The flock is the lead; the lease row (renewed as on PostgreSQL) only reports
    it, so the API can tell a stopped leader (its lease runs out) from a live one."""

    def __init__(
        self,
        path: Path,
        database: Path,
        name: str,
        *,
        lease_ttl: float = LEASE_TTL,
        renew_every: float = RENEW_EVERY,
    ) -> None:
        self.path = path
        self.name = name
        self.generation = 0
        self.lease_ttl = lease_ttl
        self.renew_every = renew_every
        self._database = database
        self._fd: int | None = None
        self._renewer: asyncio.Task[None] | None = None

    def _lease_write(self, statement: str, ttl: float) -> int | None:
        now = dt.datetime.now(dt.UTC)
        params = {
            "name": self.name,
            "holder": holder_name(),
            "generation": self.generation,
            "now": _sqlite_time(now),
            "expires": _sqlite_time(now + dt.timedelta(seconds=ttl)),
            "ttl": ttl,
        }
        with contextlib.closing(sqlite3.connect(self._database, timeout=30)) as conn, conn:
            row = conn.execute(statement, params).fetchone()
        return int(row[0]) if row else None

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
        try:
            taken = await asyncio.to_thread(self._lease_write, _SQLITE_TAKE, self.lease_ttl)
        except sqlite3.Error as exc:
            _log.warning("leadership.acquire_failed", name=self.name, error=type(exc).__name__)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return False
        self.generation = taken or 0
        self._fd = fd
        self._renewer = asyncio.create_task(self._renew(), name=f"lease-{self.name}")
        _log.info("leadership.taken", name=self.name, generation=self.generation)
        return True

    async def _renew(self) -> None:
        """Keep the reported lease fresh while the flock is held; a failed renewal
        is logged and retried (the lead itself is the flock's)."""
        while self._fd is not None:
            await asyncio.sleep(self.renew_every)
            try:
                await asyncio.to_thread(self._lease_write, _SQLITE_RENEW, self.lease_ttl)
            except sqlite3.Error as exc:
                _log.warning("leadership.renew_failed", name=self.name, error=type(exc).__name__)

    async def check(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:  # expire the reported lease at once, as PostgreSQL's release does
            await asyncio.to_thread(self._lease_write, _SQLITE_EXPIRE, 0.0)
        except sqlite3.Error as exc:
            _log.warning("leadership.expire_failed", name=self.name, error=type(exc).__name__)
        finally:  # the lead ends whatever became of the report (a stop cancelling it too)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def fence(self) -> Fence:
        return Fence(self.name, self.generation if self._fd is not None else 0)


class SoleLeader:
    """An in-memory database has one process by construction."""

    async def acquire(self) -> bool:
        return True

    async def check(self) -> bool:
        return True

    async def release(self) -> None:
        return None

    def fence(self) -> Fence:
        return Fence("", 0, enabled=False)
