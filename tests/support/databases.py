"""Real databases for tests: a migrated SQLite file and a migrated PostgreSQL
database per test, cloned from a per-session template (fast, isolated).

On PostgreSQL the test role (ppos_test) owns the databases and migrates them,
as the migration job does in production; the planes the tests start connect
as a runtime login (`runtime_url`), which holds the services' grants only.

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
from ppos.controlplane.storage.roles import SERVICES, Login, RolePlan

DEFAULT_PG_URL = "postgresql+psycopg://ppos_test:ppos_test@127.0.0.1:5432/ppos_test"
PREFIX = "ppos_t_"
# The services' roles of the tests (ppos_test_svc_governance...), apart from a
# deployment's `ppos_svc_*` on a shared development server.
ROLE_PREFIX = "ppos_test"
# The login of a plane hosting every service, and of governance running alone.
RUNTIME_ROLE = "ppos_test_runtime"
GOVERNANCE_ROLE = "ppos_test_governance"
ROLE_PLAN = RolePlan(
    prefix=ROLE_PREFIX,
    logins=(
        Login(RUNTIME_ROLE, RUNTIME_ROLE, frozenset(SERVICES)),
        Login(GOVERNANCE_ROLE, GOVERNANCE_ROLE, frozenset({"governance"})),
    ),
)


def pg_admin_url() -> str:
    return os.environ.get("PPOS_TEST_PG_URL", DEFAULT_PG_URL)


def runtime_url(url: str, role: str = RUNTIME_ROLE) -> str:
    """The URL a plane connects with: on PostgreSQL the owner's URL turned into
    the same database as `role` (a runtime login); any other URL as it is (SQLite
    has no roles; a URL naming a runtime login already is one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    if parsed.username != make_url(pg_admin_url()).username:
        return url
    return parsed.set(username=role, password=role).render_as_string(hide_password=False)


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
            migrate.run(db.write_engine, ROLE_PLAN)
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
