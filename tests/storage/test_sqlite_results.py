"""A SQLite read connection's results reused while the database is unchanged
(storage.sqlite_results), SQLite only (PostgreSQL has no such reads): a read
run again without a commit in between runs no statement; a commit by another
connection, to any table, even one of another process, is seen by the next
read; uncommitted work is not; the results kept are bounded."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from ppos.controlplane.storage.sqlite_results import UnchangedResults

READ = "SELECT x FROM t WHERE x > ? ORDER BY x"


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


def test_a_read_again_without_a_commit_runs_no_statement(tmp_path: Path) -> None:
    writer, reader, ran = _database(tmp_path)
    results = UnchangedResults(reader)
    first = results.rows(READ, (0,))
    ran.clear()
    again = results.rows(READ, (0,))
    assert again is first
    assert first == [(1,), (2,)]
    assert ran == ["PRAGMA data_version"]
    assert results.rows(READ, (1,)) == [(2,)]  # other parameters: their own run
    assert ran[-1].startswith("SELECT x FROM t")
    writer.close()
    reader.close()


def test_a_commit_anywhere_is_seen_by_the_next_read_and_uncommitted_work_is_not(
    tmp_path: Path,
) -> None:
    writer, reader, _ran = _database(tmp_path)
    results = UnchangedResults(reader)
    assert results.rows(READ, (0,)) == [(1,), (2,)]
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


def test_the_results_kept_are_bounded(tmp_path: Path) -> None:
    writer, reader, ran = _database(tmp_path)
    results = UnchangedResults(reader, size=3)
    for bound in range(4):  # the fourth forgets the three before it
        results.rows(READ, (bound,))
    ran.clear()
    results.rows(READ, (0,))
    assert ran[-1].startswith("SELECT x FROM t")
    ran.clear()
    results.rows(READ, (3,))
    assert ran == ["PRAGMA data_version"]
    writer.close()
    reader.close()
