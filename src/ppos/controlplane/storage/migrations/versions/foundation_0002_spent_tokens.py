"""The ledger of PREFLIGHT_JWTs spent on mutating calls (see storage/token_ledger.py).

Revision ID: foundation_0002
Revises: 0001_foundation
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "foundation_0002"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spent_preflight_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_spent_preflight_tokens")),
    )
    op.create_index(
        op.f("ix_spent_preflight_tokens_expires_at"),
        "spent_preflight_tokens",
        ["expires_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_spent_preflight_tokens_expires_at"), "spent_preflight_tokens")
    op.drop_table("spent_preflight_tokens")
