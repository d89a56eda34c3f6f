"""Least privilege on PostgreSQL: what the services' runtime logins can and cannot do.

The owner migrates; the planes of the tests connect as a runtime login
(tests/support/databases.py), as production's services do. Roles exist on
PostgreSQL only, so these tests have no SQLite half: on SQLite the file's
permissions are the boundary, and the triggers and the chain (test_tamper.py)
the protection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ppos.controlplane.core.logging import SecretRegistry
from ppos.controlplane.governance.v1 import governance_service_pb2 as gov_pb
from ppos.controlplane.governance.v1 import governance_service_pb2_grpc as gov_grpc
from ppos.controlplane.runtime.schema import load_all
from ppos.controlplane.services.registry_sync.pages import commit_page
from ppos.controlplane.services.registry_sync.verify import Rejected
from ppos.controlplane.storage import migrate, roles
from ppos.controlplane.storage.database import Database
from tests.registry_sync.checkpoint_keys import KEYS, SIGN
from tests.registry_sync.test_storage import NOW, page, prepare, records
from tests.support.databases import (
    GOVERNANCE_ROLE,
    ROLE_PLAN,
    RUNTIME_ROLE,
    PostgresDatabases,
    runtime_url,
)
from tests.support.processes import run_cli
from tests.support.servers import start_plane, stop_plane

MIRROR = ("synced_jobs", "sync_quarantine")
# Tables of the other services: governance alone may touch none of them.
NOT_GOVERNANCE = (
    "synced_jobs",
    "sync_quarantine",
    "sync_regions",
    "sync_sweeps",
    "sync_sweep_regions",
    "nodes",
    "node_enrollments",
    "node_events",
    "node_event_log",
    "node_commands",
)


def test_every_table_has_its_grants() -> None:
    """A table added without its line in TABLE_GRANTS would be out of every service's reach."""
    assert set(roles.TABLE_GRANTS) == {*load_all().tables, "alembic_version"}


@pytest.fixture
def owner_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    name = postgres_databases.create()
    try:
        yield postgres_databases.url_of(name)
    finally:
        postgres_databases.drop(name)


@pytest.fixture
def mirror(owner_url: str) -> str:
    """Ten synced revisions over two pages and two quarantined records, written
    by the sync's own code connected as the runtime login."""
    db = Database(runtime_url(owner_url), pool_size=2)
    try:
        prepare(db)
        feed, items = records(10)
        first = [*items[:6], Rejected(b"\xff\x01", "INVALID_ENVELOPE", "not a JobRecord")]
        second = [*items[6:], Rejected(b"\xff\x02", "INVALID_ENVELOPE", "not a JobRecord")]
        for generation, (chunk, last) in enumerate(((first, 6), (second, 10))):
            db.write_sync(
                lambda s, c=chunk, g=generation, n=last: commit_page(
                    s, page(feed, c, g, n), NOW, postgres=True, sign=SIGN, keys=KEYS
                )
            )
    finally:
        db.close()
    return owner_url


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def attempt(url: str, statement: str) -> psycopg.Error | None:
    """Run `statement` in its own transaction; the error it raised, if any."""
    with psycopg.connect(_libpq(url)) as connection:
        try:
            connection.execute(statement)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            connection.rollback()
            return exc
        connection.rollback()
        return None


def counts(url: str) -> tuple[int, ...]:
    with psycopg.connect(_libpq(url)) as connection:
        return tuple(
            int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in MIRROR
        )


def columns(url: str, table: str) -> list[str]:
    with psycopg.connect(_libpq(url)) as connection:
        rows = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        )
        return [str(name) for (name,) in rows]


def refused(url: str, statement: str) -> str:
    error = attempt(url, statement)
    assert error is not None, f"allowed: {statement}"
    assert isinstance(error, psycopg.errors.InsufficientPrivilege), (statement, error)
    return str(error)


