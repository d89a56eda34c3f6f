"""Registry sync: each chained row says which encoding its link uses (`chain_version`).

Rows chained from now on use v2, PostgreSQL's binary record format of their
columns, which the server computes itself when it verifies (see
services/registry_sync/chain.py). Rows already chained keep their v1 links:
they are covered by checkpoints signed over those links, which nothing here
could sign again. So the column's default is 1 (on both databases adding it
rewrites no row, and fires no trigger) and the sync writes 2 explicitly; a
chain then holds its v1 rows, then its v2 rows, each verified in its own
encoding, the first v2 link chained on the last v1 one.

The downgrade refuses while v2 rows exist: the older code would verify them as
v1 and report every one of them changed.

Revision ID: registrysync_0003
Revises: registrysync_0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "registrysync_0003"
down_revision = "registrysync_0002"
branch_labels = None
depends_on = None

TABLES = ("synced_jobs", "sync_quarantine")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table, sa.Column("chain_version", sa.SmallInteger, nullable=False, server_default="1")
        )


def downgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        newer = bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE chain_version <> 1"))
        if newer.scalar():
            raise RuntimeError(
                f"{table} holds rows chained with the v2 encoding; the code before "
                "registrysync_0003 cannot verify them (it would report each one changed)"
            )
    for table in TABLES:
        op.drop_column(table, "chain_version")
