"""Node registry: enrollments can be revoked, and are listed by region.

Revision ID: noderegistry_0004
Revises: noderegistry_0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.storage.base import UTCDateTime

revision = "noderegistry_0004"
down_revision = "noderegistry_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = "node_enrollments"
    op.add_column(table, sa.Column("revoked_at", UTCDateTime, nullable=True))
    op.add_column(table, sa.Column("revoked_by", sa.String(256), nullable=False, server_default=""))
    op.add_column(
        table, sa.Column("revoke_reason", sa.String(1024), nullable=False, server_default="")
    )
    op.create_index("ix_node_enrollments_region", table, ["region", "enrollment_id"])


def downgrade() -> None:
    op.drop_index("ix_node_enrollments_region", table_name="node_enrollments")
    with op.batch_alter_table("node_enrollments") as table:
        table.drop_column("revoke_reason")
        table.drop_column("revoked_by")
        table.drop_column("revoked_at")
