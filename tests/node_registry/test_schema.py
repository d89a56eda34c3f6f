"""The node registry's models and migrations agree, on both backends, and the
migration chain goes down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from ppos.controlplane.storage import migrate
from ppos.controlplane.storage.models import load_all

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
