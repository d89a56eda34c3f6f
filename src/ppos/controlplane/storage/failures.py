"""Database failures that are the database's state or the request's values, not a bug
in a handler: told apart here, once, and answered as domain errors.

- A conflict (PostgreSQL: deadlock detected 40P01, serialization failure 40001;
  SQLite: the database stayed locked past the busy timeout) rolled the whole
  transaction back and nothing of it happened: `Database` runs the unit of work
  again in a fresh transaction, a bounded number of times, and answers one that
  never clears ABORTED with a RetryInfo (`DATABASE_CONFLICT`).
- A connection lost in the middle of a call (the database restarted, failed over,
  or ended the session), or a database that cannot be reached, is transient:
  UNAVAILABLE with a RetryInfo (`DATABASE_UNAVAILABLE`); the pool replaces the
  connection. It is not retried here: had the connection been lost during the
  commit, the transaction may have committed, and only the caller knows whether
  its call is safe to repeat (calls that create things carry request ids).
- A value the database refuses to store or compare (a NUL in a string on
  PostgreSQL, a number out of a column's range, more values than one statement
  may carry) is the request's fault: INVALID_ARGUMENT that names no value
  (`UNSTORABLE_VALUE`). Validation refuses these before SQL; this is the net
  behind it, so each one is logged and counted.

Anything else stays what it is (a bug: INTERNAL at the edge).
"""

from __future__ import annotations

import enum
import sqlite3

import psycopg
from sqlalchemy.exc import DBAPIError

from ppos.controlplane.core.errors import (
    Aborted,
    DomainError,
    FieldViolation,
    InvalidArgument,
    Unavailable,
)

RETRY_AFTER_SECONDS = 1.0
CONFLICT_RETRY_AFTER_SECONDS = 0.5

# SQLSTATEs of a transaction that lost to a concurrent one (class 40).
_CONFLICT_STATES = frozenset({"40001", "40P01"})
# SQLSTATEs of a server going away under us (class 08 connection exceptions;
# admin and crash shutdown, cannot connect now).
_GONE_STATES = frozenset({"57P01", "57P02", "57P03"})
# libpq refuses a statement with more than 65,535 parameters before sending it.
_TOO_MANY_PARAMETERS = "number of parameters must be between"
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_SQLITE_TOO_BIG = sqlite3.SQLITE_TOOBIG


class Failure(enum.Enum):
    """What kind of database failure an exception is."""

    CONFLICT = "conflict"  # rolled back for a concurrent transaction: run it again
    UNAVAILABLE = "unavailable"  # the connection is gone or cannot be made
    INPUT = "input"  # a value of the request the database refuses


def classify(exc: BaseException) -> Failure | None:
    """The kind of database failure `exc` is; None for anything else."""
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return Failure.UNAVAILABLE
    original = exc.orig
    if isinstance(original, psycopg.Error):
        return _classify_psycopg(original)
    if isinstance(original, sqlite3.Error):
        return _classify_sqlite(original)
    return None


def _classify_psycopg(error: psycopg.Error) -> Failure | None:
    state = error.sqlstate or ""
    if state in _CONFLICT_STATES:
        return Failure.CONFLICT
    if isinstance(error, psycopg.DataError):  # class 22, and NUL refused by the driver
        return Failure.INPUT
    if isinstance(error, psycopg.OperationalError):
        if state.startswith("08") or state in _GONE_STATES:
            return Failure.UNAVAILABLE
        if not state:  # refused by libpq itself: the connection, or a statement too large
            return Failure.INPUT if _TOO_MANY_PARAMETERS in str(error) else Failure.UNAVAILABLE
    return None


def _classify_sqlite(error: sqlite3.Error) -> Failure | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF  # extended codes carry the primary one in the low byte
    if primary in _SQLITE_BUSY_CODES:
        return Failure.CONFLICT
    if primary == _SQLITE_TOO_BIG or isinstance(error, sqlite3.DataError):
        return Failure.INPUT
    return None


def unavailable() -> Unavailable:
    return Unavailable(
        "the database connection was lost or could not be made; retry the call",
        retry_after_seconds=RETRY_AFTER_SECONDS,
        reason="DATABASE_UNAVAILABLE",
    )


def conflict(attempts: int) -> Aborted:
    return Aborted(
        f"the call lost to concurrent changes {attempts} times in a row; retry it",
        retry_after_seconds=CONFLICT_RETRY_AFTER_SECONDS,
        reason="DATABASE_CONFLICT",
    )


def unstorable_value() -> InvalidArgument:
    # No field path is known here and no value may be echoed: say what kind of value.
    return InvalidArgument(
        [
            FieldViolation(
                "request",
                "holds a value the database cannot store or compare (a NUL character, "
                "a number out of range, or too many values)",
            )
        ],
        reason="UNSTORABLE_VALUE",
    )


def as_domain_error(exc: BaseException, failure: Failure, *, attempts: int) -> DomainError:
    """The domain error a classified database failure is answered with."""
    if failure is Failure.CONFLICT:
        return conflict(attempts)
    if failure is Failure.UNAVAILABLE:
        return unavailable()
    return unstorable_value()


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE (PostgreSQL) or SQLite error name of a database failure, for logs."""
    original = getattr(exc, "orig", None)
    if isinstance(original, psycopg.Error):
        return original.sqlstate or "libpq"
    if isinstance(original, sqlite3.Error):
        return str(getattr(original, "sqlite_errorname", "") or "sqlite")
    return type(exc).__name__
