"""Registry sync: synced and quarantined rows are append-only and hash-chained.

`registrysync_0001` refused only an UPDATE of a synced row's key, payload,
digest and size and of a quarantined record's bytes; every other column
(governance_state, status, timestamps, sync_sequence, source_cursor...) could
be rewritten, and rows deleted. Nothing in the product updates or deletes
these rows, so this refuses every UPDATE and DELETE on both databases, and
TRUNCATE on PostgreSQL (SQLite has none: its DELETE fires the trigger).

Each row also gets its place in its region's hash chain (`chain_position`,
`chain`, `chain_checks`; see services/registry_sync/chain.py, whose field
lists are copied here as they were at this revision). Rows already stored are
chained here, in sync order, before the triggers close the tables.

Revision ID: registrysync_0002
Revises: registrysync_0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ppos.controlplane.core import hashchain
from ppos.controlplane.storage.base import BigIntPK, Bytes, UTCDateTime

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


CHAINS = {
    "synced_jobs": (
        "sync_sequence",
        b"ppos.registrysync.synced_jobs.v1",
        (
            ("chain_position", sa.BigInteger),
            ("sync_sequence", BigIntPK),
            ("region", sa.String),
            ("job_id", sa.String),
            ("revision", sa.BigInteger),
            ("tenant_id", sa.String),
            ("queue_id", sa.String),
            ("status", sa.String),
            ("governance_state", sa.String),
            ("node_id", sa.String),
            ("container_image", sa.String),
            ("create_time_ns", sa.BigInteger),
            ("update_time_ns", sa.BigInteger),
            ("canonical_payload_sha256", Bytes),
            ("payload_size", sa.BigInteger),
            ("source_cursor", sa.Text),
            ("sweep_id", sa.String),
            ("synced_at", UTCDateTime),
        ),
    ),
    "sync_quarantine": (
        "quarantine_id",
        b"ppos.registrysync.sync_quarantine.v1",
        (
            ("chain_position", sa.BigInteger),
            ("quarantine_id", BigIntPK),
            ("region", sa.String),
            ("job_id", sa.String),
            ("revision", sa.BigInteger),
            ("reason", sa.String),
            ("detail", sa.Text),
            ("raw_record_sha256", Bytes),
            ("source_cursor", sa.Text),
            ("sweep_id", sa.String),
            ("quarantined_at", UTCDateTime),
        ),
    ),
}


def _chain_stored_rows(name: str) -> None:
    id_column, domain, fields = CHAINS[name]
    table = sa.table(
        name,
        *(sa.column(f, t) for f, t in fields if f != "chain_position"),
        sa.column("chain_position", sa.BigInteger),
        sa.column("chain", Bytes),
        sa.column("chain_checks", Bytes),
    )
    bind = op.get_bind()
    tips: dict[str, tuple[int, bytes]] = {}
    rows = bind.execute(sa.select(table).order_by(table.c[id_column])).mappings().all()
    for row in rows:
        position, previous = tips.get(row["region"], (0, hashchain.GENESIS))
        values = [position + 1 if f == "chain_position" else row[f] for f, _ in fields]
        link = hashchain.link(previous, domain, values)
        tips[row["region"]] = (position + 1, link)
        bind.execute(
            table.update()
            .where(table.c[id_column] == row[id_column])
            .values(
                chain_position=position + 1,
                chain=link,
                chain_checks=hashchain.field_checks(values),
            )
        )


def upgrade() -> None:
    for table in APPEND_ONLY_TABLES:
        op.add_column(table, sa.Column("chain_position", sa.BigInteger, nullable=True))
        op.add_column(table, sa.Column("chain", Bytes, nullable=True))
        op.add_column(table, sa.Column("chain_checks", Bytes, nullable=True))
        _chain_stored_rows(table)
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
    for table in APPEND_ONLY_TABLES:
        for column in ("chain_checks", "chain", "chain_position"):
            op.drop_column(table, column)
