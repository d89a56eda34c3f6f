"""Registry sync: synced and quarantined rows are append-only.

`registrysync_0001` refused only an UPDATE of a synced row's key, payload,
digest and size and of a quarantined record's bytes; every other column
(governance_state, status, timestamps, sync_sequence, source_cursor...) could
be rewritten, and rows deleted. Nothing in the product updates or deletes
these rows, so this refuses every UPDATE and DELETE on both databases, and
TRUNCATE on PostgreSQL (SQLite has none: its DELETE fires the trigger).

Revision ID: registrysync_0002
Revises: registrysync_0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "registrysync_0002"
down_revision = "registrysync_0001"
branch_labels = None
depends_on = None

APPEND_ONLY_TABLES = ("synced_jobs", "sync_quarantine")
# What registrysync_0001 guarded (restored by the downgrade).
FIRST_GUARDED_COLUMNS = {
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
MESSAGE = "rows are append-only: synced diagnostic truth is never rewritten or deleted"

REFUSE_FUNCTION = f"""
CREATE FUNCTION ppos_sync_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% {MESSAGE} (%)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def _postgres() -> None:
    op.execute(REFUSE_FUNCTION)
    for table in APPEND_ONLY_TABLES:
        op.execute(f"DROP TRIGGER {table}_immutable ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ppos_sync_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ppos_sync_refuse_change()"
        )
    op.execute("DROP FUNCTION ppos_sync_refuse_rewrite()")


def _sqlite() -> None:
    for table in APPEND_ONLY_TABLES:
        op.execute(f"DROP TRIGGER {table}_immutable")
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} {MESSAGE} ({operation})'); END"
            )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgres()
    else:
        _sqlite()


def downgrade() -> None:
    """Back to registrysync_0001's guards (UPDATE of the key and payload columns only)."""
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(
            "CREATE FUNCTION ppos_sync_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% rows are immutable: synced payloads and digests are never "
            "rewritten', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; END $$;"
        )
    for table, columns in FIRST_GUARDED_COLUMNS.items():
        if postgres:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OF {', '.join(columns)} "
                f"ON {table} FOR EACH ROW EXECUTE FUNCTION ppos_sync_refuse_rewrite()"
            )
        else:
            op.execute(f"DROP TRIGGER {table}_no_update")
            op.execute(f"DROP TRIGGER {table}_no_delete")
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OF {', '.join(columns)} "
                f"ON {table} BEGIN SELECT RAISE(ABORT, '{table} rows are immutable: synced "
                "payloads and digests are never rewritten'); END"
            )
    if postgres:
        op.execute("DROP FUNCTION ppos_sync_refuse_change()")
