"""Node registry: nodes and one-time enrollments.

Revision ID: noderegistry_0001
Revises: 0001_foundation
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.storage.base import UTCDateTime

revision = "noderegistry_0001"
down_revision = "0001_foundation"
branch_labels = ("noderegistry",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("cluster", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(256), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("capacity_slots", sa.Integer, nullable=False),
        sa.Column("slots_in_use", sa.Integer, nullable=False),
        sa.Column("schedulable", sa.Boolean, nullable=False),
        sa.Column("unschedulable_reason", sa.String(1024), nullable=False),
        sa.Column("drain_deadline", UTCDateTime, nullable=True),
        sa.Column("readiness", sa.String(16), nullable=False),
        sa.Column("readiness_reason", sa.String(256), nullable=False),
        sa.Column("last_transition_at", UTCDateTime, nullable=False),
        sa.Column("last_heartbeat_at", UTCDateTime, nullable=True),
        sa.Column("container_image", sa.String(512), nullable=False),
        sa.Column("container_digest", sa.String(80), nullable=False),
        sa.Column("registered", sa.Boolean, nullable=False),
        sa.Column("credential_generation", sa.Integer, nullable=False),
        sa.Column("resource_version", sa.BigInteger, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("capacity_slots >= 0", name="capacity_not_negative"),
    )
    op.create_index("ix_nodes_region_readiness", "nodes", ["region", "readiness"])
    op.create_index("ix_nodes_readiness_heartbeat", "nodes", ["readiness", "last_heartbeat_at"])
    op.create_index("ix_nodes_container_image", "nodes", ["container_image"])
    op.create_table(
        "node_enrollments",
        sa.Column("enrollment_id", sa.String(64), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("request_id", sa.String(128), nullable=True, unique=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("cluster", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("redeemed_at", UTCDateTime, nullable=True),
        sa.Column("node_id", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("node_enrollments")
    op.drop_table("nodes")
