"""Prepared statements through libpq directly (storage.pq_statements), PostgreSQL only:
values as a cursor returns them, placeholders and literal percent signs, the
server's errors as psycopg raises them, and a caller that gives up mid-way
leaving the connection busy (so the pool drops it)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg import pq

from ppos.controlplane.storage.pq_statements import PqStatements
from tests.support.databases import _libpq

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

VALUES = (
    "SELECT %(n)s::bigint + 1, %(text)s::text, '100%%', %(when)s::timestamptz, "
    "'{\"a\": [1, 2]}'::jsonb, NULL::text, true, %(text)s::text = %(other)s::text"
)


async def test_rows_are_what_a_cursor_returns_with_placeholders_and_percent_signs(
    database_url: str,
) -> None:
    when = dt.datetime(2026, 12, 6, 5, 0, 1, 123456, tzinfo=dt.UTC)
    params: dict[str, Any] = {"n": 41, "text": "é\u200b%s", "when": when, "other": "x"}
    async with await psycopg.AsyncConnection.connect(
        _libpq(database_url), autocommit=True
    ) as connection:
        statements = PqStatements(connection)
        first = await statements.rows(VALUES, params)
        again = await statements.rows(VALUES, {**params, "n": 1})  # the prepared one
        cursor = connection.cursor(binary=True)
        await cursor.execute(VALUES, params)
        expected = await cursor.fetchall()
        assert first == expected
        assert first[0][:3] == (42, "é\u200b%s", "100%")
        assert again[0][0] == 2
        assert await statements.rows("SELECT 1 WHERE false", None) == []


async def test_a_statement_the_server_refuses_raises_the_error_of_its_sqlstate(
    database_url: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(
        _libpq(database_url), autocommit=True
    ) as connection:
        statements = PqStatements(connection)
        with pytest.raises(psycopg.errors.DivisionByZero):
            await statements.rows("SELECT 1 / %(zero)s::int", {"zero": 0})
        with pytest.raises(psycopg.errors.UndefinedTable):
            await statements.rows("SELECT * FROM no_such_table", None)
        assert await statements.rows("SELECT %(one)s::int", {"one": 1}) == [(1,)]


async def test_a_caller_that_gives_up_leaves_the_connection_busy(database_url: str) -> None:
    connection = await psycopg.AsyncConnection.connect(_libpq(database_url), autocommit=True)
    try:
        statements = PqStatements(connection)
        slow = asyncio.ensure_future(statements.rows("SELECT pg_sleep(5)", None))
        await asyncio.sleep(0.2)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert connection.pgconn.transaction_status == pq.TransactionStatus.ACTIVE
    finally:
        connection.pgconn.finish()  # what the pool does with a busy connection
