"""Short reads of hot RPCs without the ORM: one Core SELECT, compiled once.

A read through an ORM session (session, BEGIN, pool checkout, identity map,
ROLLBACK) costs about 20 times the query itself on SQLite, and on PostgreSQL
four round trips for one SELECT. A `PreparedRead` is a SELECT compiled once
per dialect; `QuickReads` runs it as one statement, which is its own
consistent snapshot on both databases:

- SQLite (a database file): on a connection the reader thread keeps for
  itself, in autocommit, query-only; the driver caches the prepared statement.
- PostgreSQL (and in-memory SQLite): on the driver's side of a pooled
  connection, in autocommit, so a read is the pool's liveness check and the
  SELECT, without BEGIN and ROLLBACK; a lost connection is invalidated.

A database failure leaves as a session's read leaves (`storage.failures`:
UNAVAILABLE for a lost connection, INVALID_ARGUMENT for a value the
database refuses), so the edge sees only domain errors.

Either way the work runs on the reader pool, except a bounded read (declared
so: rows along an index, a key or a key range under a LIMIT) on a SQLite file:
that runs on the event loop's own connection, a few pages normally in the OS
cache, cheaper than the hop to a thread and back and than turning the same
rows into protobuf messages, which the handler does on the loop anyway; that
connection never waits for a lock (busy timeout 0), so when the database is
busy the read goes to the pool instead. Rows come back as named tuples whose
fields are the columns, converted as the ORM converts them (the columns' own
result processors: UTC datetimes, JSON, booleans). Parameters must be plain
values that need no bind processing (strings, integers).
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from ppos.controlplane.core.metrics import DATABASE_FAILURES
from ppos.controlplane.storage import failures
from ppos.controlplane.storage.database import SQLITE_BUSY_TIMEOUT_MS, Database

Processor = Callable[[Any], Any] | None
_log = structlog.get_logger(__name__)


class _Compiled:
    """A statement's SQL for one dialect, its parameter order and row maker."""

    __slots__ = ("_compiled", "_make", "_names", "_positional", "_processors", "sql")

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self._compiled = compiled
        self.sql = str(compiled)
        self._positional = bool(dialect.positional)
        self._names = tuple(compiled.positiontup or ()) if self._positional else ()
        columns = list(statement.selected_columns)
        self._processors: tuple[Processor, ...] = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        fields = namedtuple("Read", [column.key for column in columns])  # type: ignore[misc]
        self._make: Callable[[Any], Any] = fields._make

    def parameters(self, values: Mapping[str, Any]) -> Any:
        params = self._compiled.construct_params(dict(values))
        return tuple(params[name] for name in self._names) if self._positional else params

    def row(self, raw: Any) -> Any:
        return self._make(
            value if process is None else process(value)
            for process, value in zip(self._processors, raw, strict=True)
        )


class PreparedRead:
    """A SELECT with named bind parameters (`bindparam("name")`), compiled once per dialect."""

    def __init__(self, statement: Select[Any], *, bounded: bool = False) -> None:
        """`bounded`: reads few rows along an index (a key, or a key range under a
        LIMIT), so it may run on the event loop on SQLite."""
        self.statement = statement
        self.bounded = bounded
        self._by_dialect: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = _Compiled(self.statement, dialect)
        return found


