"""Prepared statements on an asynchronous psycopg connection, through libpq directly.

A quick read on PostgreSQL (`storage.loop_postgres`) is one prepared statement
whose rows are read on the event loop. psycopg's `AsyncCursor.execute` and
`fetchall` do that through its generator protocol, a connection lock and a
reader added and removed per wait: in a loop of one-row reads on this machine,
45 µs of CPU a read against 13 µs for the same libpq calls made here (same
connection, statement and binary rows, loaded by psycopg's own `Transformer`,
so values come back exactly as a cursor returns them).

`PqStatements` keeps, for one connection, the statements it has prepared
(named on first use, as psycopg's `prepare=True` does) and runs one statement
at a time: parameters dumped by psycopg's adapters, the statement sent, the
results read as the socket has them, rows loaded in binary. A statement the
server refuses raises the psycopg error of its SQLSTATE; a lost connection
raises psycopg's OperationalError, as a cursor would. A caller that gives up
mid-way leaves the connection busy (not idle), which the pool then drops.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer

# SQLAlchemy renders psycopg's named placeholders; `%%` is a literal percent sign.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_BINARY = pq.Format.BINARY
_DONE = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)


class _Statement:
    """One SQL text as libpq takes it: `$n` placeholders and the names they stand for."""

    __slots__ = ("names", "text")

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(0) == "%%":
                return "%"
            names.append(match.group(1))
            return f"${len(names)}"

        self.text = _PLACEHOLDER.sub(number, sql).encode("utf-8")
        self.names = tuple(names)


_STATEMENTS: dict[str, _Statement] = {}


def _statement(sql: str) -> _Statement:
    found = _STATEMENTS.get(sql)
    if found is None:
        found = _STATEMENTS[sql] = _Statement(sql)
    return found


class PqStatements:
    """Runs prepared statements on one asynchronous connection (see the module)."""

    __slots__ = ("_connection", "_prepared", "_transformer")

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection
        connection.pgconn.nonblocking = 1
        self._transformer = Transformer(connection)
        self._prepared: dict[str, bytes] = {}

    async def rows(self, sql: str, params: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
        """The rows of `sql` (psycopg's named placeholders) with `params`, as tuples."""
        statement = _statement(sql)
        values = [params[name] for name in statement.names] if params else []
        transformer = self._transformer
        dumped = transformer.dump_sequence(values, [PyFormat.AUTO] * len(values))
        pgconn = self._connection.pgconn
        name = self._prepared.get(sql)
        if name is None:
            name = f"ppos_quick_{len(self._prepared)}".encode()
            pgconn.send_prepare(name, statement.text, param_types=transformer.types)
            await self._result(pgconn)
            self._prepared[sql] = name
        pgconn.send_query_prepared(
            name, dumped, param_formats=transformer.formats, result_format=_BINARY
        )
        result = await self._result(pgconn)
        transformer.set_pgresult(result)
        return transformer.load_rows(0, result.ntuples, tuple)

    async def _result(self, pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
        """The result of the one statement sent: flushed, read as the socket has it."""
        while pgconn.flush():
            await self._ready(pgconn, writable=True)
        results: list[pq.abc.PGresult] = []
        while True:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    return _one(results, self._connection.info.encoding)
                results.append(result)
            await self._ready(pgconn, writable=False)

    async def _ready(self, pgconn: pq.abc.PGconn, *, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        socket = pgconn.socket
        if writable:
            loop.add_writer(socket, wake)
        else:
            loop.add_reader(socket, wake)
        try:
            await ready
        finally:
            if writable:
                loop.remove_writer(socket)
            else:
                loop.remove_reader(socket)


def _one(results: Sequence[pq.abc.PGresult], encoding: str) -> pq.abc.PGresult:
    """The statement's result, or the error it is (what a cursor would raise)."""
    for result in results:
        if result.status not in _DONE:
            raise errors.error_from_result(result, encoding=encoding)
    if len(results) != 1:
        raise psycopg.InterfaceError(f"one statement gave {len(results)} results")
    return results[0]
