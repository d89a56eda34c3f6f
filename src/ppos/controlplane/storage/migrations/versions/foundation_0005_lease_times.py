"""Leader leases: when the lead was taken and last renewed, for how long, so the API can report
each loop's lead as a Kubernetes coordination Lease (registry_sync/leader.py).

Revision ID: foundation_0005_lease_times
Revises: foundation_0004_operators
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "foundation_0005_lease_times"
down_revision = "foundation_0004_operators"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leader_leases", sa.Column("acquired_at", sa.DateTime(timezone=True)))
    op.add_column("leader_leases", sa.Column("renewed_at", sa.DateTime(timezone=True)))
    op.add_column("leader_leases", sa.Column("lease_seconds", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("leader_leases") as batch:
        batch.drop_column("lease_seconds")
        batch.drop_column("renewed_at")
        batch.drop_column("acquired_at")
