"""Audit entries carry the reason the caller gave for the change.

Entries written before hold an empty reason. Adding a column fires no
UPDATE trigger, so the table stays append-only.

Revision ID: governance_0002_audit_reason
Revises: governance_0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "governance_0002_audit_reason"
down_revision = "governance_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("reason", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("audit_log", "reason")