def test_the_runtime_login_cannot_rewrite_delete_or_truncate_the_mirror(mirror: str) -> None:
    runtime = runtime_url(mirror)
    before = counts(mirror)
    assert before == (10, 2)
    for table in MIRROR:
        # Every column: refused by the grants, before any trigger runs.
        for column in columns(mirror, table):
            message = refused(runtime, f"UPDATE {table} SET {column} = {column}")
            assert f"permission denied for table {table}" in message
        for statement in (f"DELETE FROM {table}", f"TRUNCATE {table}"):
            assert f"permission denied for table {table}" in refused(runtime, statement)
    assert counts(mirror) == before


def test_the_runtime_login_cannot_switch_off_or_drop_the_guards(mirror: str) -> None:
    runtime = runtime_url(mirror)
    for table in MIRROR:
        for statement in (
            f"ALTER TABLE {table} DISABLE TRIGGER USER",
            f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only",
            f"DROP TRIGGER {table}_append_only ON {table}",
            f"ALTER TABLE {table} ADD COLUMN forged text",
            f"ALTER TABLE {table} OWNER TO {RUNTIME_ROLE}",
            f"DROP TABLE {table}",
        ):
            assert "must be owner" in refused(runtime, statement)
        assert "permission denied" in refused(
            runtime,
            f"CREATE TRIGGER forged BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ppos_sync_refuse_change()",
        )
    assert "permission denied to set parameter" in refused(
        runtime, "SET session_replication_role = replica"
    )
    # Nor give back the ids the chain covers (nextval only).
    assert "permission denied for sequence" in refused(
        runtime, "SELECT setval(pg_get_serial_sequence('synced_jobs', 'sync_sequence'), 1)"
    )
    assert "permission denied" in refused(runtime, "CREATE TABLE forged (x int)")
    assert counts(mirror) == (10, 2)


def test_the_audit_log_and_the_operators_are_out_of_a_services_reach(mirror: str) -> None:
    runtime = runtime_url(mirror)
    for statement in ("UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log"):
        assert "permission denied for table audit_log" in refused(runtime, statement)
    # Operators are made with the owner's credential; a service only looks them up.
    assert "permission denied for table operators" in refused(
        runtime,
        "INSERT INTO operators VALUES ('mallory', 'admin', repeat('0', 64), now(), now(), NULL)",
    )


def test_governance_alone_has_no_grant_on_another_services_rows(mirror: str) -> None:
    governance = runtime_url(mirror, GOVERNANCE_ROLE)
    for table in NOT_GOVERNANCE:
        assert f"permission denied for table {table}" in refused(
            governance, f"SELECT count(*) FROM {table}"
        )
    # Nor write one: no forged revision, no cursor moved.
    assert "permission denied for table synced_jobs" in refused(
        governance, "INSERT INTO synced_jobs SELECT * FROM synced_jobs LIMIT 0"
    )
    assert "permission denied for table sync_regions" in refused(
        governance, "UPDATE sync_regions SET cursor = 'c_forged'"
    )
    with psycopg.connect(_libpq(mirror)) as connection:
        held = connection.execute(
            "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = %s AND table_name = ANY(%s)",
            (ROLE_PLAN.service_role("governance"), list(NOT_GOVERNANCE)),
        ).fetchall()
    assert held == []


def test_every_migrate_re_applies_exactly_the_grants(owner_url: str) -> None:
    """A grant added by hand is taken back and a revoked one given again: the
    grants after a migrate are TABLE_GRANTS, whatever was there before."""
    sync_role = ROLE_PLAN.service_role("registrysync")
    with psycopg.connect(_libpq(owner_url), autocommit=True) as connection:
        connection.execute(f"GRANT UPDATE, DELETE ON synced_jobs TO {sync_role}")  # type: ignore[arg-type]
        connection.execute(f"REVOKE INSERT ON synced_jobs FROM {sync_role}")  # type: ignore[arg-type]
    db = Database(owner_url, pool_size=1)
    try:
        migrate.run(db.write_engine, ROLE_PLAN)
        migrate.run(db.write_engine, ROLE_PLAN)  # and again: idempotent
    finally:
        db.close()
    with psycopg.connect(_libpq(owner_url)) as connection:
        held = connection.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = %s AND table_name = 'synced_jobs' ORDER BY 1",
            (sync_role,),
        ).fetchall()
    assert [p for (p,) in held] == ["INSERT", "SELECT"]


