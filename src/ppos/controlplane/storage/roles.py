"""Least privilege on PostgreSQL: the owner migrates, each service runs with its grants only.

`migrate` connects as the role that owns the schema. After the migrations it
gives each service's privileges to a NOLOGIN role of its own
(`PREFIX_svc_governance`, `..._noderegistry`, `..._registrysync`), revoking
first whatever that role held, so the grants are exactly `TABLE_GRANTS` after
every run and a table added by a migration is covered by the run that adds it.
The roles the services log in as are members of the roles of the services
they host (one login per service when they run apart, one login for all of
them when they run in one process), and are never owners: an owner may
disable or drop a table's triggers, a runtime role may not.

Why roles per service: governance reads synced jobs only through the sync's
gRPC contract, so a governance process must not be able to read them (or
anything else of another service) in the database; a process hosting several
services is given the union by membership, not a role of its own to keep in step.

SQLite has no roles: there the database file's permissions are the boundary.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from ppos.controlplane.core.logging import get_logger

_log = get_logger("ppos.storage.roles")

SERVICES = ("governance", "noderegistry", "registrysync")
SCHEMA = "public"

_OWN = "SELECT, INSERT, UPDATE, DELETE"  # a service's working state: no TRUNCATE, no TRIGGER
_APPEND = "SELECT, INSERT"  # append-only: no UPDATE, DELETE, TRUNCATE

# table -> service -> the privileges its runtime role gets (GRANT syntax; columns
# allowed). A service not named for a table gets nothing on it. Every table of the
# schema is listed (tests/storage/test_roles.py checks it).
TABLE_GRANTS: Mapping[str, Mapping[str, str]] = {
    # Shared foundation.
    "alembic_version": dict.fromkeys(SERVICES, "SELECT"),  # readiness: migrations applied
    "audit_log": {
        "governance": _APPEND,  # the audit API reads it
        "registrysync": _APPEND,  # signed checkpoints are read back
        "noderegistry": "INSERT, SELECT (audit_id)",  # the insert returns its id
    },
    "spent_preflight_tokens": dict.fromkeys(SERVICES, "SELECT, INSERT, DELETE"),
    "leader_leases": dict.fromkeys(("governance", "registrysync"), "SELECT, INSERT, UPDATE"),
    # Managed with the owner's credential (`ppos-control-plane operators`): a
    # service looks operators up and cannot make one.
    "operators": dict.fromkeys(SERVICES, "SELECT"),
    # Governance.
    **{
        table: {"governance": _OWN}
        for table in (
            "tenants",
            "queues",
            "partners",
            "partner_routes",
            "governance_policies",
            "governance_decisions",
            "outbox_commands",
            "admin_jobs",
            "governance_requests",
            "governance_leases",
            "governance_reconciler_cursor",
            "governance_policy_backfills",
            "governance_gateway_holds",
            "governance_partner_holds",
        )
    },
    # Node registry.
    **{
        table: {"noderegistry": _OWN}
        for table in ("nodes", "node_enrollments", "node_events", "node_event_log", "node_commands")
    },
    # Registry sync: the mirror is append-only; a region's row is never deleted
    # (its cursor would start over).
    "synced_jobs": {"registrysync": _APPEND},
    "sync_quarantine": {"registrysync": _APPEND},
    "sync_regions": {"registrysync": "SELECT, INSERT, UPDATE"},
    "sync_sweeps": {"registrysync": _OWN},
    "sync_sweep_regions": {"registrysync": _OWN},
}

# Role changes from two migrations at once (or two test sessions on one
# cluster) can collide on the shared role catalogue; the loser tries again.
_RACES = ("XX000", "23505", "42710", "40001", "40P01")
ATTEMPTS = 5


class RoleError(Exception):
    """A runtime login that would not be least privilege, or no right to set it up."""


@dataclass(frozen=True)
class Login:
    """A role a deployment's processes log in as, and the services they host."""

    name: str
    password: str | None
    services: frozenset[str]


@dataclass(frozen=True)
class RolePlan:
    prefix: str = "ppos"
    logins: tuple[Login, ...] = ()

    def service_role(self, service: str) -> str:
        return f"{self.prefix}_svc_{service}"


def logins_from_urls(urls: Mapping[str, str]) -> tuple[Login, ...]:
    """One login per user named in the services' URLs (service -> URL), with the
    union of the services whose URL names it."""
    users: dict[str, tuple[str | None, set[str]]] = {}
    for service, url in urls.items():
        if not url:
            continue
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql" or not parsed.username:
            raise RoleError(f"the {service} URL must be a PostgreSQL URL with a user name")
        password, services = users.setdefault(parsed.username, (parsed.password, set()))
        if password != parsed.password:
            raise RoleError(f"role {parsed.username}: two different passwords in the service URLs")
        services.add(service)
    return tuple(Login(n, p, frozenset(s)) for n, (p, s) in sorted(users.items()))


def apply(engine: Engine, plan: RolePlan) -> bool:
    """Create the roles and re-apply every grant (idempotent). False, doing
    nothing, on SQLite or when connected as a role that does not own the schema
    (a server started as its runtime role)."""
    if engine.dialect.name != "postgresql":
        return False
    attempt = 1
    while True:
        try:
            with engine.begin() as connection:
                if not _owns_schema(connection):
                    if plan.logins:
                        raise RoleError(
                            "only the schema's owner can set up runtime roles: "
                            "run migrate with the owner's credential"
                        )
                    _log.info("roles.skipped", reason="not the schema's owner")
                    return False
                _apply(connection, plan)
        except (psycopg.Error, DBAPIError) as exc:
            state = _sqlstate(exc)
            if state not in _RACES or attempt == ATTEMPTS:
                raise
            _log.info("roles.retried", attempt=attempt, sqlstate=state)
            time.sleep(0.05 * attempt)
            attempt += 1
        else:
            return True


