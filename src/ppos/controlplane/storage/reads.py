"""Short reads of hot RPCs without the ORM: one Core SELECT, compiled once.

A read through an ORM session (session, BEGIN, pool checkout, identity map,
ROLLBACK) costs about 20 times the query itself on SQLite, and on PostgreSQL
four round trips for one SELECT. A `PreparedRead` is a SELECT compiled once
per dialect; `QuickReads` runs it as one statement, which is its own
consistent snapshot on both databases:

- SQLite (a database file): on a connection the reader thread keeps for
  itself, in autocommit, query-only; the driver caches the prepared statement.
  On the event loop's connection, a read's rows are reused while SQLite says
  nothing was committed since (`storage.sqlite_results`).
- PostgreSQL: on the event loop, on one of a few asynchronous connections of
  its own (`storage.loop_postgres`), in autocommit, the statement prepared on
  the server at its first use: a read is one round trip, without the pool's
  liveness check, BEGIN and ROLLBACK, and without a hop to a reader thread.
  Reads that loop in a thread (`rows_sync`) use a connection the reader thread
  keeps for itself, outside the pool. Either way a connection found lost is
  dropped and the read done once more on a new one (a read is safe to
  repeat); all are closed when the engine is disposed.
- In-memory SQLite: on the driver's side of a pooled connection.

A database failure leaves as a session's read leaves (`storage.failures`:
UNAVAILABLE for a lost connection, INVALID_ARGUMENT for a value the
database refuses), so the edge sees only domain errors.

On SQLite the work runs on the reader pool, except a bounded read (declared
so: rows along an index, a key or a key range under a LIMIT) on a SQLite file:
that runs on the event loop's own connection, a few pages normally in the OS
cache, cheaper than the hop to a thread and back and than turning the same
rows into protobuf messages, which the handler does on the loop anyway; that
connection never waits for a lock (busy timeout 0), so when the database is
busy the read goes to the pool instead. Rows come back as named tuples whose
fields are the columns, converted as the ORM converts them (the columns' own
result processors: UTC datetimes, JSON, booleans). Parameters must be plain
values that need no bind processing (strings, integers).

A read may also name what each row is made into (`convert`): its products
are kept by raw row (`storage.read_memo`).
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import structlog
from psycopg.types.json import set_json_loads
from sqlalchemy import Select, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from ppos.controlplane.core.metrics import DATABASE_FAILURES
from ppos.controlplane.storage import failures
from ppos.controlplane.storage.compiled_read import CompiledRead
from ppos.controlplane.storage.database import SQLITE_BUSY_TIMEOUT_MS, Database
from ppos.controlplane.storage.loop_postgres import LoopConnections
from ppos.controlplane.storage.read_memo import Convert
from ppos.controlplane.storage.sqlite_results import UnchangedResults

_log = structlog.get_logger(__name__)


def _as_text(data: str | bytes) -> str | bytes:
    return data


def keep_json_text(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """JSON and JSONB values come back as their text (bytes), parsed by the read's
    row maker: a converted read keys its memo by the text and parses only the
    rows it has not seen (see the module)."""
    set_json_loads(_as_text, connection)


class PreparedRead:
    """A SELECT with named bind parameters (`bindparam("name")`), compiled once per dialect."""

    def __init__(
        self,
        statement: Select[Any],
        *,
        bounded: bool = False,
        convert: Convert | None = None,
        memo_size: int = 4096,
    ) -> None:
        """`bounded`: reads few rows along an index (a key, or a key range under a
        LIMIT), so it may run on the event loop on SQLite. `convert`: what
        `QuickReads.converted` makes of a row (a pure function of the row: its
        products are kept, see the module), at most `memo_size` of them."""
        self.statement = statement
        self.bounded = bounded
        self._convert = convert
        self._memo_size = memo_size
        self._by_dialect: dict[str, CompiledRead] = {}

    def compiled(self, dialect: Dialect) -> CompiledRead:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = CompiledRead(
                self.statement, dialect, self._convert, self._memo_size
            )
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
        self._postgres = db.is_postgres
        self._opened: set[psycopg.Connection[Any]] = set()
        self._opened_lock = threading.Lock()
        self._loop_postgres: LoopConnections | None = None
        if self._postgres:
            engine = db.read_engine
            args, kwargs = engine.dialect.create_connect_args(engine.url)
            size: int = getattr(engine.pool, "size", lambda: 1)()  # QueuePool: its size
            self._loop_postgres = LoopConnections(
                (args, dict(kwargs)),
                size=size,
                configure=keep_json_text,
                coalesce_window=db.read_coalesce_window,
            )
            event.listen(engine, "engine_disposed", self._close_own)

    async def rows(self, read: PreparedRead, **values: Any) -> list[Any]:
        compiled, raw = await self._raw(read, values)
        return [compiled.row(row) for row in raw]

    async def converted(self, read: PreparedRead, **values: Any) -> list[Any]:
        """What the read's `convert` makes of each row (see the module)."""
        compiled, raw = await self._raw(read, values)
        return compiled.converted(raw)

    async def _raw(
        self, read: PreparedRead, values: Mapping[str, Any]
    ) -> tuple[CompiledRead, Sequence[Any]]:
        """The rows as the driver returns them, and the statement they came from."""
        compiled = read.compiled(self._db.read_engine.dialect)
        if self._loop_postgres is not None:
            return compiled, await self._on_loop_postgres(compiled, values, self._loop_postgres)
        if read.bounded and self._sqlite_file is not None:
            found = self._on_loop(compiled, values)
            if found is not None:
                return compiled, found
        return compiled, await self._db.run_in_executor(lambda: self._raw_sync(compiled, values))

    async def first(self, read: PreparedRead, **values: Any) -> Any | None:
        found = await self.rows(read, **values)
        return found[0] if found else None

    def rows_sync(self, read: PreparedRead, values: Mapping[str, Any]) -> list[Any]:
        compiled = read.compiled(self._db.read_engine.dialect)
        return [compiled.row(row) for row in self._raw_sync(compiled, values)]

    def _raw_sync(self, compiled: CompiledRead, values: Mapping[str, Any]) -> Sequence[Any]:
        params = compiled.parameters(values)
        raw: Sequence[Any]
        try:
            if self._sqlite_file is not None:
                raw = self._sqlite().execute(compiled.sql, params).fetchall()
            elif self._postgres:
                raw = self._own_postgres(compiled.sql, params)
            else:
                raw = self._pooled(compiled.sql, params)
        except (sqlite3.Error, DBAPIError) as exc:
            raise _answer(compiled.sql, exc) from exc
        return raw

    def _own_postgres(self, sql: str, params: Any) -> Sequence[Any]:
        """One statement on this thread's own PostgreSQL connection, once more on a
        new one if that connection was lost; a driver error is raised as SQLAlchemy
        raises it, a connection lost twice as invalidated (answered UNAVAILABLE)."""
        dialect = self._db.read_engine.dialect
        for attempt in (1, 2):
            try:
                cursor = self._postgres_cursor()
            except psycopg.Error as exc:  # cannot connect: as the pool would raise it
                raise DBAPIError.instance(sql, params, exc, psycopg.Error, dialect=dialect) from exc
            try:
                cursor.execute(sql, params, prepare=True)
                return cursor.fetchall()
            except psycopg.Error as exc:
                connection = cursor.connection
                lost = connection.closed or connection.broken
                if lost:
                    self._forget(connection)
                    if attempt == 1:
                        continue
                raise DBAPIError.instance(
                    sql, params, exc, psycopg.Error, connection_invalidated=lost, dialect=dialect
                ) from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _postgres_cursor(self) -> psycopg.Cursor[Any]:
        """This thread's cursor on its own connection (made as the engine makes its
        connections, in autocommit), opened on first use."""
        cursor: psycopg.Cursor[Any] | None = getattr(self._local, "postgres", None)
        if cursor is None or cursor.connection.closed:
            engine = self._db.read_engine
            args, kwargs = engine.dialect.create_connect_args(engine.url)
            connection = psycopg.connect(*args, **kwargs, autocommit=True)
            keep_json_text(connection)
            with self._opened_lock:
                self._opened.add(connection)
            cursor = self._local.postgres = connection.cursor()
        return cursor

    def _forget(self, connection: psycopg.Connection[Any]) -> None:
        with self._opened_lock:
            self._opened.discard(connection)
        connection.close()
        self._local.postgres = None

    def _close_own(self, _engine: Any = None) -> None:
        """Closes every thread's own PostgreSQL connection and the event loop's (the
        engine was disposed: the database is being closed; a later read opens a new one)."""
        with self._opened_lock:
            opened, self._opened = self._opened, set()
        for connection in opened:
            connection.close()
        if self._loop_postgres is not None:
            self._loop_postgres.close()

    async def _on_loop_postgres(
        self, compiled: CompiledRead, values: Mapping[str, Any], connections: LoopConnections
    ) -> list[Any]:
        """A read on one of the event loop's own PostgreSQL connections (see
        `storage.loop_postgres`): no hop to a reader thread."""
        dialect = self._db.read_engine.dialect
        params = compiled.parameters(values)
        sql = compiled.sql

        def error(exc: psycopg.Error, lost: bool) -> Exception:
            wrapped = DBAPIError.instance(
                sql, params, exc, psycopg.Error, connection_invalidated=lost, dialect=dialect
            )
            return _answer(sql, wrapped) if isinstance(wrapped, DBAPIError) else wrapped

        return await connections.fetch(sql, params, error)

    def _pooled(self, sql: str, params: Any) -> Sequence[Any]:
        """One statement on a pooled connection (in-memory SQLite: the pool holds
        the database); a driver error is raised as SQLAlchemy raises it, a lost
        connection invalidated (so it is answered UNAVAILABLE)."""
        engine = self._db.read_engine
        dbapi = engine.dialect.loaded_dbapi
        connection = engine.raw_connection()
        try:
            driver: Any = connection.driver_connection
            cursor = driver.cursor()
            try:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except dbapi.Error as exc:
            lost = engine.dialect.is_disconnect(exc, driver, None)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                sql, params, exc, dbapi.Error, connection_invalidated=lost, dialect=engine.dialect
            ) from exc
        finally:
            connection.close()

    def _on_loop(self, compiled: CompiledRead, values: Mapping[str, Any]) -> list[Any] | None:
        """A bounded read on this (event loop) thread's connection, its rows reused
        while the database is unchanged (`storage.sqlite_results`); None if SQLite
        is busy."""
        results: UnchangedResults | None = getattr(self._local, "unchanged", None)
        if results is None:
            results = self._local.unchanged = UnchangedResults(
                self._sqlite(busy_timeout_ms=0), database=self._sqlite_file
            )
        try:
            raw = results.rows(compiled.sql, compiled.parameters(values))
        except sqlite3.Error as exc:
            busy = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in busy:
                return None
            raise _answer(compiled.sql, exc) from exc
        return raw

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
