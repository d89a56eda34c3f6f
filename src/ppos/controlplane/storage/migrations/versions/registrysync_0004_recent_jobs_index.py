"""Registry sync: an index for the jobs synced lately by governance state.

RegionSyncStatus.recent_jobs counts a region's jobs stored in the last window
by governance state; (region, synced_at, governance_state) answers it from the
index alone, one range per region, however many jobs the table holds.

Revision ID: registrysync_0004
Revises: registrysync_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "registrysync_0004"
down_revision = "registrysync_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_synced_jobs_region_synced_state",
        "synced_jobs",
        ["region", "synced_at", "governance_state"],
    )


def downgrade() -> None:
    op.drop_index("ix_synced_jobs_region_synced_state", table_name="synced_jobs")