class QuickReads:
    """Runs `PreparedRead`s for one `Database` on its reader pool."""

    def __init__(self, db: Database) -> None:
        self._db = db
        database = db.url.database
        self._sqlite_file = (
            database if db.is_sqlite and database and database != ":memory:" else None
        )
        self._local = threading.local()

    async def rows(self, read: PreparedRead, **values: Any) -> list[Any]:
        if read.bounded and self._sqlite_file is not None:
            found = self._on_loop(read, values)
            if found is not None:
                return found
        return await self._db.run_in_executor(lambda: self.rows_sync(read, values))

    async def first(self, read: PreparedRead, **values: Any) -> Any | None:
        found = await self.rows(read, **values)
        return found[0] if found else None

    def rows_sync(self, read: PreparedRead, values: Mapping[str, Any]) -> list[Any]:
        engine = self._db.read_engine
        compiled = read.compiled(engine.dialect)
        params = compiled.parameters(values)
        raw: Sequence[Any]
        try:
            if self._sqlite_file is not None:
                raw = self._sqlite().execute(compiled.sql, params).fetchall()
            else:
                raw = self._pooled(compiled.sql, params)
        except (sqlite3.Error, DBAPIError) as exc:
            raise _answer(compiled.sql, exc) from exc
        return [compiled.row(row) for row in raw]

    def _pooled(self, sql: str, params: Any) -> Sequence[Any]:
        """One statement on a pooled connection (checked out as always: pre-pinged),
        in autocommit on PostgreSQL; a driver error is raised as SQLAlchemy raises
        it, a lost connection invalidated (so it is answered UNAVAILABLE)."""
        engine = self._db.read_engine
        dbapi = engine.dialect.loaded_dbapi
        connection = engine.raw_connection()
        try:
            driver: Any = connection.driver_connection
            toggle = self._db.is_postgres  # SQLite's driver connections already autocommit
            if toggle:
                driver.autocommit = True
            try:
                cursor = driver.cursor()
                try:
                    cursor.execute(sql, params)
                    return list(cursor.fetchall())
                finally:
                    cursor.close()
            finally:
                if toggle and not driver.closed:
                    driver.autocommit = False
        except dbapi.Error as exc:
            lost = engine.dialect.is_disconnect(exc, driver, None)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                sql, params, exc, dbapi.Error, connection_invalidated=lost, dialect=engine.dialect
            ) from exc
        finally:
            connection.close()

    def _on_loop(self, read: PreparedRead, values: Mapping[str, Any]) -> list[Any] | None:
        """A bounded read on this (event loop) thread's connection; None if SQLite is busy."""
        compiled = read.compiled(self._db.read_engine.dialect)
        connection = self._sqlite(busy_timeout_ms=0)
        try:
            raw = connection.execute(compiled.sql, compiled.parameters(values)).fetchall()
        except sqlite3.Error as exc:
            busy = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in busy:
                return None
            raise _answer(compiled.sql, exc) from exc
        return [compiled.row(row) for row in raw]

    def _sqlite(self, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> sqlite3.Connection:
        """This thread's own connection (one per busy timeout): reads only, in
        autocommit, so each statement is its own snapshot."""
        key = f"connection_{busy_timeout_ms}"
        connection: sqlite3.Connection | None = getattr(self._local, key, None)
        if connection is None:
            assert self._sqlite_file is not None
            connection = sqlite3.connect(
                self._sqlite_file, timeout=busy_timeout_ms / 1000, isolation_level=None
            )
            connection.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            connection.execute("PRAGMA query_only=ON")
            setattr(self._local, key, connection)
        return connection


_BY_DATABASE: weakref.WeakKeyDictionary[Database, QuickReads] = weakref.WeakKeyDictionary()


def quick_reads(db: Database) -> QuickReads:
    """The `QuickReads` of `db`, made on first use (its SQLite connections are per thread)."""
    found = _BY_DATABASE.get(db)
    if found is None:
        found = _BY_DATABASE[db] = QuickReads(db)
    return found


def _answer(sql: str, exc: sqlite3.Error | DBAPIError) -> Exception:
    """What a failed read leaves as: the domain error `storage.failures` makes of a
    database failure (a lost connection, a value the database refuses), as a
    session's read would; anything else as SQLAlchemy raises it."""
    wrapped = (
        exc
        if isinstance(exc, DBAPIError)
        else DBAPIError.instance(sql, None, exc, sqlite3.Error, dialect=None)
    )
    failure = failures.classify(wrapped)
    if failure is None:
        return wrapped
    DATABASE_FAILURES.labels(kind=failure.value, outcome="answered").inc()
    _log.warning(
        f"db.{failure.value}", sqlstate=failures.sqlstate(wrapped), error=type(exc).__name__
    )
    return failures.as_domain_error(wrapped, failure, attempts=1)