def test_a_server_as_its_runtime_login_neither_migrates_nor_grants(owner_url: str) -> None:
    db = Database(runtime_url(owner_url), pool_size=1)
    try:
        assert roles.apply(db.write_engine, roles.RolePlan(prefix="ppos_test")) is False
        with pytest.raises(roles.RoleError, match="owner"):
            roles.apply(db.write_engine, ROLE_PLAN)
        with db.read_engine.connect() as connection:
            assert connection.execute(text("SELECT current_user")).scalar() == RUNTIME_ROLE
    finally:
        db.close()


def test_migrate_creates_the_logins_named_by_the_service_urls(
    postgres_databases: PostgresDatabases, tmp_path: Path
) -> None:
    """`ppos-control-plane migrate` with the services' URLs: one login per user,
    with the union of the services whose URL names it, and a login that cannot
    be least privilege (the owner itself) refused."""
    name = postgres_databases.create_empty()
    owner = postgres_databases.url_of(name)
    login = "ppos_test_cli_sync"
    sync_url = make_url(owner).set(username=login, password="sync-secret")
    try:
        result = run_cli(
            "migrate",
            "--db-role-prefix",
            "ppos_test",
            env={
                "PPOS_DATABASE_URL": owner,
                "PPOS_DATA_DIR": str(tmp_path),
                "PPOS_REGISTRYSYNC_DATABASE_URL": sync_url.render_as_string(hide_password=False),
            },
        )
        assert result.returncode == 0, result.stderr
        assert "sync-secret" not in result.stdout + result.stderr
        sync = sync_url.render_as_string(hide_password=False)
        assert attempt(sync, "SELECT count(*) FROM synced_jobs") is None
        assert "permission denied" in refused(sync, "SELECT count(*) FROM tenants")
        assert "permission denied" in refused(sync, "DELETE FROM synced_jobs")
        result = run_cli(
            "migrate",
            env={
                "PPOS_DATABASE_URL": owner,
                "PPOS_DATA_DIR": str(tmp_path),
                "PPOS_GOVERNANCE_DATABASE_URL": owner,
            },
        )
        assert result.returncode == 2
        assert "runs the migrations" in result.stderr
    finally:
        postgres_databases.drop(name)


async def test_governance_alone_serves_as_its_own_login(
    postgres_databases: PostgresDatabases,
    tmp_path: Path,
    canary_token: str,
    secret_registry: SecretRegistry,
) -> None:
    """The governance-only login's grants are enough for governance: it starts,
    reports serving (migrations read as applied) and writes, audit included."""
    name = postgres_databases.create()
    owner = postgres_databases.url_of(name)
    running = await start_plane(
        token=canary_token,
        database_url=runtime_url(owner, GOVERNANCE_ROLE),
        data_dir=tmp_path / "data",
        secrets=secret_registry,
        extra_env={"PPOS_SERVICES": "governance"},
    )
    try:
        health = health_pb2_grpc.HealthStub(running.channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = gov_grpc.GovernanceServiceStub(running.channel)
        created = await stub.CreatePartner(
            gov_pb.CreatePartnerRequest(
                partner_id="printer-a", display_name="A", region="eu-west-1"
            ),
            metadata=running.operator,
        )
        assert created.partner.partner_id == "printer-a"
        with psycopg.connect(_libpq(owner)) as connection:
            row = connection.execute(
                "SELECT count(*) FROM audit_log WHERE resource_id = 'printer-a'"
            ).fetchone()
        assert row is not None
        assert row[0] == 1
    finally:
        await stop_plane(running)
        postgres_databases.drop(name)
