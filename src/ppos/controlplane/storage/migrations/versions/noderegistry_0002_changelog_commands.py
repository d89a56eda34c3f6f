"""Node registry: the node change log (global resource versions), node commands.

- `node_events`: one row per node change; its id is the registry's resource
  version and it carries the node as of that version. Existing nodes get one
  `Migrated` event each so their versions come from the same sequence.
- `node_event_log`: how far the change log has been pruned.
- `node_commands`: re-image commands and their lifecycle.
- `nodes.schedulable_transition_at`; the (readiness, last_heartbeat_at) index is
  dropped so a heartbeat that only refreshes its timestamp is a HOT update on
  PostgreSQL (with fillfactor 90); sweeps scan the table instead.

Revision ID: noderegistry_0002
Revises: noderegistry_0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.storage.base import BigIntPK, Bytes, UTCDateTime

revision = "noderegistry_0002"
down_revision = "noderegistry_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Long by nature: a schema declared table by table, in one revision.
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("nodes", sa.Column("schedulable_transition_at", UTCDateTime, nullable=True))
    op.drop_index("ix_nodes_readiness_heartbeat", table_name="nodes")
    if postgres:
        op.execute("ALTER TABLE nodes SET (fillfactor = 90)")
    op.create_table(
        "node_events",
        sa.Column("event_id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("previous_readiness", sa.String(16), nullable=False),
        sa.Column("readiness", sa.String(16), nullable=False),
        sa.Column("payload", Bytes, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_node_events_created_at", "node_events", ["created_at"])
    op.create_table(
        "node_event_log",
        sa.Column("log_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("pruned_through", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO node_event_log (log_id, pruned_through) VALUES (1, 0)")
    op.create_table(
        "node_commands",
        sa.Column("command_id", sa.String(64), primary_key=True),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target_image", sa.String(512), nullable=False),
        sa.Column("target_digest", sa.String(80), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("issued_by_kind", sa.String(32), nullable=False),
        sa.Column("issued_by_name", sa.String(256), nullable=False),
        sa.Column("acting_for", sa.String(256), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True, unique=True),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("timeout_seconds", sa.Integer, nullable=False),
        sa.Column("deadline", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime, nullable=True),
        sa.Column("acknowledged_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("delivery_count", sa.Integer, nullable=False),
        sa.Column("result_message", sa.String(1024), nullable=False),
        sa.Column("resource_version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_node_commands_node_state", "node_commands", ["node_id", "state"])
    op.create_index("ix_node_commands_state_deadline", "node_commands", ["state", "deadline"])
    # Existing nodes: one baseline event each, and their version from it.
    op.execute(
        "INSERT INTO node_events (node_id, created_at, reason, previous_readiness, readiness) "
        "SELECT node_id, updated_at, 'Migrated', readiness, readiness FROM nodes ORDER BY node_id"
    )
    op.execute(
        "UPDATE nodes SET resource_version = (SELECT max(e.event_id) FROM node_events e "
        "WHERE e.node_id = nodes.node_id) "
        "WHERE EXISTS (SELECT 1 FROM node_events e WHERE e.node_id = nodes.node_id)"
    )


def downgrade() -> None:
    op.drop_index("ix_node_commands_state_deadline", table_name="node_commands")
    op.drop_index("ix_node_commands_node_state", table_name="node_commands")
    op.drop_table("node_commands")
    op.drop_table("node_event_log")
    op.drop_index("ix_node_events_created_at", table_name="node_events")
    op.drop_table("node_events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE nodes RESET (fillfactor)")
    op.create_index("ix_nodes_readiness_heartbeat", "nodes", ["readiness", "last_heartbeat_at"])
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("schedulable_transition_at")
