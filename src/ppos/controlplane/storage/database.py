"""Database access that never blocks the event loop.

Synchronous SQLAlchemy sessions run in a bounded thread pool. On SQLite (WAL,
busy timeout, foreign keys) writes go through a single writer thread and
begin IMMEDIATE, so there is one writer at a time and no lock upgrade
deadlocks; reads run concurrently. On PostgreSQL (psycopg 3) reads and writes
share a pool sized to the machine.

A unit of work is one callable run in one transaction. When the transaction
loses to a concurrent one (a deadlock, a serialization failure, SQLite locked
past its busy timeout), nothing of it happened, so the callable runs again in a
fresh transaction, a bounded number of times with jittered backoff; what is
left is ABORTED. Database failures leave here as the domain errors of
`core.errors` (see `storage.failures`), so the edge maps only domain errors.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from ppos.controlplane.core.metrics import DATABASE_FAILURES
from ppos.controlplane.storage import failures
from ppos.controlplane.storage.failures import Failure
from ppos.controlplane.storage.loop_postgres import COALESCE_WINDOW

T = TypeVar("T")
_log = structlog.get_logger("ppos.storage.database")

SQLITE_BUSY_TIMEOUT_MS = 10_000


def default_pool_size() -> int:
    return max(4, min(16, 2 * (os.cpu_count() or 2) + 1))


@dataclass(frozen=True)
class RetryPolicy:
    """How a unit of work that lost to a concurrent transaction runs again.

    `attempts` counts the first run. Each wait is drawn between half and all of
    base * 2^(n-1), capped: transactions that deadlocked each other back off by
    different amounts, so they do not meet again in the same order.
    """

    attempts: int = 4
    base_delay: float = 0.02
    max_delay: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + rng.random() / 2)


def create_private_file(path: Path) -> None:
    """Create the SQLite file (and a missing directory) readable by its owner only,
    before SQLite would create it with the umask's 0644. Its -wal and -shm files
    take the database file's permissions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return


def _sqlite_engine(url: str, *, writer: bool, pool_size: int, busy_timeout_ms: int) -> Engine:
    engine = create_engine(
        url,
        poolclass=QueuePool,
        pool_size=1 if writer else pool_size,
        max_overflow=0,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


class Database:
    """Engines plus the executors that run session work off the event loop."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 0,
        echo: bool = False,
        retry: RetryPolicy = RetryPolicy(),
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        read_coalesce_window: float = COALESCE_WINDOW,
    ) -> None:
        # PostgreSQL's quick reads on the event loop: how long a hot read waits to
        # share its statement (storage.loop_postgres).
        self.read_coalesce_window = read_coalesce_window
        self.retry = retry
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self.url = make_url(url)
        if self.url.drivername == "postgresql":  # no driver named: psycopg 3, whatever the default
            self.url = self.url.set(drivername="postgresql+psycopg")
            url = self.url.render_as_string(hide_password=False)
        self.dialect = self.url.get_backend_name()
        size = pool_size or default_pool_size()
        if self.dialect == "sqlite":
            database = self.url.database
            if database and database != ":memory:":
                create_private_file(Path(database))
            busy = sqlite_busy_timeout_ms
            self.write_engine = _sqlite_engine(
                url, writer=True, pool_size=size, busy_timeout_ms=busy
            )
            self.read_engine = _sqlite_engine(
                url, writer=False, pool_size=size, busy_timeout_ms=busy
            )
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
            self._readers = ThreadPoolExecutor(size, thread_name_prefix="db-reader")
        elif self.dialect == "postgresql":
            if self.url.drivername != "postgresql+psycopg":
                raise ValueError("PostgreSQL URLs must use psycopg 3: postgresql+psycopg://...")
            engine = create_engine(
                url,
                pool_size=size,
                max_overflow=0,
                pool_pre_ping=True,
                pool_recycle=1800,
                echo=echo,
            )
            self.write_engine = self.read_engine = engine
            self._writer = self._readers = ThreadPoolExecutor(size, thread_name_prefix="db")
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    # -- synchronous API (threads, scripts, migrations) --------------------------

    def write_sync(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one write transaction and commit it.

        `work` may run more than once (see `RetryPolicy`): it must keep nothing
        from one run to the next but what it returns, so no appending to a list
        outside it, no objects made outside it handed to the session.
        """
        return self._unit(self.write_engine, work)

    def read_sync(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one read transaction (it may run more than once, as above)."""
        return self._unit(self.read_engine, work)

    def _unit(self, engine: Engine, work: Callable[[Session], T]) -> T:
        attempt = 1
        while True:
            try:
                with Session(engine, expire_on_commit=False) as session, session.begin():
                    return work(session)
            except DBAPIError as exc:
                failure = failures.classify(exc)
                if failure is None:
                    raise
                if failure is Failure.CONFLICT and attempt < self.retry.attempts:
                    DATABASE_FAILURES.labels(kind=failure.value, outcome="retried").inc()
                    _log.info(
                        "db.conflict_retried", attempt=attempt, sqlstate=failures.sqlstate(exc)
                    )
                    time.sleep(self.retry.delay(attempt, self._rng))
                    attempt += 1
                    continue
                raise self._answer(exc, failure, attempt) from exc

    @staticmethod
    def _answer(exc: DBAPIError, failure: Failure, attempts: int) -> Exception:
        """The domain error a failure leaves as, logged and counted (no value in the log)."""
        outcome = "aborted" if failure is Failure.CONFLICT else "answered"
        DATABASE_FAILURES.labels(kind=failure.value, outcome=outcome).inc()
        _log.warning(
            f"db.{failure.value}",
            sqlstate=failures.sqlstate(exc),
            error=type(exc.orig).__name__,
            attempts=attempts,
        )
        return failures.as_domain_error(exc, failure, attempts=attempts)

    # -- async API (handlers) ----------------------------------------------------

    async def write(self, work: Callable[[Session], T]) -> T:
        return await self._run(self._writer, self.write_sync, work)

    async def read(self, work: Callable[[Session], T]) -> T:
        return await self._run(self._readers, self.read_sync, work)

    async def run_in_executor(self, work: Callable[[], T]) -> T:
        """Run blocking work (not a session) on the reader pool."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self._readers, functools.partial(ctx.run, work))

    @staticmethod
    async def _run(
        executor: ThreadPoolExecutor,
        runner: Callable[[Callable[[Session], T]], T],
        work: Callable[[Session], T],
    ) -> T:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()  # keep request id and principal for audit
        return await loop.run_in_executor(executor, functools.partial(ctx.run, runner, work))

    def ping(self) -> None:
        with self.read_engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        if self._readers is not self._writer:
            self._readers.shutdown(wait=True)
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()
