"""Real databases for tests: a migrated SQLite file and a migrated PostgreSQL
database per test, cloned from a per-session template (fast, isolated).

PostgreSQL is not optional: when it cannot be reached the session fails
loudly (set PPOS_TEST_SKIP_POSTGRES=1 to run SQLite only, never in CI).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from ppos.controlplane.storage import migrate
from ppos.controlplane.storage.database import Database

DEFAULT_PG_URL = "postgresql+psycopg://ppos_test:ppos_test@127.0.0.1:5432/ppos_test"
PREFIX = "ppos_t_"


def pg_admin_url() -> str:
    return os.environ.get("PPOS_TEST_PG_URL", DEFAULT_PG_URL)


def _libpq(url: str, database: str | None = None) -> str:
    parsed = make_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresDatabases:
    """Creates per-test databases from a migrated template."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._counter = itertools.count()
        self._pid = os.getpid()
        self.template = f"{PREFIX}{self._pid}_template"
        self._admin = psycopg.connect(_libpq(admin_url), autocommit=True, connect_timeout=5)
        self._drop_stale()
        self._admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self._admin.execute(f'CREATE DATABASE "{self.template}"')
        db = Database(self.url_of(self.template), pool_size=1)
        try:
            migrate.upgrade(db.write_engine)
        finally:
            db.close()

    def _drop_stale(self) -> None:
        rows = self._admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)
        ).fetchall()
        for (name,) in rows:
            pid_part = name[len(PREFIX) :].split("_", 1)[0]
            if pid_part.isdigit() and not _pid_alive(int(pid_part)):
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url_of(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def create(self) -> str:
        name = f"{PREFIX}{self._pid}_{next(self._counter)}"
        self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def drop(self, name: str) -> None:
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_empty(self) -> str:
        """A database with no schema (for migration tests)."""
        name = f"{PREFIX}{self._pid}_{next(self._counter)}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        return name

    def close(self) -> None:
        self._admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self._admin.close()


class SqliteDatabases:
    """Copies a migrated template file per test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        db = Database(f"sqlite:///{self.template}", pool_size=1)
        try:
            migrate.upgrade(db.write_engine)
        finally:
            db.close()

    def create(self, directory: Path) -> str:
        target = directory / "control-plane.db"
        shutil.copyfile(self.template, target)
        return f"sqlite:///{target}"
