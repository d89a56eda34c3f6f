"""Alembic environment: uses the engine handed over by storage.migrate.

Upgrades need no tables, only the naming convention (Alembic names the
constraints the revisions create after the target MetaData's convention, so it
must be the models' own). A caller comparing or autogenerating hands the whole
schema in as `config.attributes["metadata"]` (runtime.schema.load_all), so
storage never imports the services above it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData

from ppos.controlplane.storage.base import NAMING_CONVENTION

target_metadata = context.config.attributes.get("metadata") or MetaData(
    naming_convention=NAMING_CONVENTION
)
engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
