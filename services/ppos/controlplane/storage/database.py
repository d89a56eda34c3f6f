"""Database access that never blocks the event loop.

Synchronous SQLAlchemy sessions run in a bounded thread pool. On SQLite (WAL,
busy timeout, foreign keys) writes go through a single writer thread and
begin IMMEDIATE, so there is one writer at a time and no lock upgrade
deadlocks; reads run concurrently. On PostgreSQL (psycopg 3) reads and writes
share a pool sized to the machine.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000


def default_pool_size() -> int:
    return max(4, min(16, 2 * (os.cpu_count() or 2) + 1))


def _sqlite_engine(url: str, *, writer: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        poolclass=QueuePool,
        pool_size=1 if writer else pool_size,
        max_overflow=0,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


class Database:
    """Engines plus the executors that run session work off the event loop."""

    def __init__(self, url: str, *, pool_size: int = 0, echo: bool = False) -> None:
        self.url = make_url(url)
        if self.url.drivername == "postgresql":  # no driver named: psycopg 3, whatever the default
            self.url = self.url.set(drivername="postgresql+psycopg")
            url = self.url.render_as_string(hide_password=False)
        self.dialect = self.url.get_backend_name()
        size = pool_size or default_pool_size()
        if self.dialect == "sqlite":
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = _sqlite_engine(url, writer=True, pool_size=size)
            self.read_engine = _sqlite_engine(url, writer=False, pool_size=size)
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
        """Run `work` in one write transaction and commit it."""
        with Session(self.write_engine, expire_on_commit=False) as session, session.begin():
            return work(session)

    def read_sync(self, work: Callable[[Session], T]) -> T:
        with Session(self.read_engine, expire_on_commit=False) as session, session.begin():
            return work(session)

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
