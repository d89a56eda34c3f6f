"""Governance: tenants, queues, partners, routes, policies, decisions, outbox, admin jobs.

Revision ID: governance_0001
Revises: 0001_foundation
Create Date: 2026-11-29
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.storage.base import Bytes, UTCDateTime

revision = "governance_0001"
down_revision = "0001_foundation"
branch_labels = ("governance",)
depends_on = None


def _versioned() -> list[sa.Column[object]]:
    return [
        sa.Column("resource_version", sa.BigInteger, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    ]


def upgrade() -> None:
    # Long by nature: a schema declared table by table, in one revision.
    op.create_table(
        "partners",
        sa.Column("partner_id", sa.String(63), primary_key=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("accepts_review", sa.Boolean, nullable=False),
        *_versioned(),
    )
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("default_region", sa.String(64), nullable=False),
        sa.Column(
            "default_partner_id",
            sa.String(63),
            sa.ForeignKey("partners.partner_id"),
            nullable=True,
        ),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        *_versioned(),
    )
    op.create_index("ix_tenants_phase", "tenants", ["phase"])
    op.create_table(
        "queues",
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
        sa.Column("queue_id", sa.String(63), primary_key=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("applied_capacity", sa.Integer, nullable=False),
        sa.Column("applied_state", sa.String(16), nullable=False),
        sa.Column("applied_generation", sa.BigInteger, nullable=False),
        sa.Column("applied_at", UTCDateTime, nullable=True),
        *_versioned(),
        sa.CheckConstraint("capacity BETWEEN 1 AND 100000", name="capacity_range"),
    )
    op.create_index("ix_queues_region_state", "queues", ["region", "state"])
    op.create_table(
        "partner_routes",
        sa.Column("route_id", sa.String(63), primary_key=True),
        sa.Column("tenant_id", sa.String(63), sa.ForeignKey("tenants.tenant_id"), nullable=False),
        sa.Column("queue_id", sa.String(63), nullable=False),
        sa.Column(
            "partner_id", sa.String(63), sa.ForeignKey("partners.partner_id"), nullable=False
        ),
        sa.Column(
            "fallback_partner_id",
            sa.String(63),
            sa.ForeignKey("partners.partner_id"),
            nullable=True,
        ),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("condition_states", sa.JSON, nullable=False),
        sa.Column("condition_source_region", sa.String(64), nullable=False),
        sa.Column("applied_generation", sa.BigInteger, nullable=False),
        *_versioned(),
    )
    op.create_index("ix_partner_routes_tenant", "partner_routes", ["tenant_id", "queue_id"])
    op.create_index("ix_partner_routes_partner", "partner_routes", ["partner_id"])
    op.create_table(
        "governance_policies",
        sa.Column("policy_id", sa.String(63), primary_key=True),
        sa.Column("tenant_scope", sa.String(63), nullable=False),
        sa.Column("trigger_state", sa.String(40), nullable=False),
        sa.Column("actions", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("node_failure_threshold", sa.Integer, nullable=False),
        sa.Column("node_failure_window_seconds", sa.Integer, nullable=False),
        *_versioned(),
        sa.UniqueConstraint("tenant_scope", "trigger_state", name="uq_governance_policies_scope"),
    )
    op.create_table(
        "governance_decisions",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("policy_id", sa.String(63), nullable=False),
        sa.Column("policy_generation", sa.BigInteger, nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("queue_id", sa.String(128), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("governance_state", sa.String(40), nullable=False),
        sa.Column("payload_sha256", Bytes, nullable=False),
        sa.Column("sync_sequence", sa.BigInteger, nullable=False),
        sa.Column("record_time", UTCDateTime, nullable=False),
        sa.Column("node_action", sa.String(16), nullable=False),
        sa.Column("actions", sa.JSON, nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint(
            "region", "job_id", "revision", "policy_id", name="uq_governance_decisions_job"
        ),
    )
    op.create_index(
        "ix_governance_decisions_node",
        "governance_decisions",
        ["region", "node_id", "record_time"],
    )
    op.create_index("ix_governance_decisions_created", "governance_decisions", ["created_at"])
    op.create_table(
        "outbox_commands",
        sa.Column("command_id", sa.String(64), primary_key=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("target", sa.String(80), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("request_payload", Bytes, nullable=False),
        sa.Column("request_json", sa.Text, nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column(
            "decision_id",
            sa.String(64),
            sa.ForeignKey("governance_decisions.decision_id"),
            nullable=True,
        ),
        sa.Column("issued_by_kind", sa.String(32), nullable=False),
        sa.Column("issued_by_name", sa.String(256), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime, nullable=True),
        sa.Column("receiver_command_id", sa.String(128), nullable=False),
        sa.Column("receiver_duplicate", sa.Boolean, nullable=False),
        sa.Column("acknowledged_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_outbox_commands_due", "outbox_commands", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_commands_decision", "outbox_commands", ["decision_id"])
    op.create_index("ix_outbox_commands_created", "outbox_commands", ["created_at"])
    op.create_table(
        "admin_jobs",
        sa.Column("admin_job_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress_done", sa.BigInteger, nullable=False),
        sa.Column("progress_total", sa.BigInteger, nullable=False),
        sa.Column("progress_message", sa.Text, nullable=False),
        sa.Column("checkpoint", sa.Text, nullable=False),
        sa.Column("result_json", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("cancel_reason", sa.String(1024), nullable=False),
        sa.Column("started_by_kind", sa.String(32), nullable=False),
        sa.Column("started_by_name", sa.String(256), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime, nullable=True),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("resource_version", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_admin_jobs_state", "admin_jobs", ["state"])
    op.create_index("ix_admin_jobs_created", "admin_jobs", ["created_at"])
    op.create_table(
        "governance_requests",
        sa.Column("method", sa.String(128), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(200), nullable=False),
        sa.Column("response", Bytes, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "governance_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "governance_reconciler_cursor",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("last_sync_sequence", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    # The reconciler's position and its leader lease exist from the start, so
    # running replicas only ever update them (no table changes size at runtime
    # unless something was decided or commanded).
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    op.bulk_insert(
        sa.table(
            "governance_reconciler_cursor",
            sa.column("name", sa.String),
            sa.column("last_sync_sequence", sa.BigInteger),
            sa.column("updated_at", UTCDateTime),
        ),
        [{"name": "synced-jobs", "last_sync_sequence": 0, "updated_at": epoch}],
    )
    op.bulk_insert(
        sa.table(
            "governance_leases",
            sa.column("name", sa.String),
            sa.column("holder", sa.String),
            sa.column("expires_at", UTCDateTime),
        ),
        [{"name": "governance-reconciler", "holder": "", "expires_at": epoch}],
    )
    # Decisions are a record of what was decided and why: never rewritten.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER governance_decisions_append_only BEFORE UPDATE OR DELETE "
            "ON governance_decisions FOR EACH ROW EXECUTE FUNCTION ppos_refuse_change()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER governance_decisions_no_{action.lower()} BEFORE {action} "
                "ON governance_decisions "
                "BEGIN SELECT RAISE(ABORT, 'governance_decisions is append-only'); END"
            )


def downgrade() -> None:
    for table in (
        "governance_reconciler_cursor",
        "governance_leases",
        "governance_requests",
        "admin_jobs",
        "outbox_commands",
        "governance_decisions",
        "governance_policies",
        "partner_routes",
        "queues",
        "tenants",
        "partners",
    ):
        op.drop_table(table)
