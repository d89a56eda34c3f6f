"""Partner holds: the queues routed to a partner a gateway cannot reach show HELD.

Revision ID: governance_0004_partner_holds
Revises: governance_0003_backfills_holds
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.storage.base import UTCDateTime

revision = "governance_0004_partner_holds"
down_revision = "governance_0003_backfills_holds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "governance_partner_holds",
        sa.Column("partner_id", sa.String(63), primary_key=True),
        sa.Column("since", UTCDateTime, nullable=False),
        sa.Column("last_error", sa.String(2000), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("governance_partner_holds")
