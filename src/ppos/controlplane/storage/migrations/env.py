"""Alembic environment: uses the engine handed over by storage.migrate."""

from __future__ import annotations

from alembic import context

from ppos.controlplane.storage.models import load_all

target_metadata = load_all()
engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
