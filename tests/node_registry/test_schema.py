"""The node registry's models and migrations agree, on both backends, and the
migration chain goes down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from ppos.controlplane.runtime.schema import load_all
from ppos.controlplane.services.node_registry.changelog import EVENT_ID_SEQUENCE
from ppos.controlplane.storage import migrate

CHANGED_BY_SWEEPS_AND_HEARTBEATS = {
    "readiness",
    "readiness_reason",
    "last_transition_at",
    "last_heartbeat_at",
    "updated_at",
    "resource_version",
}
OUR_TABLES = {"nodes", "node_enrollments", "node_events", "node_event_log", "node_commands"}


def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diffs = compare_metadata(context, load_all())
    finally:
        engine.dispose()

    def table_of(diff: object) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff
        for part in item[1:] if isinstance(item, tuple) else ():
            name = getattr(part, "name", None)
            table = getattr(part, "table", None)
            if table is not None and getattr(table, "name", None) in OUR_TABLES:
                return str(table.name)
            if name in OUR_TABLES:
                return str(name)
            if isinstance(part, str) and part in OUR_TABLES:
                return part
        return None

    return [d for d in diffs if table_of(d) is not None]


def test_models_and_migrations_agree(database_url: str) -> None:
    assert _differences(database_url) == []


def test_noderegistry_0002_downgrades_and_upgrades(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        config = migrate.alembic_config(engine)
        command.downgrade(config, "noderegistry_0001")
        command.upgrade(config, "heads")
        assert migrate.pending(engine) == set()
    finally:
        engine.dispose()
    assert _differences(database_url) == []


def test_nodes_take_updates_in_place_and_versions_come_from_the_named_sequence(
    database_url: str,
) -> None:
    """What makes a fleet-wide sweep cheap holds in the migrated schema: no index
    covers a column that heartbeats or sweeps change; on PostgreSQL the table
    leaves room on each page for HOT updates, and EVENT_ID_SEQUENCE names the
    sequence behind node_events.event_id."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            indexed = {
                column
                for index in inspect(connection).get_indexes("nodes")
                for column in index["column_names"]
            }
            assert indexed.isdisjoint(CHANGED_BY_SWEEPS_AND_HEARTBEATS)
            if connection.dialect.name != "postgresql":
                return
            options = connection.scalar(
                text("SELECT reloptions FROM pg_class WHERE relname = 'nodes'")
            )
            assert "fillfactor=50" in options
            named = connection.scalar(text(f"SELECT {EVENT_ID_SEQUENCE}::text"))
            serial = connection.scalar(
                text("SELECT pg_get_serial_sequence('node_events', 'event_id')")
            )
            assert serial in {named, f"public.{named}"}
    finally:
        engine.dispose()


def test_noderegistry_0003_downgrades_and_upgrades(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        config = migrate.alembic_config(engine)
        command.downgrade(config, "noderegistry_0002")
        with engine.connect() as connection:
            names = {index["name"] for index in inspect(connection).get_indexes("nodes")}
        assert "ix_nodes_region_readiness" in names
        command.upgrade(config, "heads")
        assert migrate.pending(engine) == set()
    finally:
        engine.dispose()
    assert _differences(database_url) == []