def _sqlstate(exc: Exception) -> str | None:
    error = exc.orig if isinstance(exc, DBAPIError) else exc
    return error.sqlstate if isinstance(error, psycopg.Error) else None


def _owns_schema(connection: Connection) -> bool:
    found = connection.exec_driver_sql(
        "SELECT pg_has_role(current_user, tableowner, 'USAGE') FROM pg_tables "
        "WHERE schemaname = %(schema)s AND tablename = 'alembic_version'",
        {"schema": SCHEMA},
    ).scalar()
    return bool(found)


class _Sql:
    """Composed statements run on the connection's own psycopg connection."""

    def __init__(self, connection: Connection) -> None:
        driver = connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        self._driver = driver

    def run(self, statement: sql.Composable | str, params: Iterable[object] = ()) -> None:
        with self._driver.cursor() as cursor:
            cursor.execute(statement, tuple(params))  # type: ignore[arg-type]

    def rows(self, statement: str, params: Iterable[object] = ()) -> list[tuple[object, ...]]:
        with self._driver.cursor() as cursor:
            return list(cursor.execute(statement, tuple(params)).fetchall())


def _apply(connection: Connection, plan: RolePlan) -> None:
    run = _Sql(connection)
    groups = {service: plan.service_role(service) for service in SERVICES}
    for role in groups.values():
        _ensure_role(run, role, login=False, password=None)
    tables = {str(name) for (name,) in run.rows(_TABLES, (SCHEMA,))}
    for login in plan.logins:
        _check_login(run, login, set(groups.values()))
        _ensure_role(run, login.name, login=True, password=login.password)
    schema = sql.Identifier(SCHEMA)
    for grantee in [*groups.values(), *(login.name for login in plan.logins)]:
        who = sql.Identifier(grantee)  # exactly the map below: nothing left from before
        run.run(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema, who))
        run.run(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(schema, who))
    for table, services in TABLE_GRANTS.items():
        if table not in tables:
            continue
        for service, privileges in services.items():
            run.run(
                sql.SQL("GRANT " + privileges + " ON {} TO {}").format(
                    sql.Identifier(SCHEMA, table), sql.Identifier(groups[service])
                )
            )
    _grant_sequences(run, groups)
    for login in plan.logins:
        for service, group in groups.items():
            verb = "GRANT {} TO {}" if service in login.services else "REVOKE {} FROM {}"
            run.run(sql.SQL(verb).format(sql.Identifier(group), sql.Identifier(login.name)))
    _log.info(
        "roles.applied",
        service_roles=sorted(groups.values()),
        logins={login.name: sorted(login.services) for login in plan.logins},
    )


_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = %s"
# Each sequence of the schema with the table whose column owns it (serial or identity).
_SEQUENCES = """
SELECT s.relname, t.relname FROM pg_class s
JOIN pg_namespace n ON n.oid = s.relnamespace
JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
JOIN pg_class t ON t.oid = d.refobjid
WHERE s.relkind = 'S' AND n.nspname = %s
"""


def _grant_sequences(run: _Sql, groups: Mapping[str, str]) -> None:
    """USAGE (nextval) on the sequences of the tables a service inserts into;
    never UPDATE, so no runtime role can setval a sequence back."""
    for sequence, table in run.rows(_SEQUENCES, (SCHEMA,)):
        for service, privileges in TABLE_GRANTS.get(str(table), {}).items():
            if "INSERT" in privileges:
                run.run(
                    sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                        sql.Identifier(SCHEMA, str(sequence)), sql.Identifier(groups[service])
                    )
                )


def _ensure_role(run: _Sql, name: str, *, login: bool, password: str | None) -> None:
    exists = run.rows("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    role = sql.Identifier(name)
    kind = sql.SQL("LOGIN" if login else "NOLOGIN")
    if not exists:
        run.run(sql.SQL("CREATE ROLE {} {} INHERIT").format(role, kind))
    elif login:  # a login made by hand is brought in line (a service role is left as made)
        run.run(sql.SQL("ALTER ROLE {} {} INHERIT").format(role, kind))
    if password is not None:
        run.run(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))


def _check_login(run: _Sql, login: Login, groups: set[str]) -> None:
    """A runtime login is neither a service role, nor an owner, nor a superuser."""
    if login.name in groups:
        raise RoleError(f"role {login.name} is a service role; log in with another name")
    if login.name == _current_user(run):
        raise RoleError(
            f"role {login.name} runs the migrations: the services need a role of their own"
        )
    rows = run.rows(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", (login.name,)
    )
    if rows and rows[0][0]:
        raise RoleError(f"role {login.name} is a superuser or bypasses row security")
    owned = run.rows(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tableowner = %s LIMIT 1",
        (SCHEMA, login.name),
    )
    if owned:
        raise RoleError(
            f"role {login.name} owns table {owned[0][0]}: an owner can switch off its "
            "triggers; give the tables to the migrations' role (REASSIGN OWNED)"
        )


def _current_user(run: _Sql) -> str:
    return str(run.rows("SELECT current_user")[0][0])
