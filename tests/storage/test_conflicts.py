"""A unit of work that loses to a concurrent transaction runs again in a fresh one:
a real deadlock on PostgreSQL (two transactions taking two rows in opposite
order), the database locked past the busy timeout on SQLite. One that never
clears is ABORTED with a RetryInfo (`DATABASE_CONFLICT`) and changed nothing. A
value the database refuses is INVALID_ARGUMENT that names no value."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
import structlog
from google.rpc import error_details_pb2
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ppos.controlplane.core.errors import Aborted, InvalidArgument
from ppos.controlplane.storage.database import Database, RetryPolicy
from tests.support.databases import _libpq

ATTEMPTS = 3
WAITING_ON_A_LOCK = (
    "SELECT pid FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(
        database_url,
        pool_size=2,
        retry=RetryPolicy(attempts=ATTEMPTS, base_delay=0.01, max_delay=0.05),
        sqlite_busy_timeout_ms=100,  # SQLite: locked is reported after 0.1 s, not 10
    )
    database.write_sync(
        lambda s: s.execute(
            text("CREATE TABLE conflict_probe (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        )
    )
    database.write_sync(
        lambda s: s.execute(text("INSERT INTO conflict_probe VALUES (1, 0), (2, 0)"))
    )
    yield database
    database.close()


def _counts(db: Database) -> list[int]:
    rows = db.read_sync(
        lambda s: s.execute(text("SELECT n FROM conflict_probe ORDER BY id")).scalars().all()
    )
    return list(rows)


class OppositeOrder(threading.Thread):
    """PostgreSQL: a second transaction that, `rounds` times, takes row 2, waits until
    the unit of work (holding row 1) waits for row 2, then takes row 1: a deadlock.
    The unit of work started waiting first, so its deadlock check runs first and
    PostgreSQL aborts it; this one then gets row 1 and commits."""

    def __init__(self, url: str, rounds: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.rounds = rounds
        self.holding = threading.Semaphore(0)  # one release per round: row 2 is held
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(_libpq(self.url)) as conn:
                for _ in range(self.rounds):
                    conn.execute("UPDATE conflict_probe SET n = n + 1 WHERE id = 2")
                    self.holding.release()
                    self._until_someone_waits(conn)
                    # A head start for the unit of work's deadlock check (it runs
                    # deadlock_timeout, 1 s, after a backend starts waiting): so it is
                    # the one PostgreSQL aborts, even when a loaded machine runs the
                    # two backends' timers late.
                    time.sleep(0.5)
                    conn.execute("UPDATE conflict_probe SET n = n + 1 WHERE id = 1")
                    conn.commit()
        except BaseException as exc:  # handed to the test, which fails on it
            self.error = exc
            self.holding.release()

    @staticmethod
    def _until_someone_waits(conn: psycopg.Connection[tuple[int]]) -> None:
        deadline = time.monotonic() + 20  # a bound on waiting, not a performance assertion
        while not conn.execute(WAITING_ON_A_LOCK).fetchall():
            if time.monotonic() > deadline:
                raise AssertionError("the unit of work never waited for row 2")
            time.sleep(0.01)

    def wait_holding(self) -> None:
        assert self.holding.acquire(timeout=20), "the other transaction never took row 2"
        assert self.error is None, self.error


class WriteLock:
    """SQLite: another connection holding the write lock (BEGIN IMMEDIATE) until released."""

    def __init__(self, url: str) -> None:
        path = make_url(url).database
        assert path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("UPDATE conflict_probe SET n = n + 1 WHERE id = 2")
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.conn.execute("COMMIT")
        self.conn.close()


def _bump_both(before: Callable[[int], None], runs: list[int]) -> Callable[[Session], int]:
    """The unit of work: row 1, then row 2. `runs` counts its runs for the test;
    the work itself keeps nothing from one run to the next."""

    def work(session: Session) -> int:
        runs.append(len(runs) + 1)
        before(len(runs))
        session.execute(text("UPDATE conflict_probe SET n = n + 1 WHERE id = 1"))
        session.execute(text("UPDATE conflict_probe SET n = n + 1 WHERE id = 2"))
        return len(runs)

    return work


def test_a_transaction_that_loses_to_another_runs_again_and_succeeds(
    db: Database, database_url: str
) -> None:
    runs: list[int] = []
    if db.is_postgres:
        other = OppositeOrder(database_url, rounds=1)
        other.start()

        def before(run: int) -> None:
            if run == 1:
                other.wait_holding()

        with structlog.testing.capture_logs() as logs:
            assert db.write_sync(_bump_both(before, runs)) == 2
        other.join(timeout=20)
        assert other.error is None, other.error
        retried = [e for e in logs if e["event"] == "db.conflict_retried"]
        assert [e["sqlstate"] for e in retried] == ["40P01"]  # deadlock detected
        assert _counts(db) == [2, 2]  # each transaction's two increments, once
        return
    lock = WriteLock(database_url)
    try:

        def release_before_the_second_run(run: int) -> None:
            if run == 2:
                lock.release()

        with structlog.testing.capture_logs() as logs:
            assert db.write_sync(_bump_both(release_before_the_second_run, runs)) == 2
    finally:
        lock.release()
    retried = [e for e in logs if e["event"] == "db.conflict_retried"]
    assert [e["sqlstate"] for e in retried] == ["SQLITE_BUSY"]
    assert _counts(db) == [1, 2]


def test_a_conflict_that_never_clears_is_aborted_with_retry_info(
    db: Database, database_url: str
) -> None:
    runs: list[int] = []
    if db.is_postgres:
        other = OppositeOrder(database_url, rounds=ATTEMPTS)
        other.start()
        with pytest.raises(Aborted) as caught:
            db.write_sync(_bump_both(lambda _run: other.wait_holding(), runs))
        other.join(timeout=20)
        assert other.error is None, other.error
        expected = [ATTEMPTS, ATTEMPTS]  # only the other transaction's increments
    else:
        lock = WriteLock(database_url)
        try:
            with pytest.raises(Aborted) as caught:
                db.write_sync(_bump_both(lambda _run: None, runs))
        finally:
            lock.release()
        expected = [0, 1]
    assert len(runs) == ATTEMPTS
    error = caught.value
    assert error.reason == "DATABASE_CONFLICT"
    assert error.retry_after_seconds is not None
    assert error.retry_after_seconds > 0
    details = error.to_status_proto().details
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in details)
    assert error.to_grpc_status().code.name == "ABORTED"
    assert _counts(db) == expected  # nothing of the aborted unit of work happened


def test_a_value_the_database_refuses_is_invalid_argument_naming_no_value(
    db: Database,
) -> None:
    def find(value: str) -> int:
        return int(
            db.read_sync(
                lambda s: s.execute(
                    text("SELECT count(*) FROM conflict_probe WHERE CAST(id AS TEXT) = :v"),
                    {"v": value},
                ).scalar_one()
            )
        )

    def store(value: int) -> None:
        db.write_sync(
            lambda s: s.execute(text("UPDATE conflict_probe SET n = :n WHERE id = 1"), {"n": value})
        )

    if not db.is_postgres:
        # SQLite stores NUL and 64-bit integers: the same calls simply work.
        assert find("1\x00") == 0
        store(2**40)
        assert _counts(db) == [2**40, 0]
        return
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(InvalidArgument) as nul:
            find("1\x00secret")
        with pytest.raises(InvalidArgument) as big:
            store(2**40)  # the column is a 32-bit integer
    for error in (nul.value, big.value):
        assert error.reason == "UNSTORABLE_VALUE"
        assert "secret" not in error.message
        assert "\x00" not in error.message
        assert str(2**40) not in error.message
    refused = [e for e in logs if e["event"] == "db.input"]
    assert [e["sqlstate"] for e in refused] == ["libpq", "22003"]
    assert not any("secret" in repr(e) or str(2**40) in repr(e) for e in logs)
    assert _counts(db) == [0, 0]
