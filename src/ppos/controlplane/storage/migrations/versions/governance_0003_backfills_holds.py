"""Policy backfills (a policy enabled or changed evaluates jobs synced before) and
gateway holds (queues of an unreachable gateway show HELD).

Revision ID: governance_0003_backfills_holds
Revises: governance_0002_audit_reason
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.storage.base import UTCDateTime

revision = "governance_0003_backfills_holds"
down_revision = "governance_0002_audit_reason"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "governance_policy_backfills",
        sa.Column("policy_id", sa.String(63), primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("after_sequence", sa.BigInteger, nullable=False),
        sa.Column("up_to_sequence", sa.BigInteger, nullable=False),
        sa.Column("evaluated", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "governance_gateway_holds",
        sa.Column("region", sa.String(64), primary_key=True),
        sa.Column("since", UTCDateTime, nullable=False),
        sa.Column("last_error", sa.String(2000), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("governance_gateway_holds")
    op.drop_table("governance_policy_backfills")
