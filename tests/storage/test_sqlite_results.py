"""A SQLite read connection's results reused while the database is unchanged
(storage.sqlite_results), SQLite only (PostgreSQL has no such reads): a read
run again without a commit in between runs no statement; a commit by another
connection, to any table, even one of another process, is seen by the next
read; uncommitted work is not; the results kept are bounded. Each with the
WAL-index header watched (the pragma spared while it is unchanged) and not."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ppos.controlplane.storage.sqlite_results import UnchangedResults, WalIndexHeader

READ = "SELECT x FROM t WHERE x > ? ORDER BY x"
WATCHED = pytest.mark.parametrize("watched", [True, False], ids=["wal-index", "pragma"])


def _results(
    reader: sqlite3.Connection, tmp_path: Path, watched: bool, size: int = 256
) -> UnchangedResults:
    database = str(tmp_path / "results.db") if watched else None
    return UnchangedResults(reader, size, database=database)


def _database(tmp_path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection, list[str]]:
    """(a writer, a query-only reader, the statements the reader ran)."""
    path = tmp_path / "results.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("CREATE TABLE other (y INTEGER)")
    writer.execute("INSERT INTO t VALUES (1), (2)")
    reader = sqlite3.connect(path, isolation_level=None, timeout=0)
    reader.execute("PRAGMA query_only=ON")
    ran: list[str] = []
    reader.set_trace_callback(ran.append)
    return writer, reader, ran


@WATCHED
def test_a_read_again_without_a_commit_runs_no_statement(tmp_path: Path, watched: bool) -> None:
    writer, reader, ran = _database(tmp_path)
    results = _results(reader, tmp_path, watched)
    first = results.rows(READ, (0,))
    ran.clear()
    again = results.rows(READ, (0,))
    assert again is first
    assert first == [(1,), (2,)]
    assert ran == ["PRAGMA data_version"]  # the header is first read here
    ran.clear()
    assert results.rows(READ, (0,)) is first
    assert ran == ([] if watched else ["PRAGMA data_version"])
    assert results.rows(READ, (1,)) == [(2,)]  # other parameters: their own run
    assert ran[-1].startswith("SELECT x FROM t")
    writer.close()
    reader.close()


@WATCHED
def test_a_commit_anywhere_is_seen_by_the_next_read_and_uncommitted_work_is_not(
    tmp_path: Path, watched: bool
) -> None:
    writer, reader, _ran = _database(tmp_path)
    results = _results(reader, tmp_path, watched)
    assert results.rows(READ, (0,)) == [(1,), (2,)]
    assert results.rows(READ, (0,)) == [(1,), (2,)]  # the header read from here on
    writer.execute("BEGIN")
    writer.execute("INSERT INTO t VALUES (3)")
    assert results.rows(READ, (0,)) == [(1,), (2,)]
    writer.execute("COMMIT")
    assert results.rows(READ, (0,)) == [(1,), (2,), (3,)]

    kept = results.rows(READ, (0,))
    writer.execute("INSERT INTO other VALUES (1)")  # another table: everything forgotten
    assert results.rows(READ, (0,)) is not kept

    script = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('INSERT INTO t VALUES (4)')"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "results.db")], check=True)
    assert results.rows(READ, (0,)) == [(1,), (2,), (3,), (4,)]
    writer.close()
    reader.close()


@WATCHED
def test_the_results_kept_are_bounded(tmp_path: Path, watched: bool) -> None:
    writer, reader, ran = _database(tmp_path)
    results = _results(reader, tmp_path, watched, size=3)
    for bound in range(4):  # the fourth forgets the three before it
        results.rows(READ, (bound,))
    ran.clear()
    results.rows(READ, (0,))
    assert ran[-1].startswith("SELECT x FROM t")
    ran.clear()
    results.rows(READ, (3,))
    assert ran == ([] if watched else ["PRAGMA data_version"])
    writer.close()
    reader.close()


def test_without_a_wal_index_every_read_asks_the_pragma(tmp_path: Path) -> None:
    """A database not in WAL mode has no -shm file to map: the pragma on every
    read, and commits are seen as before."""
    path = tmp_path / "journal.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("INSERT INTO t VALUES (1)")
    reader = sqlite3.connect(path, isolation_level=None, timeout=0)
    ran: list[str] = []
    reader.set_trace_callback(ran.append)
    results = UnchangedResults(reader, database=str(path))
    for _ in range(3):
        assert results.rows(READ, (0,)) == [(1,)]
    ran.clear()
    assert results.rows(READ, (0,)) == [(1,)]
    assert ran == ["PRAGMA data_version"]
    writer.execute("INSERT INTO t VALUES (2)")
    assert results.rows(READ, (0,)) == [(1,), (2,)]
    writer.close()
    reader.close()


def test_a_wal_index_header_whose_copies_differ_is_no_header(tmp_path: Path) -> None:
    """A commit being written leaves the header's two copies different: read as
    None (a change), never as a header to compare."""
    database = tmp_path / "fake.db"
    shm = tmp_path / "fake.db-shm"
    shm.write_bytes(b"a" * 48 + b"a" * 48 + b"\0" * 100)
    assert WalIndexHeader(str(database)).read() == b"a" * 48
    shm.write_bytes(b"a" * 48 + b"b" * 48 + b"\0" * 100)
    assert WalIndexHeader(str(database)).read() is None
    with pytest.raises(OSError):
        WalIndexHeader(str(tmp_path / "absent.db"))
