"""Named operators: name, role and the SHA-256 of their credential (see storage/operators.py).

Revision ID: foundation_0004_operators
Revises: foundation_0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.storage.base import UTCDateTime

revision = "foundation_0004_operators"
down_revision = "foundation_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("credential_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("credential_issued_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_operators")),
        sa.UniqueConstraint("credential_sha256", name=op.f("uq_operators_credential_sha256")),
    )


def downgrade() -> None:
    op.drop_table("operators")
