"""The schema: migrations apply from nothing on both databases, agree with the
models, and the audit log is append-only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from ppos.controlplane.runtime.schema import load_all
from ppos.controlplane.storage import migrate
from ppos.controlplane.storage.database import Database
from tests.support.databases import PostgresDatabases
from tests.support.processes import run_cli


@pytest.fixture
def empty_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    postgres: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name = postgres.create_empty()
    try:
        yield postgres.url_of(name)
    finally:
        postgres.drop(name)


def test_migrate_command_applies_every_branch_from_nothing(empty_database: str) -> None:
    result = run_cli("migrate", env={"PPOS_DATABASE_URL": empty_database})
    assert result.returncode == 0, result.stderr
    db = Database(empty_database, pool_size=1)
    try:
        assert migrate.pending(db.read_engine) == set()
        script = ScriptDirectory.from_config(migrate.alembic_config(db.write_engine))
        with db.read_engine.connect() as connection:
            applied = set(MigrationContext.configure(connection).get_current_heads())
        assert applied == set(script.get_heads())
        again = run_cli("migrate", env={"PPOS_DATABASE_URL": empty_database})
        assert again.returncode == 0, "migrating twice must be a no-op"
    finally:
        db.close()


def test_models_and_migrations_agree(database_url: str) -> None:
    db = Database(database_url, pool_size=1)
    try:
        with db.read_engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, load_all())
    finally:
        db.close()
    assert differences == [], "models and migrations disagree; add a migration"


def test_every_branch_roots_at_the_foundation(database_url: str) -> None:
    db = Database(database_url, pool_size=1)
    try:
        script = ScriptDirectory.from_config(migrate.alembic_config(db.write_engine))
    finally:
        db.close()
    assert script.get_bases() == ["0001_foundation"]
    owners = {"foundation", "noderegistry", "registrysync", "governance"}
    for revision in script.walk_revisions():
        if revision.revision != "0001_foundation":
            assert revision.revision.split("_")[0] in owners, revision.revision


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET actor_name = 'x'", "DELETE FROM audit_log"]
)
def test_audit_log_is_append_only(database_url: str, statement: str) -> None:
    db = Database(database_url, pool_size=1)
    try:
        with db.write_engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO audit_log (created_at, service, actor_kind, actor_name, method, "
                    "resource_kind, resource_id, before_json, after_json, request_id) VALUES "
                    "(:t, 's', 'operator', 'a', 'm', 'k', 'i', '', '', 'r')"
                ),
                {"t": "2026-11-28 10:00:00+00:00"},
            )
        with pytest.raises(sa.exc.DatabaseError), db.write_engine.begin() as connection:
            connection.execute(sa.text(statement))
        with db.read_engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT actor_name FROM audit_log")).all()
        assert [r[0] for r in rows] == ["a"]
    finally:
        db.close()


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}", pool_size=1)
    try:
        with db.read_engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    finally:
        db.close()


async def test_sqlite_writes_are_serialised_and_none_is_lost(tmp_path: Path) -> None:
    """Many concurrent write transactions through the single writer: all land."""
    import asyncio

    url = f"sqlite:///{tmp_path / 'w.db'}"
    db = Database(url, pool_size=4)
    try:
        with db.write_engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            connection.execute(sa.text("INSERT INTO counter VALUES (0)"))

        def bump(session: sa.orm.Session) -> None:
            value = session.execute(sa.text("SELECT n FROM counter")).scalar_one()
            session.execute(sa.text("UPDATE counter SET n = :n"), {"n": value + 1})

        await asyncio.gather(*(db.write(bump) for _ in range(200)))
        assert (
            await db.read(lambda s: s.execute(sa.text("SELECT n FROM counter")).scalar_one()) == 200
        )
    finally:
        db.close()


def test_postgres_urls_must_use_psycopg3() -> None:
    with pytest.raises(ValueError, match="psycopg 3"):
        Database("postgresql+psycopg2://u@h/db")
    plain = Database("postgresql://u@127.0.0.1:1/db", pool_size=1)
    try:
        assert plain.url.drivername == "postgresql+psycopg"
    finally:
        plain.close()
