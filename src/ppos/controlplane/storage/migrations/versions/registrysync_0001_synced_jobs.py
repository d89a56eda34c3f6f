"""Registry sync: synced job revisions, region cursors, quarantine, sweeps.

On PostgreSQL the payload columns use lz4 (COPY of 4 KB payload rows ran
about twice as fast as with the default pglz here; see docs/registry-sync.md)
and a trigger refuses any UPDATE of a synced revision's key, payload or
digest, or of a quarantined record's bytes. SQLite gets the same refusal.

Revision ID: registrysync_0001
Revises: 0001_foundation
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.storage.base import BigIntPK, Bytes, UTCDateTime

revision = "registrysync_0001"
down_revision = "0001_foundation"
branch_labels = ("registrysync",)
depends_on = None

IMMUTABLE_COLUMNS = {
    "synced_jobs": (
        "region",
        "job_id",
        "revision",
        "canonical_payload",
        "canonical_payload_sha256",
        "payload_size",
    ),
    "sync_quarantine": ("raw_record", "raw_record_sha256", "reason"),
}
COMPRESSED_COLUMNS = (("synced_jobs", "canonical_payload"), ("sync_quarantine", "raw_record"))

REFUSE_FUNCTION = """
CREATE FUNCTION ppos_sync_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% rows are immutable: synced payloads and digests are never rewritten',
    TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def _create_tables() -> None:
    # Long by nature: a schema declared table by table, in one revision.
    op.create_table(
        "synced_jobs",
        sa.Column("sync_sequence", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("queue_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("governance_state", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("container_image", sa.String(512), nullable=False),
        sa.Column("create_time_ns", sa.BigInteger, nullable=True),
        sa.Column("update_time_ns", sa.BigInteger, nullable=True),
        sa.Column("canonical_payload", Bytes, nullable=False),
        sa.Column("canonical_payload_sha256", Bytes, nullable=False),
        sa.Column("payload_size", sa.BigInteger, nullable=False),
        sa.Column("source_cursor", sa.Text, nullable=False),
        sa.Column("sweep_id", sa.String(64), nullable=False),
        sa.Column("synced_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("region", "job_id", "revision", name="uq_synced_jobs_revision"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_synced_jobs_job_id", "synced_jobs", ["job_id"])
    op.create_index(
        "ix_synced_jobs_governance_state", "synced_jobs", ["governance_state", "sync_sequence"]
    )
    op.create_index("ix_synced_jobs_region_sequence", "synced_jobs", ["region", "sync_sequence"])
    op.create_table(
        "sync_regions",
        sa.Column("region", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.Text, nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("head_cursor", sa.Text, nullable=False),
        sa.Column("lag_changes", sa.BigInteger, nullable=False),
        sa.Column("newest_change_ns", sa.BigInteger, nullable=True),
        sa.Column("last_attempt_at", UTCDateTime, nullable=True),
        sa.Column("last_success_at", UTCDateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("records_synced", sa.BigInteger, nullable=False),
        sa.Column("bytes_synced", sa.BigInteger, nullable=False),
        sa.Column("duplicates_skipped", sa.BigInteger, nullable=False),
        sa.Column("quarantined_count", sa.BigInteger, nullable=False),
        sa.Column("pages_committed", sa.BigInteger, nullable=False),
        sa.Column("active_sweep_id", sa.String(64), nullable=True),
        sa.Column("status_version", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "sync_quarantine",
        sa.Column("quarantine_id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("raw_record", Bytes, nullable=False),
        sa.Column("raw_record_sha256", Bytes, nullable=False),
        sa.Column("source_cursor", sa.Text, nullable=False),
        sa.Column("sweep_id", sa.String(64), nullable=False),
        sa.Column("quarantined_at", UTCDateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_sync_quarantine_region", "sync_quarantine", ["region", "quarantine_id"])
    op.create_table(
        "sync_sweeps",
        sa.Column("sweep_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=True, unique=True),
        sa.Column("regions", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_by", sa.String(256), nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("ended_at", UTCDateTime, nullable=True),
        sa.Column("resumed", sa.Integer, nullable=False),
    )
    op.create_index("ix_sync_sweeps_state_created", "sync_sweeps", ["state", "created_at"])
    op.create_table(
        "sync_sweep_regions",
        sa.Column(
            "sweep_id",
            sa.String(64),
            sa.ForeignKey("sync_sweeps.sweep_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("region", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("records_synced", sa.BigInteger, nullable=False),
        sa.Column("bytes_synced", sa.BigInteger, nullable=False),
        sa.Column("quarantined", sa.BigInteger, nullable=False),
        sa.Column("duplicates_skipped", sa.BigInteger, nullable=False),
        sa.Column("pages", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
    )


def _postgres_guards() -> None:
    for table, column in COMPRESSED_COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")
    op.execute(REFUSE_FUNCTION)
    for table, columns in IMMUTABLE_COLUMNS.items():
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OF {', '.join(columns)} "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION ppos_sync_refuse_rewrite()"
        )


def _sqlite_guards() -> None:
    for table, columns in IMMUTABLE_COLUMNS.items():
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OF {', '.join(columns)} "
            f"ON {table} BEGIN SELECT RAISE(ABORT, '{table} rows are immutable: synced "
            "payloads and digests are never rewritten'); END"
        )


def upgrade() -> None:
    _create_tables()
    if op.get_bind().dialect.name == "postgresql":
        _postgres_guards()
    else:
        _sqlite_guards()


def downgrade() -> None:
    for table in ("sync_sweep_regions", "sync_sweeps", "sync_quarantine", "sync_regions"):
        op.drop_table(table)
    op.drop_table("synced_jobs")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ppos_sync_refuse_rewrite()")
