"""Alembic, driven from code: upgrade every branch head, report what is pending.

Each service owns a branch of the migration graph (labels `noderegistry`,
`registrysync`, `governance`) rooted at the shared foundation revision, so
services evolve their tables independently; `upgrade heads` applies them all.
On PostgreSQL `run` then sets up the services' roles and re-applies their
grants (storage/roles.py), so a new table is covered by the run that adds it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from ppos.controlplane.storage import roles

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    command.upgrade(alembic_config(engine), "heads")


@cache
def _heads() -> frozenset[str]:
    """The head revisions of the migrations shipped with this code, read once:
    loading the scripts executes each of them (the health probe asks every few
    seconds)."""
    script = ScriptDirectory(str(MIGRATIONS))
    return frozenset(script.get_heads())


def run(engine: Engine, plan: roles.RolePlan | None = None) -> None:
    """What `ppos-control-plane migrate` does: every migration, then the roles."""
    upgrade(engine)
    roles.apply(engine, plan or roles.RolePlan())


def pending(engine: Engine) -> set[str]:
    """Head revisions not yet applied (empty when the schema is current)."""
    with engine.connect() as connection:
        applied = set(MigrationContext.configure(connection).get_current_heads())
    return set(_heads()) - applied
